"""The room as a durable queue, end to end: order, catch-up after downtime, the phone's view
(reactions, replies), edits and redactions of queued messages, and a flood — through Synapse
and a strict client. The control commands and `!cancel` of a long model call are in the
worker tier: tests/test_queue_worker.py."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import BotSetup, started
from fake_messages_api import FakeMessagesAPI
from harness.bot import BotProcess
from harness.jsclient import JsClient

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]


def replies(messages: list[dict[str, Any]], bot: str) -> dict[str, list[str]]:
    """The bot's text replies, grouped by the event they answer."""
    out: dict[str, list[str]] = {}
    for m in messages:
        if m["sender"] != bot or m["type"] != "m.room.message":
            continue
        target = (m["content"].get("m.relates_to") or {}).get("m.in_reply_to", {}).get("event_id")
        if target:
            # The echo model repeats the owner's text after its "[sent …]" line.
            out.setdefault(target, []).append(m["content"]["body"].splitlines()[-1])
    return out


def asked(api: FakeMessagesAPI) -> list[str]:
    """The owner text each model request ended with, in request order."""
    texts = []
    for request in api.requests:
        last = request.body["messages"][-1]["content"][-1]
        texts.append(last.get("text", "").splitlines()[-1])
    return texts


async def test_three_tasks_sent_at_once_finish_in_order(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    # Order is measured on a bot with Synapse's stock rate limits.
    setup, _bot, owner, room = await started(make_bot, owner_client, running, limited=True)
    sent = [await owner.send_text(room, f"task number {n}") for n in (1, 2, 3)]
    await owner.wait_message(room, sender=setup.bot.user_id, contains="task number 3")
    assert asked(fake_api) == ["task number 1", "task number 2", "task number 3"]
    answers = replies(await owner.messages(room), setup.bot.user_id)
    assert [answers[e] for e in sent] == [[f"task number {n}"] for n in (1, 2, 3)]


async def test_messages_sent_while_stopped_run_after_restart_once_each_in_order(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running, limited=True)
    await owner.send_text(room, "before the stop")
    await owner.wait_message(room, sender=setup.bot.user_id, contains="before the stop")
    assert await bot.stop() == 0
    sent = [await owner.send_text(room, f"while asleep {n}") for n in range(1, 5)]
    bot = await setup.process().start()
    running.append(bot)
    await owner.wait_message(room, sender=setup.bot.user_id, contains="while asleep 4")
    assert asked(fake_api) == ["before the stop"] + [f"while asleep {n}" for n in range(1, 5)]
    answers = replies(await owner.messages(room), setup.bot.user_id)
    assert all(len(answers[e]) == 1 for e in sent), answers
    assert await owner.decryption_failures() == []


async def test_the_phone_sees_the_queue_as_reactions_and_replies(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running)
    bot_id = setup.bot.user_id
    # A quick task: the reply is the news; its message ends with ✅ and showed nothing else.
    quick = await owner.send_text(room, "a quick one")
    await owner.wait_message(room, sender=bot_id, contains="a quick one")
    [done] = await owner.wait_reactions(room, quick, ["✅"], sender=bot_id)
    assert done["was_encrypted"], "reactions are encrypted"
    # A slow task shows ⚙️ while it runs, then only ✅ (the ⚙️ is redacted).
    # Answered once the ⚙️ is seen: the task runs until then, however slow the machine.
    answer = threading.Event()
    fake_api.reply("slow answer", gate=answer)
    slow = await owner.send_text(room, "a slow one")
    try:
        # The first sign of life is the bot's read receipt on the message, long before the
        # answer.
        seen = await owner.wait_receipt(room, slow, bot_id, timeout=5)
        assert seen["event_id"] == slow
        assert not [m for m in await owner.messages(room) if "slow answer" in str(m["content"])]
        await owner.wait_reactions(room, slow, ["⚙️"], sender=bot_id, timeout=6)
    finally:
        answer.set()
    await owner.wait_message(room, sender=bot_id, contains="slow answer", timeout=20)
    await owner.wait_reactions(room, slow, ["✅"], sender=bot_id)
    sent = [r["txn"] for r in bot.log_events("outbox.sent") if ".react." in r["txn"]]
    states = [txn.rsplit(".", 1)[-1] for txn in sent]
    assert states == ["done", "running", "done"], (
        "no ⏳ for a task taken at once, no ⚙️ for one done in a moment"
    )


async def test_two_hundred_messages_sent_while_stopped_all_complete_once(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running)
    await bot.stop()
    sent = [await owner.send_text(room, f"flood {n:03d}") for n in range(200)]
    bot = await setup.process().start()
    running.append(bot)
    await owner.wait_message(room, sender=setup.bot.user_id, contains="flood 199", timeout=600)
    assert asked(fake_api) == [f"flood {n:03d}" for n in range(200)]
    answers = replies(await owner.messages(room), setup.bot.user_id)
    assert [answers.get(e) for e in sent] == [[f"flood {n:03d}"] for n in range(200)]


async def test_editing_or_deleting_a_queued_message_changes_its_task(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running)
    bot_id = setup.bot.user_id
    await owner.send_text(room, "!pause")
    await owner.wait_message(room, sender=bot_id, contains="Paused")
    typo = await owner.send_text(room, "delete the tmp folder")
    unwanted = await owner.send_text(room, "reboot the server")
    edit = {
        "msgtype": "m.text",
        "body": "* list the tmp folder",
        "m.new_content": {"msgtype": "m.text", "body": "list the tmp folder"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": typo},
    }
    await owner.call("send_event", room_id=room, type="m.room.message", content=edit)
    await bot.wait_log("task.edited")
    await owner.call("redact", room_id=room, event_id=unwanted)
    await bot.wait_log("task.dropped")
    await owner.send_text(room, "!resume")
    await owner.wait_message(room, sender=bot_id, contains="list the tmp folder")
    await owner.send_text(room, "!queue")
    await owner.wait_message(room, sender=bot_id, contains="The queue is empty")
    assert asked(fake_api) == ["list the tmp folder"]


async def test_a_huge_message_is_refused_clearly_and_a_huge_answer_comes_as_a_file(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(
        make_bot, owner_client, running, agent_extra="max_task_chars = 20000"
    )
    await owner.send_text(room, "x" * 40_000)
    refused = await owner.wait_message(room, sender=setup.bot.user_id, contains="too long")
    assert "40000 characters" in refused["body"] and fake_api.requests == []

    fake_api.reply("line of a very long report\n" * 2000)
    await owner.send_text(room, "write me a long report")
    attached = await owner.wait_message(room, sender=setup.bot.user_id, contains="answer-")
    assert attached["content"]["msgtype"] == "m.file" and "file" in attached["content"]
    summary = await owner.wait_message(room, sender=setup.bot.user_id, contains="attached file")
    assert len(summary["body"]) < 10_000
