"""The engine against the strict stand-in, in-process: API errors sorted by kind wherever
they arrive, streams that break midway, and every stop reason — continued, compacted,
resumed, declined or reported as cut."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import anthropic
import pytest
from fake_messages_api import FakeMessagesAPI
from harness.taskio import FakeTaskIO

from dispatch_matrix.agent import (
    Agent,
    AnswerCut,
    ContextTooLong,
    Memory,
    ModelAccessError,
    ModelDeclined,
    ModelOutage,
    RequestTooLarge,
    StreamCut,
)
from dispatch_matrix.agent import model as api
from dispatch_matrix.agent.errors import kind_of
from dispatch_matrix.agent.model import CONTINUE_NOTE, DECLINED_MARK, Step, judge
from dispatch_matrix.agent.transcript import MEDIA_LEFT_OUT
from dispatch_matrix.agent.usage import cost
from dispatch_matrix.app.config import AgentSection
from dispatch_matrix.core.errors import ModelError
from dispatch_matrix.permissions.policy import Policy
from dispatch_matrix.store import Database, Task
from dispatch_matrix.toolbox.base import ToolContext
from dispatch_matrix.toolbox.registry import ToolRegistry, default_tools

MODEL = "claude-sonnet-5-5"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 200


def settings(**changes: Any) -> AgentSection:
    """The [agent] section these tests run with."""
    return AgentSection(model=MODEL, max_tokens=1024, **changes)


def make_agent(
    tmp_path: Path, fake: FakeMessagesAPI, settings: AgentSection | None = None, retries: int = 0
) -> tuple[Agent, Database]:
    db = Database.open(tmp_path / "db.sqlite")
    client = anthropic.AsyncAnthropic(base_url=fake.url, api_key="k", max_retries=retries)
    policy = Policy(allow=["Bash(echo:*)"], ask=[], deny=[], home=tmp_path, workdir=tmp_path)
    agent = Agent(
        db,
        client,
        settings=settings or AgentSection(model=MODEL, max_tokens=1024),
        system="You are a test.",
        tools=ToolRegistry(default_tools()),
        policy=policy,
        context=ToolContext(workdir=tmp_path, allowed_roots=(tmp_path,), bash_timeout_s=120),
        memory=Memory(tmp_path / "memory.md"),
    )
    return agent, db


def new_task(db: Database, n: int, body: str | None = None, **extra: Any) -> Task:
    task = db.add_task(f"$e{n}", "!r:x", "@me:x", body or f"task {n}", n, **extra)
    assert task is not None
    return task


def last_user_text(body: dict[str, Any]) -> str:
    return "".join(
        b.get("text", "") for b in body["messages"][-1]["content"] if b.get("type") == "text"
    )


# ---- errors by kind --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, error_type, code, message, kind",
    [
        (529, "overloaded_error", None, "Overloaded", ModelOutage),
        (200, "overloaded_error", None, "Overloaded", ModelOutage),
        (200, "api_error", None, "Internal server error", ModelOutage),
        (500, "api_error", None, "", ModelOutage),
        (503, None, None, "", ModelOutage),
        (429, "rate_limit_error", None, "slow down", ModelOutage),
        (429, "rate_limit_error", "enforced_spend_limit_reached", "", ModelAccessError),
        (401, "authentication_error", None, "invalid x-api-key", ModelAccessError),
        (403, "permission_error", None, "", ModelAccessError),
        (402, "billing_error", None, "", ModelAccessError),
        (
            400,
            "invalid_request_error",
            None,
            "Your credit balance is too low to access",
            ModelAccessError,
        ),
        (413, "request_too_large", None, "Request exceeds the maximum", RequestTooLarge),
        (
            400,
            "invalid_request_error",
            None,
            "prompt is too long: 210 tokens > 200 maximum",
            ContextTooLong,
        ),
        (
            400,
            "invalid_request_error",
            None,
            "input length and `max_tokens` exceed context limit: 1 + 2 > 3",
            ContextTooLong,
        ),
        # Words about a context or a credit do not make a kind: only the shapes above do.
        (
            400,
            "invalid_request_error",
            None,
            "tool_use ids must be unique in this context",
            ModelError,
        ),
        (400, "invalid_request_error", None, "the credit balance field is unknown", ModelError),
        (404, "not_found_error", None, "model: claude-x", ModelError),
    ],
)
def test_an_api_error_is_sorted_by_its_type_and_status(
    status: int, error_type: str | None, code: str | None, message: str, kind: type
) -> None:
    assert kind_of(status, error_type, code, message) is kind


async def no_sleep(_seconds: float) -> None:
    pass


async def ask_once(client: anthropic.AsyncAnthropic, sleep: Any = no_sleep) -> Any:
    return await api.request(
        client,
        model=MODEL,
        max_tokens=64,
        system=[],
        messages=[{"role": "user", "content": "hi"}],
        tools=[],
        sleep=sleep,
    )


@pytest.mark.parametrize("mode", ["error", "disconnect"])
async def test_a_stream_broken_midway_is_asked_again_and_its_partial_text_dropped(
    fake_api: FakeMessagesAPI, mode: str
) -> None:
    fake_api.fail_midstream(text="PARTIAL words that must not survive", after_events=5, mode=mode)
    fake_api.reply("The whole answer.")
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    client = anthropic.AsyncAnthropic(base_url=fake_api.url, api_key="k", max_retries=2)
    reply = await ask_once(client, sleep)
    await client.close()
    assert [b.text for b in reply.content] == ["The whole answer."]
    assert [r.status for r in fake_api.requests] == [200, 200]
    assert len(waits) == 1 and 0.35 <= waits[0] <= 0.5  # the SDK's first backoff


async def test_a_stream_that_keeps_breaking_is_an_outage(fake_api: FakeMessagesAPI) -> None:
    for _ in range(3):
        fake_api.fail_midstream(after_events=4, error_type="api_error")
    client = anthropic.AsyncAnthropic(base_url=fake_api.url, api_key="k", max_retries=2)
    with pytest.raises(StreamCut) as cut:
        await ask_once(client)
    await client.close()
    assert isinstance(cut.value, ModelOutage)
    assert "api_error" in cut.value.message and "streamed answer" in cut.value.message
    assert len(fake_api.requests) == 3  # the first try and the SDK's budget of 2


@pytest.mark.parametrize(
    "status, error_type, code, kind",
    [
        (401, None, None, ModelAccessError),
        (402, None, None, ModelAccessError),
        (429, "rate_limit_error", "enforced_spend_limit_reached", ModelAccessError),
        (413, None, None, RequestTooLarge),
        (529, None, None, ModelOutage),
    ],
)
async def test_http_errors_reach_the_engine_as_their_kind(
    fake_api: FakeMessagesAPI, status: int, error_type: str | None, code: str | None, kind: type
) -> None:
    fake_api.fail(status, error_type=error_type, error_code=code)
    client = anthropic.AsyncAnthropic(base_url=fake_api.url, api_key="k", max_retries=0)
    with pytest.raises(kind):
        await ask_once(client)
    await client.close()


# ---- stop reasons, decided ---------------------------------------------------------------------

TEXT = {"type": "text", "text": "half an"}
CALL = {"type": "tool_use", "id": "t1", "name": "write", "input": {"file_path": "x"}}


@pytest.mark.parametrize(
    "stop, content, continued, step",
    [
        ("end_turn", [TEXT], 0, Step.ANSWER),
        ("stop_sequence", [TEXT], 0, Step.ANSWER),
        ("tool_use", [TEXT, CALL], 0, Step.TOOLS),
        ("tool_use", [TEXT], 0, Step.ANSWER),
        ("max_tokens", [TEXT], 0, Step.CONTINUE),
        ("max_tokens", [TEXT], 2, Step.CUT),
        ("max_tokens", [TEXT, CALL], 0, Step.CONTINUE),
        ("model_context_window_exceeded", [TEXT], 1, Step.COMPACT),
        ("pause_turn", [TEXT], 5, Step.RESUME),
        ("refusal", [TEXT], 0, Step.DECLINED),
        (None, [TEXT], 0, Step.ANSWER),
        ("a_reason_from_the_future", [TEXT], 0, Step.ANSWER),
    ],
)
def test_each_stop_reason_decides_the_next_step(
    stop: str | None, content: list[dict[str, Any]], continued: int, step: Step
) -> None:
    verdict = judge(stop, content, continued, 2)
    assert verdict.step is step
    assert all(b["type"] != "tool_use" for b in verdict.keep) or step is Step.TOOLS


def test_a_cut_reply_keeps_no_tool_call_nor_unsigned_thinking() -> None:
    unsigned = {"type": "thinking", "thinking": "so", "signature": ""}
    verdict = judge("max_tokens", [unsigned, TEXT, CALL], 0, 2)
    assert verdict.keep == [TEXT]
    assert verdict.dropped_calls == 1
    assert verdict.note is not None and "was not run" in verdict.note[0]["text"]
    assert judge("max_tokens", [CALL], 0, 2).keep == []


# ---- stop reasons, through the engine ------------------------------------------------------------


async def test_max_tokens_is_continued_and_the_parts_make_one_answer(
    tmp_path: Path, fake_api: FakeMessagesAPI
) -> None:
    agent, db = make_agent(tmp_path, fake_api)
    fake_api.stop_with("max_tokens", "The first half of the answer, and ")
    fake_api.stop_with("max_tokens", "the second half, ")
    fake_api.reply("and its end.")
    answer = await agent.answer(new_task(db, 1), FakeTaskIO())
    assert answer == "The first half of the answer, and the second half, and its end."
    second = fake_api.requests[1].body
    assert second["messages"][-2]["content"][0]["text"] == "The first half of the answer, and "
    assert last_user_text(second) == CONTINUE_NOTE
    assert [r.status for r in fake_api.requests] == [200, 200, 200]


async def test_an_answer_still_cut_after_the_continuations_is_reported_as_cut(
    tmp_path: Path, fake_api: FakeMessagesAPI
) -> None:
    agent, db = make_agent(tmp_path, fake_api, settings(max_continuations=1))
    fake_api.stop_with("max_tokens", "Part one, ")
    fake_api.stop_with("max_tokens", "part two")
    with pytest.raises(AnswerCut) as cut:
        await agent.answer(new_task(db, 1), FakeTaskIO())
    assert cut.value.partial == "Part one, part two"
    assert "output limit" in cut.value.message and "max_tokens = 1024" in cut.value.message
    assert cut.value.message.endswith("Part one, part two")
    # The conversation stays valid for the next task.
    fake_api.reply("Fine.")
    assert await agent.answer(new_task(db, 2), FakeTaskIO()) == "Fine."
    assert "ended unfinished" in str(fake_api.requests[-1].body["messages"][-1])


async def test_a_tool_call_cut_by_max_tokens_is_never_run(
    tmp_path: Path, fake_api: FakeMessagesAPI
) -> None:
    agent, db = make_agent(tmp_path, fake_api)
    target = tmp_path / "notes.txt"
    big = {"file_path": str(target), "content": "a long text " * 50}
    fake_api.reply("Writing the notes.", tools=[("write", big)], stop_reason="max_tokens")
    fake_api.reply("Done, in two parts.")
    io = FakeTaskIO()
    assert await agent.answer(new_task(db, 1), io) == "Writing the notes.Done, in two parts."
    assert io.asked == [] and io.shown == [] and not target.exists()
    second = fake_api.requests[1].body
    assert "was not run" in last_user_text(second)
    assert all(b.get("type") != "tool_use" for m in second["messages"] for b in m["content"])


async def test_a_refusal_tells_the_owner_and_keeps_the_conversation_valid(
    tmp_path: Path, fake_api: FakeMessagesAPI
) -> None:
    agent, db = make_agent(tmp_path, fake_api)
    fake_api.stop_with("refusal", "I will not PARTIAL")
    with pytest.raises(ModelDeclined) as declined:
        await agent.answer(new_task(db, 1), FakeTaskIO())
    assert "declined" in declined.value.message and "refusal" in declined.value.message
    fake_api.reply("Something else, gladly.")
    assert await agent.answer(new_task(db, 2), FakeTaskIO()) == "Something else, gladly."
    sent = fake_api.requests[1].body["messages"]
    assert sent[1]["content"][0]["text"] == DECLINED_MARK
    assert "PARTIAL" not in str(sent)


async def test_a_retried_task_that_ended_unfinished_is_tried_again(
    tmp_path: Path, fake_api: FakeMessagesAPI
) -> None:
    agent, db = make_agent(tmp_path, fake_api)
    task = new_task(db, 1)
    fake_api.stop_with("refusal", "No.")
    with pytest.raises(ModelDeclined):
        await agent.answer(task, FakeTaskIO())
    fake_api.reply("Done this time.")
    assert await agent.answer(task, FakeTaskIO()) == "Done this time."
    retried = fake_api.requests[-1].body["messages"]
    assert "try that task again" in retried[-1]["content"][-1]["text"]


async def test_pause_turn_sends_the_turn_back_and_the_model_goes_on(
    tmp_path: Path, fake_api: FakeMessagesAPI
) -> None:
    agent, db = make_agent(tmp_path, fake_api)
    searching = {"type": "server_tool_use", "name": "web_search", "input": {"query": "tide"}}
    fake_api.script({"content": ["Searching.", searching], "stop_reason": "pause_turn"})
    fake_api.reply("High tide is at noon.")
    # One turn, paused and resumed: the answer is all of its text.
    answer = await agent.answer(new_task(db, 1), FakeTaskIO())
    assert answer == "Searching.\n\nHigh tide is at noon."
    second = fake_api.requests[1].body["messages"]
    assert second[-1]["role"] == "assistant"
    assert [b["type"] for b in second[-1]["content"]] == ["text", "server_tool_use"]


async def test_a_full_context_window_mid_reply_compacts_and_goes_on(
    tmp_path: Path, fake_api: FakeMessagesAPI
) -> None:
    agent, db = make_agent(tmp_path, fake_api, settings(keep_recent_messages=2))
    for n in range(3):
        fake_api.reply(f"Answer {n}.")
        await agent.answer(new_task(db, n), FakeTaskIO())
    fake_api.stop_with("model_context_window_exceeded", "The start, ")
    fake_api.reply("SUMMARY: three tasks.")
    fake_api.reply("and the rest.")
    answer = await agent.answer(new_task(db, 9), FakeTaskIO())
    assert answer == "The start, and the rest."
    summary_request, goes_on = (r.body for r in fake_api.requests[4:6])
    assert "tools" not in summary_request
    assert "SUMMARY: three tasks." in goes_on["messages"][0]["content"][0]["text"]
    assert "context window was full" in last_user_text(goes_on)


async def test_a_413_leaves_attachments_out_and_retries_once(
    tmp_path: Path, fake_api: FakeMessagesAPI
) -> None:
    agent, db = make_agent(tmp_path, fake_api)
    picture = tmp_path / "photo.png"
    picture.write_bytes(PNG)
    attachments = [{"path": str(picture), "mimetype": "image/png", "size": len(PNG)}]
    task = new_task(db, 1, "what is in it?", attachments=attachments)
    fake_api.fail(413)
    fake_api.reply("Checking.", tools=[("bash", {"command": "echo hi"})])
    fake_api.reply("A picture, I think.")
    assert await agent.answer(task, FakeTaskIO()) == "A picture, I think."
    first, retry, after = (r.body for r in fake_api.requests)
    assert [r.status for r in fake_api.requests] == [413, 200, 200]
    assert first["messages"][0]["content"][0]["type"] == "image"
    for body in (retry, after):  # lean for the rest of the task
        head = body["messages"][0]["content"][0]
        assert head == {"type": "text", "text": MEDIA_LEFT_OUT.format(kind="Image")}
    # The store keeps the image.
    assert db.task_messages(task.id)[0]["content"][0]["type"] == "image"
    assert base64.b64decode(db.task_messages(task.id)[0]["content"][0]["source"]["data"]) == PNG


async def test_a_second_413_fails_with_a_clear_reason(
    tmp_path: Path, fake_api: FakeMessagesAPI
) -> None:
    agent, db = make_agent(tmp_path, fake_api)
    fake_api.fail(413, times=2)
    with pytest.raises(RequestTooLarge) as refused:
        await agent.answer(new_task(db, 1), FakeTaskIO())
    assert "too large" in refused.value.message and "!new" in refused.value.message
    assert len(fake_api.requests) == 2


# ---- what a cache write costs ------------------------------------------------------------------


def test_one_hour_cache_writes_cost_twice_the_input_price() -> None:
    five = cost(MODEL, 0, 0, cache_write=1_000_000)
    hour = cost(MODEL, 0, 0, cache_write=1_000_000, cache_write_1h=1_000_000)
    read = cost(MODEL, 0, 0, cache_read=1_000_000)
    assert (five, hour, read) == (pytest.approx(2.5), pytest.approx(4.0), pytest.approx(0.2))


# ---- cache lifetimes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "strategy, system_ttl, tail_ttl",
    [("1h", "1h", "1h"), ("mix", "1h", None), ("5m", None, None)],
)
def test_each_cache_strategy_puts_its_lifetimes_on_the_breakpoints(
    tmp_path: Path,
    fake_api: FakeMessagesAPI,
    strategy: str,
    system_ttl: str | None,
    tail_ttl: str | None,
) -> None:
    agent, db = make_agent(tmp_path, fake_api, settings(cache_ttl=strategy))
    conversation = db.current_conversation()
    db.append_message(conversation, None, "user", [{"type": "text", "text": "hi"}])
    request = agent._request(conversation)
    assert [b["cache_control"].get("ttl") for b in request.system] == [system_ttl] * 2
    assert request.messages[-1]["content"][-1]["cache_control"].get("ttl") == tail_ttl


def test_the_default_cache_lifetime_is_the_cheapest_measured() -> None:
    import json

    results = Path(__file__).parents[1] / "tools/bench/results/day_cost.json"
    assert AgentSection().cache_ttl == json.loads(results.read_text())["cheapest"] == "1h"
