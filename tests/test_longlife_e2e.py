"""What a long life breaks, end to end through Synapse and a strict js client: a room the bot
was removed from, a reply to an old answer, an edit that came too late, `status` while the
homeserver is away."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Awaitable, Callable

import pytest
from conftest import BotSetup, Homeserver, beside_bot_start, started
from fake_messages_api import FakeMessagesAPI
from harness.bot import BotProcess
from harness.jsclient import JsClient
from harness.proxy import Relay
from test_ops_e2e import status

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]


async def test_a_room_the_bot_was_removed_from_holds_back_no_other_room(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, dm = await started(make_bot, owner_client, running)
    bot_id = setup.bot.user_id
    # Invited after the room was made, so the bot is not an admin there and can be removed.
    other = await owner.call("create_dm", invite=None)
    other = str(other["room_id"])
    await owner.invite(other, bot_id)
    await owner.wait_join(other, bot_id)
    # Answered once the bot is out of the room, however long the kick takes to arrive.
    answer = threading.Event()
    fake_api.reply("an answer for a room I left", gate=answer)
    await owner.send_text(other, "work in the other room")
    await fake_api.await_requests(1, 30)
    # Removed while it works: its answer can never go to that room.
    try:
        await owner.call("kick", room_id=other, user_id=bot_id, reason="done with this room")
        await owner.call("wait_membership", room_id=other, user_id=bot_id, membership="leave")
    finally:
        answer.set()
    await bot.wait_log("task.finished", timeout=30)
    started_at = time.monotonic()
    await owner.send_text(dm, "are you still with me?")
    await owner.wait_message(dm, sender=bot_id, contains="are you still with me?", timeout=90)
    latency = time.monotonic() - started_at
    print(f"the DM's answer after the kick: {latency:.2f}s")
    # It did not wait behind the kicked room's answer: the sender never waited to retry or
    # was held back by anything before it (a speed bound would only measure the machine).
    waits = ("outbox.retry", "outbox.refused", "outbox.rate_limited")
    assert [r for r in bot.log_events() if r["event"] in waits] == []
    # The owner learns in the room they still share with the bot what did not arrive.
    told = await owner.wait_message(dm, sender=bot_id, contains="could not post", timeout=10)
    assert "the answer to #1" in told["body"]
    assert "an answer for a room I left" in told["body"]
    assert told["was_encrypted"]
    # Refused once, for good: no retries.
    [refused] = bot.log_events("outbox.undeliverable")
    assert "M_FORBIDDEN" in refused["error"] and not bot.log_events("outbox.refused")


async def test_status_says_not_connected_while_the_homeserver_is_away(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    homeserver: Homeserver,
    running: list[BotProcess],
) -> None:
    synapse = homeserver.synapse
    # The bot alone reaches the homeserver through a relay: cutting it is an outage for
    # this bot only, and the shared Synapse keeps serving the owner and every other test.
    relay = await Relay(synapse.host, synapse.port).start()
    setup = make_bot()
    setup.config.homeserver = relay.url
    setup.config.write()
    bot = setup.process()
    running.append(bot)
    owner = await beside_bot_start(bot, owner_client(setup.owner))
    room = await owner.create_dm(setup.bot.user_id)
    await owner.wait_join(room, setup.bot.user_id)
    await owner.send_text(room, "are you there?")
    await owner.wait_message(room, sender=setup.bot.user_id, contains="are you there?")
    code, shown = await status(bot)
    assert code == 0 and shown["connected"].startswith("yes, last sync"), shown
    try:
        await relay.cut()
        await bot.wait_log("sync.failed", timeout=30)
        # What `status` reads is written within a few seconds of the failure.
        for _ in range(60):
            code, shown = await status(bot)
            if "sync.failed" in shown.get("last error", ""):
                break
        print(f"status with the homeserver away: connected: {shown['connected']}")
        assert "connection refused" in shown["last error"] or "cannot reach" in shown["last error"]
        assert shown["connected"].startswith("no, failing for"), shown
    finally:
        await relay.start()
    recovered = len(bot.log_events("sync.recovered")) + 1
    await bot.wait_log("sync.recovered", timeout=90, count=recovered)
    for _ in range(60):
        code, shown = await status(bot)
        if shown["connected"].startswith("yes"):
            break
    assert shown["connected"].startswith("yes, last sync"), shown
    await relay.cut()


async def test_a_hang_up_stops_the_bot_as_cleanly_as_a_stop(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running)
    await owner.send_text(room, "before the hang-up")
    await owner.wait_message(room, sender=setup.bot.user_id, contains="before the hang-up")
    assert bot.process is not None
    bot.process.send_signal(signal.SIGHUP)
    assert await bot.wait_exit(30) == 0, bot.output()
    [stopping] = bot.log_events("daemon.stopping")
    assert stopping["signal"] == "SIGHUP"
    assert bot.log_events("daemon.stopped")


def edit_of(event_id: str, text: str) -> dict[str, object]:
    """An m.replace edit as Element sends it."""
    return {
        "msgtype": "m.text",
        "body": f"* {text}",
        "m.new_content": {"msgtype": "m.text", "body": text},
        "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
    }


async def test_an_edit_to_a_running_task_is_answered_with_one_line(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running)
    bot_id = setup.bot.user_id
    # Answered once the edit has been answered: the task is running all the while.
    answer = threading.Event()
    fake_api.reply("summary of the old folder", gate=answer)
    sent = await owner.send_text(room, "summarise the old folder")
    await fake_api.await_requests(1, 30)
    edit = edit_of(sent, "summarise the new folder")
    await owner.call("send_event", room_id=room, type="m.room.message", content=edit)
    try:
        said = await owner.wait_message(
            room, sender=bot_id, contains="edit was not taken", timeout=10
        )
    finally:
        answer.set()
    assert said["body"].count("\n") == 0, "one line"
    assert "#1 is already running" in said["body"] and "`!cancel`" in said["body"]
    assert (said["content"].get("m.relates_to") or {}).get("m.in_reply_to") == {"event_id": sent}
    # The running task keeps its text; nothing new was run from the edit.
    await owner.wait_message(room, sender=bot_id, contains="summary of the old folder", timeout=30)
    assert len(fake_api.requests) == 1
    assert "summarise the new folder" not in str(fake_api.requests[0].body["messages"])


async def test_a_reply_to_an_older_answer_names_its_referent_to_the_model(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, _bot, owner, room = await started(make_bot, owner_client, running)
    bot_id = setup.bot.user_id
    answers = []
    for n, text in enumerate(["list the biggest files in ~/photos", "what day is it", "hi"]):
        asked_for = await owner.send_text(room, text)
        answer = await owner.wait_message(room, sender=bot_id, contains=text)
        answers.append((asked_for, answer["event_id"]))
        assert len(fake_api.requests) == n + 1
    # Three tasks later, "it" is the first answer: a reply to it, as an older client sends
    # one (its body quotes the answer first; Matrix 1.13 clients no longer do).
    reply = {
        "msgtype": "m.text",
        "body": f"> <{bot_id}> list the biggest files in ~/photos\n\nmake it shorter",
        "m.relates_to": {"m.in_reply_to": {"event_id": answers[0][1]}},
    }
    await owner.call("send_event", room_id=room, type="m.room.message", content=reply)
    await fake_api.await_requests(4, 30)
    told = fake_api.requests[3].body["messages"][-1]["content"][-1]["text"]
    note, said = told.splitlines()[-2:]
    assert said == "make it shorter", "the quote of the old client is gone"
    assert note.startswith("(This message replies to your answer to task #1, which began: «")
    assert "list the biggest files in ~/photos" in note
    # A reply to one of the owner's own messages names that message.
    mine = {
        "msgtype": "m.text",
        "body": "do that again",
        "m.relates_to": {"m.in_reply_to": {"event_id": answers[1][0]}},
    }
    await owner.call("send_event", room_id=room, type="m.room.message", content=mine)
    await fake_api.await_requests(5, 30)
    told = fake_api.requests[4].body["messages"][-1]["content"][-1]["text"]
    note, said = told.splitlines()[-2:]
    assert said == "do that again"
    assert note == "(This message replies to the owner's message #2, which began: «what day is it»)"


async def test_a_blank_message_is_no_task_and_a_long_ones_answer_keeps_its_start(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running)
    await owner.send_text(room, "   \n\t ")
    await bot.wait_log("message.empty_ignored")
    # The stand-in echoes it: an answer over the length of one event, sent as a file.
    long = " ".join(f"word{n}" for n in range(3_000))
    assert len(long) > 20_000
    await owner.send_text(room, long)
    shown = await owner.wait_message(room, sender=setup.bot.user_id, contains="attached file")
    assert len(fake_api.requests) == 1, "the blank message never reached the model"
    preview = shown["body"].split("\n\n… the full text")[0]
    assert len(preview) > 3_000, f"the preview keeps most of its window: {preview!r}"
    assert "word0 word1 word2" in preview


async def test_a_restart_after_a_refused_key_takes_up_the_queue_and_says_so(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running)
    bot_id = setup.bot.user_id
    fake_api.fail(401, message="invalid x-api-key")
    await owner.send_text(room, "first task")
    await owner.wait_message(room, sender=bot_id, contains="refused me")
    assert await bot.stop() == 0
    # The operator fixed the key and restarted the bot: no `!resume` needed, and a word.
    fake_api.reply("Back with a good key.")
    bot = await setup.process().start()
    running.append(bot)
    await owner.wait_message(room, sender=bot_id, contains="took up the queue again")
    await owner.wait_message(room, sender=bot_id, contains="Back with a good key")
    assert [r.status for r in fake_api.requests] == [401, 200]
