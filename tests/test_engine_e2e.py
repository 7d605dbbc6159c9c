"""The agent engine end to end: a conversation that outgrows its context window and is
compacted, a "prompt is too long" refusal, usage and cost, the model switch, memory — through
Synapse, a strict js client, the bot process and the scripted Messages API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import BotSetup, started
from fake_messages_api import FakeMessagesAPI
from harness.bot import BotProcess
from harness.jsclient import JsClient

from dispatch_matrix.agent.prompt import SUMMARY_SYSTEM
from dispatch_matrix.agent.transcript import SUMMARY_HEAD

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]
SUMMARY_MARK = SUMMARY_SYSTEM.split("\n", 1)[0][:40]


def is_summary_request(body: dict[str, Any]) -> bool:
    system = body.get("system") or [{}]
    return str(system[0].get("text", "")).startswith(SUMMARY_MARK)


# The shell calls these tests script are plain echoes.
ECHO_ALLOWED = '\n[permissions]\nallow = ["Bash(echo:*)"]\n'


async def test_a_long_conversation_is_compacted_and_goes_on(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    """A window of 6000 tokens (the tools and system prompt alone take about a third) and
    fifteen wordy turns: the older turns are summarised, every request stays within the
    window, and the bot answers every message."""
    window = 6000
    setup, bot, owner, room = await started(
        make_bot,
        owner_client,
        running,
        ECHO_ALLOWED,
        agent_extra=f"context_window = {window}\ncompact_at = 0.7\nkeep_recent_messages = 4",
    )
    summaries: list[str] = []

    def turn(body: dict[str, Any]) -> dict[str, Any]:
        if is_summary_request(body):
            summaries.append(body["messages"][0]["content"][0]["text"])
            return {"text": f"SUMMARY-{len(summaries)}: the owner sent numbered notes."}
        said = body["messages"][-1]["content"][-1]["text"]
        number = said.split("note ")[1].split(":")[0]
        return {"text": f"Reply {number}. " + "Noted and filed. " * 70}

    fake_api.script(*[turn] * 60)
    for n in range(1, 16):
        await owner.send_text(room, f"note {n}: " + "remember this detail " * 40)
        await owner.wait_message(room, sender=setup.bot.user_id, contains=f"Reply {n}.")

    requests = [r for r in fake_api.requests if r.path == "/v1/messages"]
    marks = [i for i, r in enumerate(requests) if is_summary_request(r.body)]
    assert len(marks) >= 2, [r.cache["prompt_tokens"] for r in requests]
    assert len(bot.log_events("agent.compacted")) == len(marks)
    # A later summary carries the earlier one forward.
    assert "SUMMARY-1" in summaries[1]
    # The request right after each compaction starts with the summary.
    for k, index in enumerate(marks, start=1):
        first = requests[index + 1].body["messages"][0]["content"][0]
        assert first["text"].startswith(SUMMARY_HEAD)
        assert f"SUMMARY-{k}:" in first["text"]
    sizes = [r.cache["prompt_tokens"] for i, r in enumerate(requests) if i not in marks]
    assert max(sizes) < window, sizes
    # After the first compaction the size stays bounded instead of growing with the turns.
    assert max(sizes[marks[0] :]) < 0.8 * window
    print(f"\nrequest sizes (tokens): {sizes}\ncompactions before requests: {marks}")


async def test_prompt_too_long_compacts_and_retries_once(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(
        make_bot, owner_client, running, ECHO_ALLOWED, agent_extra="keep_recent_messages = 2"
    )
    bot_id = setup.bot.user_id
    fake_api.reply("First answer.")
    await owner.send_text(room, "first task")
    await owner.wait_message(room, sender=bot_id, contains="First answer")
    fake_api.fail(400, message="prompt is too long: 204800 tokens > 200000 maximum")
    fake_api.reply("SUMMARY: the owner asked a first task.")
    fake_api.reply("Second answer, after compacting.")
    await owner.send_text(room, "second task")
    await owner.wait_message(room, sender=bot_id, contains="Second answer")
    assert [r.status for r in fake_api.requests] == [200, 400, 200, 200]
    assert is_summary_request(fake_api.requests[2].body)
    retry = fake_api.requests[3].body["messages"]
    assert retry[0]["content"][0]["text"].startswith(SUMMARY_HEAD)
    assert "second task" in retry[-1]["content"][-1]["text"]
    assert len(bot.log_events("agent.context_too_long")) == 1


async def test_compact_command_summarises_now(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, _bot, owner, room = await started(
        make_bot, owner_client, running, ECHO_ALLOWED, agent_extra="keep_recent_messages = 2"
    )
    bot_id = setup.bot.user_id
    await owner.send_text(room, "!compact")
    await owner.wait_message(room, sender=bot_id, contains="Nothing to compact yet")
    for n in range(3):
        fake_api.reply(f"Done number {n}.")
        await owner.send_text(room, f"task number {n}")
        await owner.wait_message(room, sender=bot_id, contains=f"Done number {n}")
    fake_api.reply("SUMMARY: three small tasks.")
    await owner.send_text(room, "!compact")
    done = await owner.wait_message(room, sender=bot_id, contains="Compacted:")
    assert "oldest 4 messages" in done["body"] and "newest 2" in done["body"]
    assert is_summary_request(fake_api.requests[-1].body)
    fake_api.reply("Done after compacting.")
    await owner.send_text(room, "one more")
    await owner.wait_message(room, sender=bot_id, contains="Done after compacting")
    first = fake_api.requests[-1].body["messages"][0]["content"][0]["text"]
    assert first.startswith(SUMMARY_HEAD) and "three small tasks" in first


async def test_usage_shows_tokens_cache_share_and_cost(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, _bot, owner, room = await started(make_bot, owner_client, running, ECHO_ALLOWED)
    bot_id = setup.bot.user_id
    fake_api.reply("Checking.", tools=[("bash", {"command": "echo usage"})])
    fake_api.reply("Counted.")
    await owner.send_text(room, "count something")
    await owner.wait_message(room, sender=bot_id, contains="Counted")
    await owner.send_text(room, "!usage")
    report = await owner.wait_message(room, sender=bot_id, contains="Model usage")
    body = report["body"]
    assert "Today: 2 requests" in body and "Last 7 days: 2 requests" in body
    assert "tokens in" in body and "read from cache" in body and "$" in body
    assert "count something" in body  # the last tasks, by their first line


async def test_model_command_switches_the_model_for_the_next_task(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, _bot, owner, room = await started(make_bot, owner_client, running, ECHO_ALLOWED)
    bot_id = setup.bot.user_id
    await owner.send_text(room, "!model")
    shown = await owner.wait_message(room, sender=bot_id, contains="I use")
    assert "claude-sonnet-4-6" in shown["body"]
    await owner.send_text(room, "!model claude-nonexistent-1")
    await owner.wait_message(room, sender=bot_id, contains="knows no model")
    await owner.send_text(room, "!model claude-haiku-4-5")
    await owner.wait_message(room, sender=bot_id, contains="From the next task on I use")
    fake_api.reply("Answered by haiku.")
    await owner.send_text(room, "which model?")
    await owner.wait_message(room, sender=bot_id, contains="Answered by haiku")
    messages = [r for r in fake_api.requests if r.path == "/v1/messages"]
    assert [r.body["model"] for r in messages] == ["claude-haiku-4-5"]


async def test_memory_tool_records_a_preference_that_reaches_the_system_prompt(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, _bot, owner, room = await started(make_bot, owner_client, running, ECHO_ALLOWED)
    bot_id = setup.bot.user_id
    fake_api.reply(tools=[("memory", {"action": "add", "text": "prefers metric units"})])
    fake_api.reply("Noted: metric from now on.")
    await owner.send_text(room, "I prefer metric units, please remember")
    await owner.wait_message(room, sender=bot_id, contains="metric from now on")
    memory = setup.config.state / "memory.md"
    assert "prefers metric units" in memory.read_text()
    first, second = (r.body for r in fake_api.requests)
    assert "memory" in [tool["name"] for tool in first["tools"]]
    assert "prefers metric units" not in first["system"][-1]["text"]
    assert "prefers metric units" in second["system"][-1]["text"]
    # The stable part stays first, its own block, so only the memory block re-caches.
    assert first["system"][0] == second["system"][0]
    assert "cache_control" in second["system"][-1]
    await owner.send_text(room, "!memory")
    shown = await owner.wait_message(room, sender=bot_id, contains="What I keep in mind")
    assert "prefers metric units" in shown["body"]
