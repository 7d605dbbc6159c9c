"""The agent engine's parts without Matrix: compaction cut points, what is sent versus what is
stored, the token gauge, prices, memory, cache breakpoints — and the engine against the fake
Messages API in-process for compaction, the too-long retry, the budget and thinking."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anthropic
import pytest
from fake_messages_api import FakeMessagesAPI
from harness.taskio import FakeTaskIO

from dispatch_matrix.agent import (
    Agent,
    BudgetSpent,
    ContextTooLong,
    Memory,
    MemoryTool,
)
from dispatch_matrix.agent.compaction import cut_point, render, starts_turn
from dispatch_matrix.agent.engine import ModelPlan, may_cite
from dispatch_matrix.agent.model import CONTINUE_NOTE
from dispatch_matrix.agent.prompt import SUMMARY_SYSTEM
from dispatch_matrix.agent.transcript import (
    CANCELLED_RESULT,
    MEDIA_TOKENS,
    RETRIED_AFTER_CANCEL_NOTE,
    SUMMARY_HEAD,
    Gauge,
    count_cache_control,
    error_result,
    estimate_tokens,
    request_messages,
    trim_text,
)
from dispatch_matrix.agent.usage import UNKNOWN_MODEL, cost, price_of, total
from dispatch_matrix.app.config import AgentSection
from dispatch_matrix.connectors import web
from dispatch_matrix.permissions.policy import Policy
from dispatch_matrix.queue import texts
from dispatch_matrix.store import Database, Task
from dispatch_matrix.store.ledger import UsageRow
from dispatch_matrix.toolbox.base import ToolContext, ToolResult
from dispatch_matrix.toolbox.registry import ToolRegistry, default_tools

SUMMARY_MARK = SUMMARY_SYSTEM.split("\n", 1)[0][:40]


# -- conversations as data -----------------------------------------------------------------------


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def call(n: int) -> dict[str, Any]:
    use = {"type": "tool_use", "id": f"t{n}", "name": "bash", "input": {"command": f"echo {n}"}}
    return {"role": "assistant", "content": [use]}


def result(n: int, text: str = "ok") -> dict[str, Any]:
    block = {
        "type": "tool_result",
        "tool_use_id": f"t{n}",
        "content": [{"type": "text", "text": text}],
    }
    return {"role": "user", "content": [block]}


def answer(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def turn(n: int, tools: int = 1) -> list[dict[str, Any]]:
    """One task: the owner's words, `tools` tool round trips, the answer."""
    out = [user(f"task {n}")]
    for k in range(tools):
        out += [call(n * 100 + k), result(n * 100 + k)]
    return [*out, answer(f"done {n}")]


# -- cut points ----------------------------------------------------------------------------------


def test_cut_goes_before_the_newest_turn_that_leaves_enough_messages() -> None:
    messages = turn(1) + turn(2) + turn(3)  # 4 messages each
    assert cut_point(messages, keep=4) == 8
    assert cut_point(messages, keep=5) == 4
    assert cut_point(messages, keep=8) == 4
    assert cut_point(messages, keep=9) is None


def test_a_cut_never_falls_between_a_tool_use_and_its_result() -> None:
    rng = random.Random(7)
    for _ in range(300):
        messages: list[dict[str, Any]] = []
        for n in range(rng.randint(1, 6)):
            messages += turn(n, tools=rng.randint(0, 4))
        for keep in (1, 2, 4, 12):
            for relaxed in (False, True):
                cut = cut_point(messages, keep, relaxed=relaxed)
                if cut is None:
                    continue
                assert 0 < cut < len(messages)
                kept = messages[cut:]
                # Every tool_result kept has its tool_use kept too, and vice versa.
                uses = {b["id"] for m in kept for b in m["content"] if b["type"] == "tool_use"}
                results = {
                    b["tool_use_id"]
                    for m in kept
                    for b in m["content"]
                    if b["type"] == "tool_result"
                }
                assert results <= uses
                assert uses <= results
                if not relaxed:
                    assert starts_turn(messages[cut]) and len(kept) >= keep


def test_relaxed_cut_gives_up_keep_then_cuts_inside_the_running_turn() -> None:
    two = turn(1) + turn(2, tools=3)
    assert cut_point(two, keep=12) is None
    assert cut_point(two, keep=12, relaxed=True) == 4
    one = turn(1, tools=3)
    assert cut_point(one, keep=2) is None
    cut = cut_point(one, keep=2, relaxed=True)
    assert cut is not None and one[cut]["role"] == "assistant"
    assert cut_point([user("alone")], keep=1, relaxed=True) is None


def test_render_for_the_summariser_holds_no_tool_blocks_and_fits_its_budget() -> None:
    messages = [user("find the logs"), call(1), result(1, "x" * 50_000), answer("found")]
    text = render(messages, budget_chars=3000)
    assert "Owner: find the logs" in text and "Assistant called bash" in text
    assert "Assistant: found" in text
    assert len(text) < 3200


# -- what is sent versus what is stored ------------------------------------------------------------


def test_huge_tool_results_are_trimmed_in_the_request_but_kept_whole_in_the_store(
    tmp_path: Path,
) -> None:
    db = Database.open(tmp_path / "db.sqlite")
    conversation = db.current_conversation()
    huge = "HEAD" + "x" * 50_000 + "TAIL"
    db.append_message(conversation, None, "user", user("run it")["content"])
    db.append_message(conversation, None, "assistant", call(1)["content"])
    db.append_message(conversation, None, "user", result(1, huge)["content"])
    rows = db.transcript_rows(conversation)
    sent, _ = request_messages([(r.id, r.message()) for r in rows], None, trim_at=20_000)
    text = sent[-1]["content"][0]["content"][0]["text"]
    assert text.startswith("HEAD") and text.endswith("TAIL")
    assert len(text) < 20_200
    assert "30008 chars trimmed" in text
    assert f"transcript row {rows[2].id}" in text
    stored = db.transcript(conversation)[2]["content"][0]["content"][0]["text"]
    assert stored == huge


def test_trim_text_keeps_short_text_as_is() -> None:
    assert trim_text("short", 10, 1) == "short"
    trimmed = trim_text("a" * 30, 10, 5)
    assert trimmed.startswith("aaaaa") and "20 chars trimmed" in trimmed and "row 5" in trimmed


def test_the_summary_comes_first_and_carries_a_breakpoint() -> None:
    rows = list(enumerate(turn(5), start=10))
    sent, _ = request_messages(rows, "the owner likes tea", trim_at=20_000)
    first = sent[0]["content"][0]
    assert first["text"].startswith(SUMMARY_HEAD) and "likes tea" in first["text"]
    assert "cache_control" in first
    assert "cache_control" in sent[-1]["content"][-1]
    # The summary merged with the turn's opening message: roles still alternate.
    roles = [m["role"] for m in sent]
    assert all(a != b for a, b in zip(roles, roles[1:], strict=False))


# -- tokens ----------------------------------------------------------------------------------------


def test_token_estimate_is_a_quarter_of_the_canonical_json() -> None:
    assert estimate_tokens("") == 1  # '""'
    assert estimate_tokens({"a": "x" * 392}) == 100  # {"a":"xxx…"} is 400 bytes
    image = {"type": "image", "source": {"type": "base64", "data": "A" * 4_000_000}}
    assert estimate_tokens([image]) < MEDIA_TOKENS + 10


def test_gauge_corrects_the_estimate_by_the_last_real_count() -> None:
    gauge = Gauge()
    assert gauge.expect(1000) == 1000
    gauge.measured(estimated=1000, real=1200)
    assert gauge.expect(1500) == 1700
    # A wild measurement moves the expectation by at most half.
    gauge.measured(estimated=1000, real=100_000)
    assert gauge.expect(1000) == 1500


# -- prices ----------------------------------------------------------------------------------------


def test_prices_by_model_family() -> None:
    assert cost("claude-sonnet-4-5", 1_000_000, 0) == pytest.approx(3.0)
    assert cost("claude-sonnet-4-5-20250929", 0, 1_000_000) == pytest.approx(15.0)
    assert cost("claude-sonnet-4-5", 0, 0, cache_write=1_000_000) == pytest.approx(3.75)
    assert cost("claude-sonnet-4-5", 0, 0, cache_read=1_000_000) == pytest.approx(0.3)
    assert price_of("claude-opus-4-5-20251101").input == 5.0  # type: ignore[union-attr]
    assert price_of("claude-opus-4-1").input == 15.0  # type: ignore[union-attr]
    assert price_of("claude-opus-4-20250514").input == 15.0  # type: ignore[union-attr]
    assert price_of("claude-haiku-4-5").output == 5.0  # type: ignore[union-attr]
    assert cost("gpt-5", 1000, 1000) is None


def test_totals_price_each_request_and_set_unknown_models_apart() -> None:
    def row(model: str, inp: int, out: int, write: int = 0, read: int = 0) -> UsageRow:
        return UsageRow(1, model, inp, out, write, read, 0.0)

    totals = total([row("claude-haiku-4-5", 1000, 100, 2000, 7000), row("mystery-1", 500, 50)])
    assert totals.requests == 2 and totals.unpriced == 1
    assert totals.unpriced_models == ("mystery-1",)
    expected = (1000 * 1 + 100 * 5 + 2000 * 1.25 + 7000 * 0.1) / 1e6
    assert totals.cost_usd == pytest.approx(expected)
    assert totals.cache_read_share == pytest.approx(7000 / 10_500)
    report = texts.usage_report(totals, totals, [], 0.0)
    assert UNKNOWN_MODEL in report and "$" in report
    only_unknown = texts.usage_report(total([row("mystery-1", 5, 5)]), total([]), [], 0.0)
    assert UNKNOWN_MODEL in only_unknown and "$" not in only_unknown


# -- memory ----------------------------------------------------------------------------------------


async def test_memory_tool_adds_views_replaces_and_removes(tmp_path: Path) -> None:
    memory = Memory(tmp_path / "memory.md")
    tool = MemoryTool(memory)
    registry = ToolRegistry([tool])
    ctx = ToolContext(workdir=tmp_path, allowed_roots=(tmp_path,), bash_timeout_s=120)

    async def run(**tool_input: Any) -> tuple[bool, str]:
        done = await registry.run("memory", tool_input, ctx)
        return done.is_error, done.content[0]["text"]

    assert await run(action="view") == (False, "(memory is empty)")
    assert not (await run(action="add", text="prefers metric\n units"))[0]
    assert not (await run(action="add", text="- lives in Lyon"))[0]
    assert memory.read() == "- prefers metric units\n- lives in Lyon\n"
    assert (await run(action="add", text="prefers metric units"))[0]  # already there
    assert not (await run(action="replace", old="Lyon", text="Grenoble"))[0]
    assert "Grenoble" in memory.read()
    assert (await run(action="remove", old="Paris"))[0]
    assert not (await run(action="remove", old="metric"))[0]
    assert memory.read() == "- lives in Grenoble\n"
    assert (await run(action="replace", old="x"))[0]  # needs text
    assert (await run(action="fly"))[0]
    assert oct(memory.path.stat().st_mode & 0o777) == "0o600"
    assert "lives in Grenoble" in memory.system_block()


async def test_memory_refuses_to_grow_past_its_cap(tmp_path: Path) -> None:
    memory = Memory(tmp_path / "memory.md")
    registry = ToolRegistry([MemoryTool(memory)])
    ctx = ToolContext(workdir=tmp_path, allowed_roots=(tmp_path,), bash_timeout_s=120)
    for n in range(78):
        assert not (
            await registry.run("memory", {"action": "add", "text": f"{n:03d} " + "y" * 96}, ctx)
        ).is_error
    before = memory.read()
    assert len(before.encode()) <= 8 * 1024
    refused = await registry.run("memory", {"action": "add", "text": "z" * 400}, ctx)
    assert refused.is_error and "limit of 8192 bytes" in refused.content[0]["text"]
    assert memory.read() == before


def test_the_policy_lets_the_memory_tool_run_without_a_rule(tmp_path: Path) -> None:
    policy = Policy(allow=[], ask=[], deny=[], home=tmp_path, workdir=tmp_path)
    assert policy.decide("memory", {"action": "add", "text": "x"}).verdict == "allow"


# -- the engine in-process, against the fake Messages API --------------------------------------


def make_agent(
    tmp_path: Path, url: str, settings: AgentSection | None = None, memory: bool = True
) -> tuple[Agent, Database]:
    db = Database.open(tmp_path / "db.sqlite")
    client = anthropic.AsyncAnthropic(
        base_url=url or "http://127.0.0.1:9", api_key="k", max_retries=0
    )
    policy = Policy(allow=[], ask=[], deny=[], home=tmp_path, workdir=tmp_path)
    agent = Agent(
        db,
        client,
        settings=settings or AgentSection(model="claude-sonnet-4-5", max_tokens=1024),
        system="You are a test.",
        tools=ToolRegistry(default_tools()),
        policy=policy,
        context=ToolContext(workdir=tmp_path, allowed_roots=(tmp_path,), bash_timeout_s=120),
        memory=Memory(tmp_path / "memory.md") if memory else None,
    )
    return agent, db


def new_task(db: Database, n: int, body: str | None = None) -> Task:
    task = db.add_task(f"$e{n}", "!r:x", "@me:x", body or f"task {n}", n)
    assert task is not None
    return task


def test_a_request_has_at_most_four_breakpoints_memory_and_summary_included(
    tmp_path: Path,
) -> None:
    agent, db = make_agent(tmp_path, "")
    conversation = db.current_conversation()
    for message in turn(1) + turn(2):
        db.append_message(conversation, None, message["role"], message["content"])
    plain = agent._request(conversation)
    assert count_cache_control(vars(plain)) == 3
    assert plain.system[1]["text"].startswith("Your memory (memory.md) is empty")
    db.add_summary(conversation, db.transcript_rows(conversation)[3].id, "earlier: tea")
    compacted = agent._request(conversation)
    assert count_cache_control(vars(compacted)) == 4
    assert compacted.messages[0]["content"][0]["text"].startswith(SUMMARY_HEAD)
    assert len(compacted.messages) == 4  # summary + task 2 merged, call, result, answer


class Named:
    """A tool of the given name that does nothing (only its definition is sent)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "description": "a test tool", "input_schema": {"type": "object"}}

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return ToolResult.text(self.name)


class Listing:
    """A tool provider whose listing a test changes, announced as the MCP hub announces it."""

    def __init__(self, *names: str) -> None:
        self.names = list(names)
        self._watchers: list[Callable[[], None]] = []

    def watch(self, changed: Callable[[], None]) -> None:
        self._watchers.append(changed)

    def change(self, *names: str) -> None:
        self.names = list(names)
        for changed in self._watchers:
            changed()

    def definitions(self) -> list[dict[str, Any]]:
        return [Named(name).definition() for name in self.names]

    def provides(self, name: str) -> bool:
        return name in self.names

    async def run_tool(self, name: str, tool_input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return ToolResult.text(name)


def names_of(tools: list[dict[str, Any]]) -> list[str]:
    return [str(tool["name"]) for tool in tools]


def test_requests_send_one_tools_list_until_the_registry_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent, db = make_agent(tmp_path, "")
    registry = agent._tools
    asked: list[int] = []
    listed = registry.definitions
    monkeypatch.setattr(registry, "definitions", lambda: asked.append(1) or listed())
    conversation = db.current_conversation()
    db.append_message(conversation, None, "user", [{"type": "text", "text": "hi"}])
    first = agent._request(conversation).tools
    # The same list, not an equal one: the registry is not asked again.
    assert agent._request(conversation).tools is first and len(asked) == 1
    registry.add(Named("later"))
    grown = agent._request(conversation).tools
    assert names_of(grown) == [*names_of(first), "later"] and len(asked) == 2
    listing = Listing("mcp__p__a")
    registry.add_provider(listing)
    offered = agent._request(conversation).tools
    assert names_of(offered) == [*names_of(grown), "mcp__p__a"]
    assert agent._request(conversation).tools is offered and len(asked) == 3
    # A provider's change is seen at the very next request, never a request later.
    listing.change("mcp__p__a", "mcp__p__b")
    changed = agent._request(conversation).tools
    assert names_of(changed) == [*names_of(grown), "mcp__p__a", "mcp__p__b"]
    listing.change("mcp__p__b")
    assert names_of(agent._request(conversation).tools) == [*names_of(grown), "mcp__p__b"]
    assert len(asked) == 5
    # What was sent earlier is untouched by the later changes.
    assert names_of(first) == ["bash", "read", "write", "edit", "glob", "grep", "memory"]


async def test_every_request_carries_the_same_tools_bytes_until_a_tool_is_added(
    tmp_path: Path, fake_api: FakeMessagesAPI
) -> None:
    agent, db = make_agent(tmp_path, fake_api.url)
    fake_api.reply("one")
    fake_api.reply("two")
    await agent.answer(new_task(db, 1), FakeTaskIO())
    await agent.answer(new_task(db, 2), FakeTaskIO())
    agent._tools.add(Named("later"))
    fake_api.reply("three")
    await agent.answer(new_task(db, 3), FakeTaskIO())
    sent = [json.dumps(request.body["tools"]) for request in fake_api.requests]
    assert len(sent) == 3 and sent[0] == sent[1] != sent[2]
    assert names_of(fake_api.requests[2].body["tools"])[-1] == "later"


async def test_a_task_cancelled_as_the_last_turn_carries_on_with_the_retry_note(
    tmp_path: Path, fake_api: FakeMessagesAPI
) -> None:
    """`!retry` right after a `!cancel` (the task's turn is still the conversation's last)
    adds the retry note, not the note that asks for the rest of a cut reply: two notes of
    the agent once had the same name, in model.py and transcript.py."""
    agent, db = make_agent(tmp_path, fake_api.url)
    task = new_task(db, 1, "count the files")
    conversation = db.current_conversation()
    call = {"type": "tool_use", "id": "toolu_01", "name": "bash", "input": {"command": "ls"}}
    db.append_message(conversation, task.id, "user", [{"type": "text", "text": "count the files"}])
    db.append_message(conversation, task.id, "assistant", [call])
    db.append_message(conversation, task.id, "user", [error_result("toolu_01", CANCELLED_RESULT)])
    fake_api.reply("carried on")
    assert await agent.answer(task, FakeTaskIO()) == "carried on"
    [request] = fake_api.requests
    said = [b.get("text") for b in request.body["messages"][-1]["content"]]
    assert RETRIED_AFTER_CANCEL_NOTE in said and CONTINUE_NOTE not in said


def responder(summaries: list[str]) -> Any:
    """A scripted turn: summary requests get the next summary text, others an answer."""

    def turn(body: dict[str, Any]) -> dict[str, Any]:
        if body["system"][0]["text"].startswith(SUMMARY_MARK):
            summaries.append(body["messages"][0]["content"][0]["text"])
            return {"text": f"SUMMARY {len(summaries)}: tasks about lorem ipsum"}
        return {"text": f"answer {len(body['messages'])} " + "lorem ipsum " * 30}

    return turn


async def test_compaction_summarises_older_turns_and_keeps_the_store_whole(
    tmp_path: Path, fake_api: FakeMessagesAPI
) -> None:
    settings = AgentSection(
        model="claude-sonnet-4-5", max_tokens=1024, context_window=2_500, keep_recent_messages=2
    )
    agent, db = make_agent(tmp_path, fake_api.url, settings)
    asked: list[str] = []
    fake_api.script(*[responder(asked)] * 20)
    for n in range(1, 7):
        await agent.answer(new_task(db, n, f"task {n} " + "lorem ipsum " * 30), FakeTaskIO())
    bodies = [r.body for r in fake_api.requests]
    marks = [i for i, b in enumerate(bodies) if b["system"][0]["text"].startswith(SUMMARY_MARK)]
    assert len(marks) >= 2 and all("tools" not in bodies[i] for i in marks)
    # The second summary request carries the first summary forward.
    assert "SUMMARY 1" in asked[1]
    after = bodies[marks[-1] + 1]["messages"][0]["content"][0]
    assert after["text"].startswith(SUMMARY_HEAD) and f"SUMMARY {len(marks)}" in after["text"]
    sizes = [r.cache["prompt_tokens"] for i, r in enumerate(fake_api.requests) if i not in marks]
    assert max(sizes) < 2_500
    # The store keeps every message: 6 tasks of 2.
    assert len(db.transcript(db.current_conversation())) == 12
    summary = db.latest_summary(db.current_conversation())
    assert summary is not None and summary.text.startswith(f"SUMMARY {len(marks)}")


async def test_prompt_too_long_compacts_and_retries_exactly_once(
    tmp_path: Path, fake_api: FakeMessagesAPI
) -> None:
    agent, db = make_agent(
        tmp_path,
        fake_api.url,
        AgentSection(model="claude-sonnet-4-5", max_tokens=1024, keep_recent_messages=2),
    )
    fake_api.reply("first")
    await agent.answer(new_task(db, 1), FakeTaskIO())
    fake_api.fail(400, message="prompt is too long: 210000 tokens > 200000 maximum")
    fake_api.reply("the summary")
    fake_api.reply("second, after the retry")
    assert await agent.answer(new_task(db, 2), FakeTaskIO()) == "second, after the retry"
    assert [r.status for r in fake_api.requests] == [200, 400, 200, 200]
    assert fake_api.requests[2].body["system"][0]["text"].startswith(SUMMARY_MARK)
    fake_api.fail(400, message="prompt is too long", times=2)
    fake_api.reply("summary again")
    with pytest.raises(ContextTooLong) as refused:
        await agent.answer(new_task(db, 3), FakeTaskIO())
    assert "too long" in str(refused.value)


async def test_the_daily_budget_stops_requests_once_spent(
    tmp_path: Path, fake_api: FakeMessagesAPI
) -> None:
    agent, db = make_agent(
        tmp_path,
        fake_api.url,
        AgentSection(model="claude-sonnet-4-5", max_tokens=1024, daily_budget_usd=0.50),
    )
    db.record_usage(None, "claude-sonnet-4-5", {"input_tokens": 100_000, "output_tokens": 20_000})
    with pytest.raises(BudgetSpent) as spent:
        await agent.answer(new_task(db, 1), FakeTaskIO())
    assert spent.value.spent_usd == pytest.approx(0.6)
    assert fake_api.requests == []
    message = texts.access_refused(spent.value)
    assert "daily budget is spent" in message and "daily_budget_usd" in message
    assert "!resume" in message


async def test_thinking_is_sent_and_its_blocks_kept(
    tmp_path: Path, fake_api: FakeMessagesAPI
) -> None:
    agent, db = make_agent(
        tmp_path,
        fake_api.url,
        AgentSection(model="claude-sonnet-4-5", max_tokens=1024, thinking_budget=2048),
    )
    fake_api.reply("Let me look.", tools=[("bash", {"command": "echo hi"})], thinking="hmm")
    fake_api.reply("Done.")
    await agent.answer(new_task(db, 1), FakeTaskIO())
    first, second = (r.body for r in fake_api.requests)
    assert first["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert first["max_tokens"] == 1024 + 2048
    thought = second["messages"][1]["content"][0]
    assert thought["type"] == "thinking" and thought["signature"]


async def test_the_model_set_with_the_command_is_used_from_the_next_task(
    tmp_path: Path, fake_api: FakeMessagesAPI
) -> None:
    agent, db = make_agent(tmp_path, fake_api.url)
    assert await agent.model_exists("claude-haiku-4-5") is True
    assert await agent.model_exists("claude-nonsense-9") is False
    agent.set_model("claude-haiku-4-5")
    await agent.answer(new_task(db, 1), FakeTaskIO())
    agent.set_model(None)
    await agent.answer(new_task(db, 2), FakeTaskIO())
    assert [r.body["model"] for r in fake_api.requests if r.path == "/v1/messages"] == [
        "claude-haiku-4-5",
        "claude-sonnet-4-5",
    ]
    rows = db.usage_rows()
    assert [r.model for r in rows] == ["claude-haiku-4-5", "claude-sonnet-4-5"]


async def test_a_model_switch_changes_the_thinking_sent_from_the_next_task(
    tmp_path: Path, fake_api: FakeMessagesAPI
) -> None:
    # The request's thinking and output cap are worked out when the model is chosen; `!model`
    # must still change them, and a restart must find the owner's choice.
    settings = AgentSection(model="claude-sonnet-4-5", max_tokens=1024, thinking_budget=2048)
    agent, db = make_agent(tmp_path, fake_api.url, settings)
    await agent.answer(new_task(db, 1), FakeTaskIO())
    agent.set_model("claude-opus-5")
    assert agent.current_model() == "claude-opus-5"
    await agent.answer(new_task(db, 2), FakeTaskIO())
    first, second = (r.body for r in fake_api.requests if r.path == "/v1/messages")
    assert first["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert second["model"] == "claude-opus-5" and second["thinking"] == {"type": "adaptive"}
    assert first["max_tokens"] == second["max_tokens"] == 1024 + 2048
    db.close()
    again, _ = make_agent(tmp_path, fake_api.url, settings)
    assert again.current_model() == "claude-opus-5"


async def test_every_request_sends_the_same_tools_bytes_across_steps_and_tasks(
    tmp_path: Path, fake_api: FakeMessagesAPI
) -> None:
    # The tools open the cached prefix: one byte of difference and every request re-writes it.
    agent, db = make_agent(tmp_path, fake_api.url)
    fake_api.reply("Looking.", tools=[("bash", {"command": "echo hi"})])
    fake_api.reply("Done.")
    await agent.answer(new_task(db, 1), FakeTaskIO())
    agent.set_model("claude-haiku-4-5")
    await agent.answer(new_task(db, 2), FakeTaskIO())
    sent = [json.dumps(r.body["tools"]) for r in fake_api.requests if r.path == "/v1/messages"]
    assert len(sent) == 3 and len(set(sent)) == 1


@pytest.mark.parametrize(
    "model, budget, thinking, max_tokens",
    [
        ("claude-sonnet-4-5", 0, None, 1024),
        ("claude-sonnet-4-5", 2048, {"type": "enabled", "budget_tokens": 2048}, 3072),
        ("claude-sonnet-5-5", 2048, {"type": "adaptive"}, 3072),
        ("claude-opus-5", 0, None, 1024),
    ],
)
def test_a_models_plan_holds_its_thinking_and_output_cap(
    model: str, budget: int, thinking: dict[str, object] | None, max_tokens: int
) -> None:
    settings = AgentSection(model=model, max_tokens=1024, thinking_budget=budget)
    assert ModelPlan.of(model, settings) == ModelPlan(model, thinking, max_tokens)


class StillClock:
    """A clock that stays at one instant."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at

    async def wait_until(self, when: datetime | None, wake: Any) -> None:
        raise AssertionError("the agent never waits on the clock")


async def test_each_task_is_stamped_with_the_clocks_time_in_the_owners_zone(
    tmp_path: Path, fake_api: FakeMessagesAPI
) -> None:
    db = Database.open(tmp_path / "db.sqlite")
    agent = Agent(
        db,
        anthropic.AsyncAnthropic(base_url=fake_api.url, api_key="k", max_retries=0),
        settings=AgentSection(model="claude-sonnet-4-5", max_tokens=1024),
        system="You are a test.",
        tools=ToolRegistry(default_tools()),
        policy=Policy(allow=[], ask=[], deny=[], home=tmp_path, workdir=tmp_path),
        context=ToolContext(workdir=tmp_path, allowed_roots=(tmp_path,), bash_timeout_s=120),
        clock=StillClock(datetime(2026, 12, 5, 2, 30, tzinfo=UTC)),
        zone=ZoneInfo("Asia/Tokyo"),
    )
    await agent.answer(new_task(db, 1), FakeTaskIO())
    [request] = [r.body for r in fake_api.requests if r.path == "/v1/messages"]
    opening = request["messages"][0]["content"][-1]["text"]
    assert opening.startswith("[sent Sat 2026-12-05 11:30 JST]\ntask 1")


@pytest.mark.parametrize(
    "content, expected",
    [
        ([{"type": "text", "text": "plain"}], False),
        ([{"type": "text", "text": "plain", "citations": []}], False),
        ([{"type": "text", "text": "x", "citations": [{"url": "https://a.example"}]}], True),
        ([{"type": "web_search_tool_result", "content": []}, {"type": "text", "text": "x"}], True),
        ([{"type": "web_fetch_tool_result", "content": {}}], True),
        ([{"type": "tool_use", "name": "bash"}, {"type": "text", "text": "done"}], False),
    ],
)
def test_only_an_answer_that_cites_or_read_the_web_is_searched_for_sources(
    content: list[dict[str, Any]], expected: bool
) -> None:
    assert may_cite(content) is expected


async def test_a_plain_answer_is_not_searched_for_sources(
    tmp_path: Path, fake_api: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(content: object) -> list[web.Source]:
        raise AssertionError("a plain answer was searched for sources")

    monkeypatch.setattr(web, "sources", refuse)
    agent, db = make_agent(tmp_path, fake_api.url)
    fake_api.reply("Just words.")
    assert await agent.answer(new_task(db, 1), FakeTaskIO()) == "Just words."


def test_config_rejects_a_thinking_budget_below_the_minimum() -> None:
    with pytest.raises(ValueError, match="at least 1024"):
        AgentSection(thinking_budget=500)
    assert AgentSection(context_window=3000).compact_above == 2100


def test_today_is_counted_from_local_midnight(tmp_path: Path) -> None:
    from dispatch_matrix.agent import usage

    db = Database.open(tmp_path / "db.sqlite")
    db.record_usage(None, "claude-haiku-4-5", {"input_tokens": 1_000_000})
    assert usage.today(db, datetime.now(UTC)).cost_usd == pytest.approx(1.0)
    assert usage.last_days(db, datetime.now(UTC)).requests == 1
