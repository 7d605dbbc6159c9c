"""A bot nobody exempted: Synapse's stock limits on its events (a burst of 10, then one per
5 s) and on presence. The answers come first and never meet a 429; a quick task costs the
homeserver at most two events (the answer and its ✅)."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import BotSetup, beside_bot_start, started
from fake_messages_api import FakeMessagesAPI
from harness.bot import BotProcess
from harness.jsclient import JsClient

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]

# Synapse's stock burst of room events. At two events a task, six tasks are the fewest that
# send more than the burst, so the refill (one event per 5 s) is part of what is measured.
BURST = 10
TASKS = BURST // 2 + 1


def events_per_task(bot: BotProcess) -> Counter[str]:
    """Room events the bot sent, by the task they were for (from its log)."""
    counts: Counter[str] = Counter()
    for record in bot.log_events("outbox.sent"):
        # Keys are t<task>.<what>; events without a task (notices) are counted apart.
        found = re.search(r"-t(\d+)\.", str(record["txn"]))
        counts[found.group(1) if found else "other"] += 1
    return counts


async def test_a_paced_conversation_meets_no_rate_limit_and_costs_two_events_a_task(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running, limited=True)
    bot_id = setup.bot.user_id
    last = None
    for n in range(1, TASKS + 1):
        if last is not None:
            # The pace of the scenario measured in BENCHMARKS.md: a person who reads each
            # answer and writes the next one (6 s), not a wait for something to happen.
            await asyncio.sleep(6)
        sent = await owner.send_text(room, f"paced message {n}")
        reply = await owner.wait_message(
            room, sender=bot_id, contains=f"paced message {n}", after_event_id=last
        )
        assert reply["was_encrypted"]
        last = reply["event_id"]
    # Decorations wait while the budget is below its reserve; the last ✅ comes in time.
    await owner.wait_reactions(room, sent, ["✅"], sender=bot_id, timeout=90)
    assert bot.log_events("outbox.rate_limited") == [], "no send met a 429"
    per_task = events_per_task(bot)
    tasks = {k: v for k, v in per_task.items() if k != "other"}
    assert len(tasks) == TASKS and max(tasks.values()) <= 2, per_task
    # What keeps the measurement honest: the bot sent more than the burst allows at once.
    assert sum(per_task.values()) > BURST, f"within the burst; more tasks needed: {per_task}"


async def test_five_tasks_at_once_are_answered_in_order_without_a_429(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running, limited=True)
    bot_id = setup.bot.user_id
    sent = [await owner.send_text(room, f"burst task {n}") for n in range(1, 6)]
    await owner.wait_message(room, sender=bot_id, contains="burst task 5")
    messages = await owner.messages(room)
    answers = [_reply_target(m) for m in messages if m["sender"] == bot_id]
    assert [a for a in answers if a in sent] == sent, "one answer each, in order"
    assert bot.log_events("outbox.rate_limited") == []


async def test_the_answer_goes_ahead_of_decorations_held_back_by_the_budget(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    # A bot that believes its budget is small (a burst of 3, a reserve of 2) holds every
    # decoration back once an answer took it below the reserve, yet answers at once.
    setup = make_bot(limited=True, matrix_extra="send_burst = 3\nsend_rate_per_s = 0.01")
    bot = setup.process()
    running.append(bot)
    owner = await beside_bot_start(bot, owner_client(setup.owner))
    room = await owner.create_dm(setup.bot.user_id)
    await owner.wait_join(room, setup.bot.user_id)
    bot_id = setup.bot.user_id
    for n in (1, 2):
        await owner.send_text(room, f"answer me {n}")
        await owner.wait_message(room, sender=bot_id, contains=f"answer me {n}")
    sent_kinds = [r["kind"] for r in bot.log_events("outbox.sent")]
    assert sent_kinds.count("answer") >= 2
    # Each answer took the budget below its reserve: no ✅ went out meanwhile.
    assert sent_kinds.count("decoration") == 0


def _reply_target(message: dict[str, Any]) -> str | None:
    relation = message["content"].get("m.relates_to") or {}
    target = relation.get("m.in_reply_to", {}).get("event_id")
    return str(target) if target else None
