"""The homeserver's media repository fails only the bot's downloads (a relay answers 502 to
`/download/`, everything else works): a file the owner sends meanwhile is neither refused nor
lost; it waits, is fetched once the repository mends, becomes one task, and what the owner
sent right after it runs after it. Synapse, a strict js client, the bot process behind a
relay that fails that one path."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import BotSetup, Homeserver
from fake_messages_api import FakeMessagesAPI
from harness import http
from harness.bot import BotProcess
from harness.http_relay import FailingPathRelay
from harness.jsclient import JsClient
from nio.crypto.attachments import encrypt_attachment
from test_ops_e2e import answers_to, join, last_user_text

from dispatch_matrix.matrix.fetching import RETRY_WAITS_S

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]
DATA = b"col_a,col_b\n1,2\n" * 40
# Failed downloads before the relay lets them through: the one on arrival. The schedule of
# later tries (5, 10, 20, 30 s) and failed retries are the unit tests' (test_file_waits_unit);
# here each failure would cost its wait in real seconds.
FAILURES = 1


async def behind_media_relay(
    homeserver: Homeserver,
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    running: list[BotProcess],
) -> tuple[FailingPathRelay, BotSetup, BotProcess, JsClient, str, dict[str, Any]]:
    """A bot that reaches Synapse through a relay able to fail its media downloads, its
    owner's strict client, their DM, and the content of a file message ready to send (the
    file uploaded encrypted, as a phone sends one, straight to Synapse)."""
    synapse = homeserver.synapse
    relay = await FailingPathRelay(synapse.host, synapse.port, "/download/").start()
    setup = make_bot()
    setup.config.homeserver = relay.url
    setup.config.write()
    bot, owner, room = await join(setup, owner_client, running)
    ciphertext, keys = encrypt_attachment(DATA)
    token = http.login(homeserver.url, setup.owner.user_id, setup.owner.password)
    mxc = http.upload(homeserver.url, token, ciphertext, "figures.csv")
    content = {
        "msgtype": "m.file",
        "body": "sum the columns",
        "filename": "figures.csv",
        "info": {"mimetype": "text/csv", "size": len(DATA)},
        "file": {"url": mxc, **{k: keys[k] for k in ("key", "iv", "hashes")}, "v": "v2"},
    }
    return relay, setup, bot, owner, room, content


async def send_file(owner: JsClient, room: str, content: dict[str, Any]) -> str:
    sent = await owner.call("send_event", room_id=room, type="m.room.message", content=content)
    return str(sent["event_id"])


def inbox_files(setup: BotSetup) -> list[Path]:
    inbox = setup.config.folder / "work" / "inbox"
    return [path for path in inbox.rglob("*") if path.is_file()]


async def test_a_file_sent_while_its_download_fails_is_taken_once_before_the_next_message(
    homeserver: Homeserver,
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    began = time.monotonic()
    relay, setup, bot, owner, room, content = await behind_media_relay(
        homeserver, make_bot, owner_client, running
    )
    bot_id = setup.bot.user_id
    fake_api.reply("The columns sum to 40 and 80.")
    fake_api.reply("Done after the file.")
    relay.failing = True
    try:
        file_id = await send_file(owner, room, content)
        after = await owner.send_text(room, "and then say done")
        [waiting] = await bot.wait_log("attachment.waiting", timeout=60)
        assert waiting["event_id"] == file_id and "502" in waiting["error"], waiting
        await relay.wait_seen(FAILURES, failed=True, timeout=60)
        behind = await bot.wait_log("message.unjudged", timeout=30)
        assert behind[0]["event_id"] == after and behind[0]["why"] == "behind"
        assert not bot.log_events("task.queued") and fake_api.requests == [], "none taken"
        assert not bot.log_events("attachment.refused")
    finally:
        relay.failing = False
    healed = time.monotonic()
    [received] = await bot.wait_log("attachment.received", timeout=60)
    fetched_s = time.monotonic() - healed
    await owner.wait_message(room, sender=bot_id, contains="sum to 40", timeout=60)
    await owner.wait_message(room, sender=bot_id, contains="Done after the file", timeout=60)
    print(
        f"{FAILURES} failed downloads; the file was fetched {fetched_s:.1f}s after the relay"
        f" let it through (tries {RETRY_WAITS_S} s apart); the test took"
        f" {time.monotonic() - began:.1f}s"
    )
    # At most the longest wait between tries, plus a sync (5 s while something waits) and
    # the bot's log reaching the file.
    assert fetched_s < max(RETRY_WAITS_S) + 10
    queued = [r["event_id"] for r in bot.log_events("task.queued")]
    assert queued == [file_id, after], "one task for the file, then the message after it"
    asked = [last_user_text(request) for request in fake_api.requests]
    assert len(asked) == 2 and "sum the columns" in asked[0] and "say done" in asked[1]
    saved = inbox_files(setup)
    assert [str(path) for path in saved] == [received["path"]], saved
    assert saved[0].read_bytes() == DATA
    assert relay.passed() == 1, "fetched once, when it could be"
    messages = await owner.messages(room)
    assert not [m for m in messages if "could not take" in str(m["content"].get("body"))]
    assert len(answers_to(messages, bot_id, file_id)) == 1
    await relay.cut()


async def test_a_file_waiting_for_its_download_survives_a_kill_and_is_taken_once_after(
    homeserver: Homeserver,
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    relay, setup, bot, owner, room, content = await behind_media_relay(
        homeserver, make_bot, owner_client, running
    )
    bot_id = setup.bot.user_id
    fake_api.reply("The columns sum to 40 and 80.")
    fake_api.reply("Done after the file.")
    relay.failing = True
    try:
        file_id = await send_file(owner, room, content)
        after = await owner.send_text(room, "and then say done")
        await bot.wait_log("attachment.waiting", timeout=60)
        await bot.wait_log("message.unjudged", timeout=30, where=lambda r: r["event_id"] == after)
        await bot.kill9()
        # The log file is the state folder's: the next run writes on after these.
        failed = len(bot.log_events("attachment.fetch_failed"))
        again = await setup.process().start()
        running.append(again)
        # The new run tries at once (its first sync), and the relay still fails it.
        await again.wait_log("attachment.fetch_failed", count=failed + 1, timeout=60)
        assert not again.log_events("task.queued") and fake_api.requests == []
    finally:
        relay.failing = False
    await owner.wait_message(room, sender=bot_id, contains="sum to 40", timeout=60)
    await owner.wait_message(room, sender=bot_id, contains="Done after the file", timeout=60)
    queued = [r["event_id"] for r in again.log_events("task.queued")]
    assert queued == [file_id, after], "one task for the file, then the message after it"
    assert len(fake_api.requests) == 2
    [saved] = inbox_files(setup)
    assert saved.read_bytes() == DATA and relay.passed() == 1
    await relay.cut()
