"""The agent engine as the queue runs it: a conversation that outgrows its context window and
is compacted, a "prompt is too long" refusal, `!compact`, usage and cost, memory. The worker
tier: the real queue, agent, tools and store in this process, the scripted stand-in on
loopback, a fake room (no homeserver; tests/test_engine_e2e.py keeps a command's round trip
through Synapse)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fake_messages_api import FakeMessagesAPI
from harness.workbench import Bench

from dispatch_matrix.agent.prompt import SUMMARY_SYSTEM
from dispatch_matrix.agent.transcript import SUMMARY_HEAD

pytestmark = [pytest.mark.worker]

MakeBench = Callable[..., Bench]
SUMMARY_MARK = SUMMARY_SYSTEM.split("\n", 1)[0][:40]
# The shell calls these tests script are plain echoes.
ECHO_ALLOWED = '\n[permissions]\nallow = ["Bash(echo:*)"]\n'


def is_summary_request(body: dict[str, Any]) -> bool:
    system = body.get("system") or [{}]
    return str(system[0].get("text", "")).startswith(SUMMARY_MARK)


async def test_a_long_conversation_is_compacted_and_goes_on(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    """A window of 6000 tokens (the tools and system prompt alone take about a third) and
    fifteen wordy turns: the older turns are summarised, every request stays within the
    window, and the bot answers every message."""
    window = 6000
    bench = make_bench(
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
        await bench.send(f"note {n}: " + "remember this detail " * 40)
        await bench.room.wait_message(f"Reply {n}.")

    requests = [r for r in fake_api.requests if r.path == "/v1/messages"]
    marks = [i for i, r in enumerate(requests) if is_summary_request(r.body)]
    assert len(marks) >= 2, [r.cache["prompt_tokens"] for r in requests]
    assert len(bench.log_events("agent.compacted")) == len(marks)
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
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    bench = make_bench(ECHO_ALLOWED, agent_extra="keep_recent_messages = 2")
    fake_api.reply("First answer.")
    await bench.send("first task")
    await bench.room.wait_message("First answer")
    fake_api.fail(400, message="prompt is too long: 204800 tokens > 200000 maximum")
    fake_api.reply("SUMMARY: the owner asked a first task.")
    fake_api.reply("Second answer, after compacting.")
    await bench.send("second task")
    await bench.room.wait_message("Second answer")
    assert [r.status for r in fake_api.requests] == [200, 400, 200, 200]
    assert is_summary_request(fake_api.requests[2].body)
    retry = fake_api.requests[3].body["messages"]
    assert retry[0]["content"][0]["text"].startswith(SUMMARY_HEAD)
    assert "second task" in retry[-1]["content"][-1]["text"]
    assert len(bench.log_events("agent.context_too_long")) == 1


async def test_compact_command_summarises_now(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    bench = make_bench(ECHO_ALLOWED, agent_extra="keep_recent_messages = 2")
    await bench.send("!compact")
    await bench.room.wait_message("Nothing to compact yet")
    for n in range(3):
        fake_api.reply(f"Done number {n}.")
        await bench.send(f"task number {n}")
        await bench.room.wait_message(f"Done number {n}")
    fake_api.reply("SUMMARY: three small tasks.")
    await bench.send("!compact")
    done = await bench.room.wait_message("Compacted:")
    assert "oldest 4 messages" in done.body and "newest 2" in done.body
    assert is_summary_request(fake_api.requests[-1].body)
    fake_api.reply("Done after compacting.")
    await bench.send("one more")
    await bench.room.wait_message("Done after compacting")
    first = fake_api.requests[-1].body["messages"][0]["content"][0]["text"]
    assert first.startswith(SUMMARY_HEAD) and "three small tasks" in first


async def test_usage_shows_tokens_cache_share_and_cost(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    bench = make_bench(ECHO_ALLOWED)
    fake_api.reply("Checking.", tools=[("bash", {"command": "echo usage"})])
    fake_api.reply("Counted.")
    await bench.send("count something")
    await bench.room.wait_message("Counted")
    await bench.send("!usage")
    report = await bench.room.wait_message("Model usage")
    body = report.body
    assert "Today: 2 requests" in body and "Last 7 days: 2 requests" in body
    assert "tokens in" in body and "read from cache" in body and "$" in body
    assert "count something" in body  # the last tasks, by their first line


async def test_memory_tool_records_a_preference_that_reaches_the_system_prompt(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    bench = make_bench(ECHO_ALLOWED)
    fake_api.reply(tools=[("memory", {"action": "add", "text": "prefers metric units"})])
    fake_api.reply("Noted: metric from now on.")
    await bench.send("I prefer metric units, please remember")
    await bench.room.wait_message("metric from now on")
    memory = bench.state / "memory.md"
    assert "prefers metric units" in memory.read_text()
    first, second = (r.body for r in fake_api.requests)
    assert "memory" in [tool["name"] for tool in first["tools"]]
    assert "prefers metric units" not in first["system"][-1]["text"]
    assert "prefers metric units" in second["system"][-1]["text"]
    # The stable part stays first, its own block, so only the memory block re-caches.
    assert first["system"][0] == second["system"][0]
    assert "cache_control" in second["system"][-1]
    await bench.send("!memory")
    shown = await bench.room.wait_message("What I keep in mind")
    assert "prefers metric units" in shown.body
