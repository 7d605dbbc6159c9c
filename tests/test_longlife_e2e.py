"""What a long life breaks, end to end through Synapse and a strict js client: a room the bot
was removed from, a reply to an old answer, an edit that came too late, `status` while the
homeserver is away."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest
from conftest import BotSetup, started
from fake_messages_api import FakeMessagesAPI
from harness.bot import BotProcess
from harness.jsclient import JsClient

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
    fake_api.reply("an answer for a room I left", delay=4)
    await owner.send_text(other, "work in the other room")
    await fake_api.await_requests(1, 30)
    # Removed while it works: its answer can never go to that room.
    await owner.call("kick", room_id=other, user_id=bot_id, reason="done with this room")
    await owner.call("wait_membership", room_id=other, user_id=bot_id, membership="leave")
    await bot.wait_log("task.finished", timeout=30)
    started_at = time.monotonic()
    await owner.send_text(dm, "are you still with me?")
    await owner.wait_message(dm, sender=bot_id, contains="are you still with me?", timeout=90)
    latency = time.monotonic() - started_at
    print(f"the DM's answer after the kick: {latency:.2f}s")
    assert latency < 2.0, f"the DM's answer waited {latency:.1f}s behind the kicked room's"
    # The owner learns in the room they still share with the bot what did not arrive.
    told = await owner.wait_message(dm, sender=bot_id, contains="could not post", timeout=10)
    assert "the answer to #1" in told["body"]
    assert "an answer for a room I left" in told["body"]
    assert told["was_encrypted"]
    # Refused once, for good: no retries.
    [refused] = bot.log_events("outbox.undeliverable")
    assert "M_FORBIDDEN" in refused["error"] and not bot.log_events("outbox.refused")
