"""The phone knows when the computer is asleep or gone, through Synapse (delayed events on)
and the owner's strict client: while the bot runs nothing is posted; killed with -9, the
homeserver posts the encrypted asleep notice by itself within the delay, and the owner
decrypts it; after a restart one "back" notice comes and the asleep one is redacted; a
clean stop says "stopped" and no asleep notice follows."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest
from conftest import BotSetup
from harness.bot import BotProcess
from harness.jsclient import JsClient, JsClientError

# Sleep and crash drills: the computer stopped (kill -9, SIGSTOP) past the delay.
pytestmark = [pytest.mark.e2e, pytest.mark.drill]

StartClient = Callable[..., Awaitable[JsClient]]

DELAY_S = 8
ASLEEP = "has been quiet for"


async def until(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.2)


def _call(method: str, url: str, body: dict[str, Any] | None, token: str = "") -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode() if body is not None else None, method=method
    )
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def pending_delayed(base: str, user_id: str, password: str) -> list[dict[str, Any]]:
    """The delayed events the homeserver still holds for a user (MSC4140's listing): what it
    would post by itself later. Read through a login of its own, logged out again."""
    login = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": password,
    }
    token = _call("POST", f"{base}/_matrix/client/v3/login", login)["access_token"]
    try:
        listing = _call(
            "GET", f"{base}/_matrix/client/unstable/org.matrix.msc4140/delayed_events", None, token
        )
        return list(listing["delayed_events"])
    finally:
        _call("POST", f"{base}/_matrix/client/v3/logout", {}, token)


def logged_at(record: dict[str, Any]) -> float:
    """When the bot logged a record (epoch seconds)."""
    return datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00")).timestamp()


async def asleep_notices(owner: JsClient, room: str, bot: str) -> list[dict[str, Any]]:
    """The asleep notices the owner can read (a redacted one has no text left)."""
    return [
        m
        for m in await owner.messages(room)
        if m["sender"] == bot and ASLEEP in str(m["content"].get("body", ""))
    ]


async def test_the_homeserver_says_the_computer_is_asleep_and_the_bot_says_it_is_back(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    running: list[BotProcess],
) -> None:
    setup = make_bot(matrix_extra=f"asleep_after_s = {DELAY_S}")
    setup.config.asleep = True
    setup.config.write()
    bot_id = setup.bot.user_id
    bot = await setup.process().start()
    running.append(bot)
    owner = await owner_client(setup.owner)
    room = await owner.create_dm(bot_id)
    await owner.wait_join(room, bot_id)
    await owner.send_text(room, "are you there")
    await owner.wait_message(room, sender=bot_id, contains="are you there")
    [scheduled] = await bot.wait_log("asleep.scheduled", timeout=30)

    # Alive past the delay: the timer is pushed back, nothing is posted. The delay runs from
    # the scheduling, which came before the answer: a second past it is enough.
    past_delay = logged_at(scheduled) + DELAY_S + 1 - time.time()
    with pytest.raises((JsClientError, TimeoutError)):
        await owner.wait_message(room, sender=bot_id, contains=ASLEEP, timeout=max(past_delay, 1))
    [armed] = await asyncio.to_thread(
        pending_delayed, setup.config.homeserver, bot_id, setup.bot.password
    )
    assert armed["running_since"] > logged_at(scheduled) * 1000, "pushed back since"

    # Gone at once (a crash, a power cut): the homeserver posts the notice by itself.
    killed_ms = time.time() * 1000
    await bot.kill9()
    # The wait's timeout is a hang guard: the homeserver posts it a delay after the last
    # push-back, later on a loaded machine.
    notice = await owner.wait_message(room, sender=bot_id, contains=ASLEEP, timeout=DELAY_S + 60)
    assert notice["was_encrypted"] and not notice["decryption_failed"]
    posted = [m for m in await owner.messages(room) if m["event_id"] == notice["event_id"]]
    posted_ms = posted[0]["origin_server_ts"]
    print(f"asleep notice posted {(posted_ms - killed_ms) / 1000:.1f} s after kill -9")
    # Posted by the homeserver's timer once the bot was gone: after the kill, and a whole
    # delay after a push-back seen while it was alive (a later one only makes it later).
    assert posted_ms >= killed_ms, (posted_ms, killed_ms)
    assert posted_ms >= armed["running_since"] + DELAY_S * 1000, (posted_ms, armed)
    assert notice["content"]["msgtype"] == "m.notice"

    # Back: one notice says so, and the asleep one is redacted.
    bot = await setup.process().start()
    running.append(bot)
    back = await owner.wait_message(room, sender=bot_id, contains="is back after", timeout=40)
    assert back["was_encrypted"] and "nothing is queued" in back["body"], back["body"]

    async def asleep_gone() -> bool:
        messages = await owner.messages(room)
        return any(m["event_id"] == notice["event_id"] and m["redacted"] for m in messages)

    await until(asleep_gone, 30)
    # Scheduled again by this run (the log also holds the first run's record): a stop
    # before that would have no notice to cancel and nothing to say.
    await bot.wait_log("asleep.scheduled", timeout=30, count=2)

    # A clean stop: "stopped", and no asleep notice after it.
    assert await bot.stop() == 0
    stopped = await owner.wait_message(room, sender=bot_id, contains="I was stopped", timeout=20)
    assert stopped["was_encrypted"]
    # Nothing is left scheduled on the homeserver, so nothing can follow (this replaces a
    # wait of the delay and more for a notice that must not come).
    assert (
        await asyncio.to_thread(
            pending_delayed, setup.config.homeserver, bot_id, setup.bot.password
        )
        == []
    )
    # The one that went out is redacted (its text gone); none other was posted.
    assert await asleep_notices(owner, room, bot_id) == []
    assert await asleep_gone()
    assert await owner.decryption_failures() == []


async def test_a_paused_computer_is_told_asleep_and_back_when_it_wakes(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    running: list[BotProcess],
) -> None:
    """SIGSTOP is what a laptop's sleep does to the process: the same process, when it
    wakes, finds its push-back refused, says it is back and redacts the notice."""
    setup = make_bot(matrix_extra=f"asleep_after_s = {DELAY_S}")
    setup.config.asleep = True
    setup.config.write()
    bot_id = setup.bot.user_id
    bot = await setup.process().start()
    running.append(bot)
    owner = await owner_client(setup.owner)
    room = await owner.create_dm(bot_id)
    await owner.wait_join(room, bot_id)
    await bot.wait_log("asleep.scheduled", timeout=30)
    os.kill(bot.pid, signal.SIGSTOP)
    try:
        notice = await owner.wait_message(room, sender=bot_id, contains=ASLEEP, timeout=DELAY_S + 8)
        assert notice["was_encrypted"] and not notice["decryption_failed"]
    finally:
        os.kill(bot.pid, signal.SIGCONT)
    back = await owner.wait_message(room, sender=bot_id, contains="is back after", timeout=30)
    assert back["was_encrypted"]

    async def redacted() -> bool:
        messages = await owner.messages(room)
        return any(m["event_id"] == notice["event_id"] and m["redacted"] for m in messages)

    await until(redacted, 30)
    # Scheduled again, in the same process.
    await bot.wait_log("asleep.scheduled", timeout=30, count=2)
    await owner.send_text(room, "still with me")
    await owner.wait_message(room, sender=bot_id, contains="still with me")
