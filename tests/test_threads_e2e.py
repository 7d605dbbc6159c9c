"""Where the owner wrote: a task written in a thread is answered in that thread, through
Synapse and a strict client; the main timeline's tasks stay in the main timeline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from conftest import BotSetup, started
from fake_messages_api import FakeMessagesAPI
from harness.bot import BotProcess
from harness.jsclient import JsClient

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]


async def test_a_task_written_in_a_thread_is_answered_in_that_thread(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running)
    bot_id = setup.bot.user_id
    root = await owner.send_text(room, "first in the timeline")
    first = await owner.wait_message(room, sender=bot_id, contains="first in the timeline")
    assert first["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": root}}

    # As a client with threads sends it: in the thread of `root`, falling back to a reply to
    # the thread's last event (the bot's answer) for clients without threads.
    threaded = await owner.send_text(
        room,
        "second in the thread",
        relates_to={
            "rel_type": "m.thread",
            "event_id": root,
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": first["event_id"]},
        },
    )
    answer = await owner.wait_message(room, sender=bot_id, contains="second in the thread")
    assert answer["was_encrypted"]
    assert answer["content"]["m.relates_to"] == {
        "rel_type": "m.thread",
        "event_id": root,
        "is_falling_back": True,
        "m.in_reply_to": {"event_id": threaded},
    }
    # The fallback reply is no reply the owner made: the model is not told of one.
    asked = fake_api.requests[-1].body["messages"][-1]["content"][-1]["text"]
    assert "replies to" not in asked, asked

    # A later task in the main timeline is answered there, not in the thread.
    plain = await owner.send_text(room, "third in the timeline")
    third = await owner.wait_message(room, sender=bot_id, contains="third in the timeline")
    assert third["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": plain}}
    # The threaded message was marked read in its thread: a receipt for the main timeline
    # is refused by the homeserver ("not related to thread main").
    failed = bot.log_events("outbox.ephemeral_failed")
    assert not failed, failed
