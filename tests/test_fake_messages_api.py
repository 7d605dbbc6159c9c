"""Tests for tools/fake_messages_api.py, driven through the real ``anthropic`` SDK."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import fake_messages_api  # noqa: E402
from fake_messages_api import FakeMessagesAPI  # noqa: E402

MODEL = "claude-haiku-4-5"
TOOLS_DIR = Path(__file__).resolve().parents[1] / "tools"


@pytest.fixture
def fake() -> Iterator[FakeMessagesAPI]:
    with FakeMessagesAPI() as server:
        yield server


@pytest.fixture
async def aclient(fake: FakeMessagesAPI) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=fake.url, api_key="fake", max_retries=0)
    yield client
    await client.close()


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def tool(name: str) -> dict[str, Any]:
    """A tool definition: the service refuses tool blocks in a request that defines none."""
    return {"name": name, "description": f"the {name} tool", "input_schema": {"type": "object"}}


# ---- plain replies ---------------------------------------------------------------------------


async def test_non_streaming_text(fake: FakeMessagesAPI, aclient: anthropic.AsyncAnthropic) -> None:
    fake.reply("Hello from the fake")
    message = await aclient.messages.create(model=MODEL, max_tokens=64, messages=user("hi"))
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello from the fake"
    assert message.role == "assistant"
    assert message.model == MODEL
    assert message.stop_reason == "end_turn"
    assert message.id.startswith("msg_")
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0
    assert message.usage.cache_read_input_tokens == 0

    (request,) = fake.requests
    assert request.path == "/v1/messages"
    assert request.status == 200
    assert request.body["messages"] == user("hi")
    assert request.size_bytes > 0
    assert "anthropic-version" in request.headers
    assert "fake" in (request.headers.get("x-api-key") or request.headers.get("authorization"))
    assert request.usage["input_tokens"] == message.usage.input_tokens
    assert fake.pending_turns == 0


async def test_streaming_text(fake: FakeMessagesAPI, aclient: anthropic.AsyncAnthropic) -> None:
    text = "The quick brown fox jumps over the lazy dog, and then some more words follow."
    fake.reply(text)
    async with aclient.messages.stream(model=MODEL, max_tokens=64, messages=user("go")) as stream:
        chunks = [chunk async for chunk in stream.text_stream]
        final = await stream.get_final_message()
    assert len(chunks) >= 3
    assert "".join(chunks) == text
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == fake.requests[0].usage["output_tokens"]
    assert final.usage.input_tokens == fake.requests[0].usage["input_tokens"]
    assert fake.requests[0].body["stream"] is True


async def test_create_stream_true_event_sequence(
    fake: FakeMessagesAPI, aclient: anthropic.AsyncAnthropic
) -> None:
    fake.reply("abcdefghij")
    stream = await aclient.messages.create(
        model=MODEL, max_tokens=64, messages=user("go"), stream=True
    )
    kinds = [event.type async for event in stream]
    assert kinds[0] == "message_start"
    assert kinds[1] == "content_block_start"
    assert kinds.count("content_block_delta") >= 3
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


async def test_tool_use_streamed(fake: FakeMessagesAPI, aclient: anthropic.AsyncAnthropic) -> None:
    tool_input = {
        "path": "notes/today.txt",
        "options": {"lines": [1, 2, 3], "unicode": "héllo ✓", "quote": 'say "hi"'},
    }
    fake.reply("Let me look.", tools=[("read_file", tool_input)])
    partials = []
    async with aclient.messages.stream(model=MODEL, max_tokens=64, messages=user("go")) as stream:
        async for event in stream:
            if event.type == "input_json":
                partials.append(event.partial_json)
        final = await stream.get_final_message()
    assert len(partials) >= 3
    assert json.loads("".join(partials)) == tool_input
    assert final.stop_reason == "tool_use"
    text, tool = final.content
    assert text.type == "text" and text.text == "Let me look."
    assert tool.type == "tool_use"
    assert tool.name == "read_file"
    assert tool.input == tool_input
    assert tool.id.startswith("toolu_")


async def test_thinking_streamed(fake: FakeMessagesAPI, aclient: anthropic.AsyncAnthropic) -> None:
    fake.reply("42.", thinking="First, consider the question. Then answer it briefly.")
    thoughts = []
    async with aclient.messages.stream(model=MODEL, max_tokens=64, messages=user("?")) as stream:
        async for event in stream:
            if event.type == "thinking":
                thoughts.append(event.thinking)
        final = await stream.get_final_message()
    assert len(thoughts) >= 2
    thinking, text = final.content
    assert thinking.type == "thinking"
    assert thinking.thinking == "First, consider the question. Then answer it briefly."
    assert thinking.signature
    assert text.text == "42."


async def test_web_search_blocks_and_citations_streamed(
    fake: FakeMessagesAPI, aclient: anthropic.AsyncAnthropic
) -> None:
    from fake_web_search import search_turn

    results = [("https://a.example/x", "A"), ("https://b.example/y", "B")]
    fake.script(search_turn("q", results, [("cited", [1, 0])], stop_reason="pause_turn"))
    async with aclient.messages.stream(model=MODEL, max_tokens=64, messages=user("hi")) as s:
        message = await s.get_final_message()
    kinds = [block.type for block in message.content]
    assert kinds == ["text", "server_tool_use", "web_search_tool_result", "text"]
    use = message.content[1]
    assert use.type == "server_tool_use" and use.input == {"query": "q"}
    assert use.id.startswith("srvtoolu_")
    found = message.content[2]
    assert found.type == "web_search_tool_result"
    assert [r.url for r in found.content] == ["https://a.example/x", "https://b.example/y"]
    cited = message.content[3]
    assert cited.type == "text" and cited.text == "cited"
    assert [c.url for c in cited.citations or []] == ["https://b.example/y", "https://a.example/x"]
    assert message.stop_reason == "pause_turn"


def test_sync_client_tool_loop_with_callable_turn(fake: FakeMessagesAPI) -> None:
    client = anthropic.Anthropic(base_url=fake.url, api_key="fake", max_retries=0)
    fake.reply(tools=[{"name": "clock", "input": {}, "id": "toolu_fixed"}])

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        result = body["messages"][-1]["content"][0]
        return {"text": f"The tool said: {result['content']}"}

    fake.script(answer)
    messages: list[dict[str, Any]] = user("what time is it?")
    tools = [tool("clock")]
    first = client.messages.create(model=MODEL, max_tokens=64, messages=messages, tools=tools)
    assert first.stop_reason == "tool_use"
    assert first.content[0].id == "toolu_fixed"
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_fixed", "content": "noon"}],
        },
    ]
    second = client.messages.create(model=MODEL, max_tokens=64, messages=messages, tools=tools)
    assert second.content[0].text == "The tool said: noon"
    client.close()


# ---- errors and retries ----------------------------------------------------------------------


async def test_overloaded_twice_then_success(fake: FakeMessagesAPI) -> None:
    fake.fail(529, times=2)
    fake.reply("finally")
    client = anthropic.AsyncAnthropic(base_url=fake.url, api_key="fake", max_retries=2)
    message = await client.messages.create(model=MODEL, max_tokens=64, messages=user("hi"))
    await client.close()
    assert message.content[0].text == "finally"
    log = fake.wait_for_requests(3)
    assert [r.status for r in log] == [529, 529, 200]
    assert [r.headers.get("x-stainless-retry-count") for r in log] == ["0", "1", "2"]
    assert [r.usage for r in log[:2]] == [{}, {}]
    assert all(r.body == log[0].body for r in log)


async def test_retry_after_honoured(fake: FakeMessagesAPI) -> None:
    fake.fail(429, retry_after=0.25)
    fake.reply("after the wait")
    client = anthropic.AsyncAnthropic(base_url=fake.url, api_key="fake", max_retries=1)
    message = await client.messages.create(model=MODEL, max_tokens=64, messages=user("hi"))
    await client.close()
    assert message.content[0].text == "after the wait"
    log = fake.requests
    assert [r.status for r in log] == [429, 200]
    assert log[0].at <= log[1].at


async def test_error_exhausts_retries(fake: FakeMessagesAPI) -> None:
    fake.fail(529, times=2)
    client = anthropic.AsyncAnthropic(base_url=fake.url, api_key="fake", max_retries=1)
    with pytest.raises(anthropic.InternalServerError) as caught:
        await client.messages.create(model=MODEL, max_tokens=64, messages=user("hi"))
    await client.close()
    assert caught.value.status_code == 529
    assert caught.value.type == "overloaded_error"
    assert len(fake.requests) == 2


async def test_bad_request_surfaces(fake: FakeMessagesAPI) -> None:
    fake.fail(400, message="prompt is too long: 250000 tokens > 200000 maximum")
    client = anthropic.AsyncAnthropic(base_url=fake.url, api_key="fake", max_retries=2)
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(model=MODEL, max_tokens=64, messages=user("hi"))
    await client.close()
    assert "prompt is too long" in caught.value.message
    assert caught.value.type == "invalid_request_error"
    assert len(fake.requests) == 1  # 400s are not retried


async def test_require_key() -> None:
    with FakeMessagesAPI(require_key="sekrit") as fake:
        wrong = anthropic.AsyncAnthropic(base_url=fake.url, api_key="nope", max_retries=2)
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await wrong.messages.create(model=MODEL, max_tokens=64, messages=user("hi"))
        await wrong.close()
        assert caught.value.type == "authentication_error"
        right = anthropic.AsyncAnthropic(base_url=fake.url, api_key="sekrit")
        message = await right.messages.create(model=MODEL, max_tokens=64, messages=user("hi"))
        await right.close()
        assert message.content[0].text == "echo: hi"
        async with aiohttp.ClientSession() as http:
            response = await http.post(f"{fake.url}/v1/messages", json={})
            assert response.status == 401
            assert (await response.json())["error"]["type"] == "authentication_error"
        assert [r.status for r in fake.requests] == [401, 200, 401]


async def test_invalid_requests_rejected_without_using_turns(
    fake: FakeMessagesAPI, aclient: anthropic.AsyncAnthropic
) -> None:
    fake.reply("unused")
    dangling = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "x", "input": {}}],
        },
        {"role": "user", "content": "no result here"},
    ]
    with pytest.raises(anthropic.BadRequestError) as caught:
        await aclient.messages.create(
            model=MODEL, max_tokens=64, messages=dangling, tools=[tool("x")]
        )
    assert "toolu_1" in caught.value.message and "tool_result" in caught.value.message

    cc = {"type": "ephemeral"}
    too_many = [{"type": "text", "text": f"part {i}", "cache_control": cc} for i in range(5)]
    with pytest.raises(anthropic.BadRequestError) as caught:
        await aclient.messages.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": too_many}]
        )
    assert "maximum of 4 blocks with cache_control" in caught.value.message
    assert fake.pending_turns == 1
    assert [r.status for r in fake.requests] == [400, 400]


async def test_midstream_error_event(
    fake: FakeMessagesAPI, aclient: anthropic.AsyncAnthropic
) -> None:
    fake.fail_midstream(text="a partial answer that will be cut off", after_events=5)
    received = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with aclient.messages.stream(model=MODEL, max_tokens=64, messages=user("x")) as s:
            async for chunk in s.text_stream:
                received.append(chunk)
    assert received  # some text arrived before the failure
    assert caught.value.body["error"]["type"] == "overloaded_error"
    assert fake.requests[0].status == 200


async def test_midstream_disconnect(
    fake: FakeMessagesAPI, aclient: anthropic.AsyncAnthropic
) -> None:
    fake.fail_midstream(mode="disconnect", after_events=4)
    # A cut inside a streamed 200 is not retried by the SDK: reading the opened stream
    # raises (the SDK's APIConnectionError today, its HTTP library's error before 2.17),
    # never an HTTP status; the engine asks again (tests/test_engine_stops.py).
    received = []
    async with aclient.messages.stream(model=MODEL, max_tokens=64, messages=user("x")) as s:
        with pytest.raises(Exception) as cut:  # noqa: B017 - its class is the SDK's choice
            async for chunk in s.text_stream:
                received.append(chunk)
    assert not isinstance(cut.value, anthropic.APIStatusError)
    fake.fail_midstream(mode="disconnect")
    with pytest.raises(anthropic.APIConnectionError):
        await aclient.messages.create(model=MODEL, max_tokens=64, messages=user("x"))
    assert [r.status for r in fake.requests] == [200, 0]
    # the server is still healthy afterwards
    message = await aclient.messages.create(model=MODEL, max_tokens=64, messages=user("ok?"))
    assert message.content[0].text == "echo: ok?"


# ---- default responder -----------------------------------------------------------------------


async def test_the_echo_stops_at_max_tokens_as_the_service_does(
    aclient: anthropic.AsyncAnthropic,
) -> None:
    # A summary request echoed whole would be longer than the summary it asks for.
    long = "turn " * 2000
    message = await aclient.messages.create(model=MODEL, max_tokens=50, messages=user(long))
    assert message.stop_reason == "max_tokens"
    assert message.content[0].text.startswith("echo: turn turn")
    assert len(message.content[0].text) < 200
    assert message.usage.output_tokens <= 50
    async with aclient.messages.stream(
        model=MODEL, max_tokens=50, messages=user("é" * 1000)
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens <= 50
    short = await aclient.messages.create(model=MODEL, max_tokens=50, messages=user("hi"))
    assert short.stop_reason == "end_turn" and short.content[0].text == "echo: hi"


async def test_default_echo_responder(aclient: anthropic.AsyncAnthropic) -> None:
    message = await aclient.messages.create(
        model=MODEL, max_tokens=64, messages=user("hello there")
    )
    assert message.content[0].text == "echo: hello there"
    blocks = [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]
    message = await aclient.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": blocks}]
    )
    assert message.content[0].text == "echo: second"
    conversation = [
        {"role": "user", "content": "run it"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_9", "name": "run", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "done"}],
        },
    ]
    message = await aclient.messages.create(
        model=MODEL, max_tokens=64, messages=conversation, tools=[tool("run")]
    )
    assert "only tool results" in message.content[0].text
    assert "toolu_9" in message.content[0].text


# ---- prompt cache accounting -----------------------------------------------------------------


def _cached_request(system: str, turns: list[str], ttl: str | None = None) -> dict[str, Any]:
    cc: dict[str, Any] = {"type": "ephemeral"} | ({"ttl": ttl} if ttl else {})
    messages: list[dict[str, Any]] = []
    for i, text in enumerate(turns):
        if i:
            messages.append({"role": "assistant", "content": f"echo: {turns[i - 1]}"})
        messages.append({"role": "user", "content": [{"type": "text", "text": text}]})
    messages[-1]["content"][0]["cache_control"] = cc
    return {
        "model": MODEL,
        "max_tokens": 64,
        "system": [{"type": "text", "text": system, "cache_control": cc}],
        "messages": messages,
    }


async def test_cache_accounting(fake: FakeMessagesAPI, aclient: anthropic.AsyncAnthropic) -> None:
    # Haiku 4.5 caches prefixes of 4096 tokens and more: ~18 kB, ~4400 tokens.
    system = "You are a careful assistant. " * 600
    first = await aclient.messages.create(**_cached_request(system, ["first question"]))
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation_input_tokens > 4096
    assert first.usage.input_tokens == 0  # everything is before the last breakpoint

    second = await aclient.messages.create(
        **_cached_request(system, ["first question", "second question"])
    )
    assert second.usage.cache_read_input_tokens >= first.usage.cache_creation_input_tokens
    assert 0 < second.usage.cache_creation_input_tokens < 100

    report = fake.cache_report()
    assert [r["index"] for r in report] == [0, 1]
    assert report[0]["share"] == 0
    assert report[1]["share"] > 0.8
    assert report[1]["cached_prefix_bytes"] <= report[1]["input_bytes"]
    assert report[1]["cache_read_input_tokens"] == second.usage.cache_read_input_tokens

    # A different system prompt shares nothing.
    other = await aclient.messages.create(**_cached_request("Other. " * 50, ["first question"]))
    assert other.usage.cache_read_input_tokens == 0

    # Entries expire after 5 minutes of (simulated) idleness ...
    fake.advance_clock(301)
    third = await aclient.messages.create(
        **_cached_request(system, ["first question", "second question"])
    )
    assert third.usage.cache_read_input_tokens == 0
    assert third.usage.cache_creation_input_tokens > 4096
    assert fake.cache_report()[-1]["share"] > 0.8  # the structural share ignores TTLs

    # ... while 1 hour entries survive that, and are reported as such.
    one_hour = _cached_request("Hourly. " + system, ["an hour"], ttl="1h")
    written = await aclient.messages.create(**one_hour)
    assert written.usage.cache_creation.ephemeral_1h_input_tokens > 4096
    fake.advance_clock(301)
    read = await aclient.messages.create(**one_hour)
    assert read.usage.cache_read_input_tokens == written.usage.cache_creation_input_tokens


async def test_cache_totals_are_consistent(
    fake: FakeMessagesAPI, aclient: anthropic.AsyncAnthropic
) -> None:
    request = _cached_request("System prompt. " * 1200, ["q1", "q2", "q3"])
    counted = await aclient.messages.count_tokens(
        model=MODEL, system=request["system"], messages=request["messages"]
    )
    for _ in range(2):
        message = await aclient.messages.create(**request)
        usage = message.usage
        total = (
            usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
        )
        assert total == counted.input_tokens
    assert message.usage.cache_creation_input_tokens == 0  # identical prompt: all read
    assert fake.cache_report()[-1]["share"] == 1.0


# ---- in-flight requests, waiting, models -----------------------------------------------------


async def test_gate_holds_reply_and_await_requests(
    fake: FakeMessagesAPI, aclient: anthropic.AsyncAnthropic
) -> None:
    gate = threading.Event()
    fake.script({"text": "released", "gate": gate})
    task = asyncio.create_task(
        aclient.messages.create(model=MODEL, max_tokens=64, messages=user("wait"))
    )
    (request,) = await fake.await_requests(1)
    assert request.body["messages"] == user("wait")
    assert not task.done()
    gate.set()
    message = await task
    assert message.content[0].text == "released"


def test_wait_for_requests_times_out(fake: FakeMessagesAPI) -> None:
    with pytest.raises(TimeoutError):
        fake.wait_for_requests(1, timeout=0.05)


async def test_await_requests_times_out(fake: FakeMessagesAPI) -> None:
    with pytest.raises(TimeoutError):
        await fake.await_requests(1, timeout=0.05)


async def test_models_and_count_tokens(
    fake: FakeMessagesAPI, aclient: anthropic.AsyncAnthropic
) -> None:
    page = await aclient.models.list()
    ids = [model.id for model in page.data]
    assert {"claude-sonnet-5-5", "claude-sonnet-4-5", "claude-haiku-4-5"} <= set(ids)
    assert ids[0] == "claude-sonnet-5-5"  # newest first
    # Retired models are listed only when asked for.
    assert "claude-opus-4-1" not in ids
    retired = await aclient.models.list(lifecycle=["retired"])
    assert [m.id for m in retired.data] == ["claude-opus-4-1"]
    model = await aclient.models.retrieve("claude-opus-4-1")
    assert model.display_name == "Claude Opus 4.1" and model.lifecycle == "retired"
    with pytest.raises(anthropic.NotFoundError):
        await aclient.models.retrieve("claude-nonexistent")
    counted = await aclient.messages.count_tokens(model=MODEL, messages=user("count me"))
    assert counted.input_tokens > 0
    assert [r.path for r in fake.requests] == ["/v1/messages/count_tokens"]
    assert [r.path for r in fake.model_requests] == [
        "/v1/models",
        "/v1/models",
        "/v1/models/claude-opus-4-1",
        "/v1/models/claude-nonexistent",
    ]


def test_malformed_turns_are_rejected(fake: FakeMessagesAPI) -> None:
    with pytest.raises(ValueError):
        fake.script({"txt": "typo"})
    with pytest.raises(ValueError):
        fake.script({"type": "stream_failure", "mode": "explode"})
    with pytest.raises(ValueError):
        fake.script({"content": [{"type": "tool_use", "input": {}}]})
    assert fake.pending_turns == 0


# ---- HTTP surface ----------------------------------------------------------------------------


async def test_http_control_endpoints(
    fake: FakeMessagesAPI, aclient: anthropic.AsyncAnthropic
) -> None:
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            f"{fake.url}/_fake/script",
            json=[{"text": "via http"}, {"status": 529, "error_type": "overloaded_error"}],
        )
        assert response.status == 200
        assert (await response.json()) == {"pending": 2}
        assert fake.pending_turns == 2

        message = await aclient.messages.create(model=MODEL, max_tokens=64, messages=user("a"))
        assert message.content[0].text == "via http"
        with pytest.raises(anthropic.InternalServerError):
            await aclient.messages.create(model=MODEL, max_tokens=64, messages=user("b"))

        logged = await (await http.get(f"{fake.url}/_fake/requests")).json()
        assert [r["status"] for r in logged] == [200, 529]
        assert logged[0]["body"]["messages"] == user("a")
        assert logged[0]["usage"]["output_tokens"] > 0
        report = await (await http.get(f"{fake.url}/_fake/cache_report")).json()
        assert len(report) == 2

        bad = await http.post(f"{fake.url}/_fake/script", json=[{"bogus": 1}])
        assert bad.status == 400

        reset = await http.post(f"{fake.url}/_fake/reset")
        assert (await reset.json()) == {"ok": True}
        assert fake.requests == []
        assert fake.pending_turns == 0


async def test_http_error_shapes_and_sse(fake: FakeMessagesAPI) -> None:
    async with aiohttp.ClientSession() as http:
        missing = await http.get(f"{fake.url}/v1/nothing-here")
        assert missing.status == 404
        body = await missing.json()
        assert body["type"] == "error"
        assert body["error"]["type"] == "not_found_error"

        broken = await http.post(
            f"{fake.url}/v1/messages",
            data=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert broken.status == 400
        assert (await broken.json())["error"]["type"] == "invalid_request_error"

        fake.fail(429, retry_after=2, should_retry=True)
        limited = await http.post(
            f"{fake.url}/v1/messages",
            json={"model": MODEL, "max_tokens": 5, "messages": user("x")},
        )
        assert limited.status == 429
        assert limited.headers["retry-after"] == "2"
        assert limited.headers["x-should-retry"] == "true"
        assert (await limited.json())["error"]["type"] == "rate_limit_error"

        streamed = await http.post(
            f"{fake.url}/v1/messages",
            json={"model": MODEL, "max_tokens": 5, "messages": user("x"), "stream": True},
        )
        assert streamed.headers["content-type"].startswith("text/event-stream")
        events = [
            line.split(": ", 1)[1]
            for line in (await streamed.text()).splitlines()
            if line.startswith("event: ")
        ]
        assert events[:2] == ["message_start", "ping"]
        assert events[-2:] == ["message_delta", "message_stop"]

    log = fake.requests
    assert [(r.path, r.status) for r in log] == [
        ("/v1/nothing-here", 404),
        ("/v1/messages", 400),
        ("/v1/messages", 429),
        ("/v1/messages", 200),
    ]
    assert log[1].size_bytes == len(b"{not json")
    assert log[1].body == {}


def test_cli_serves_script_and_stops_on_sigterm(tmp_path: Path) -> None:
    script = tmp_path / "turns.json"
    script.write_text(json.dumps([{"text": "from the script file"}]))
    process = subprocess.Popen(
        [
            sys.executable,
            str(TOOLS_DIR / "fake_messages_api.py"),
            "--port",
            "0",
            "--quiet",
            "--script",
            str(script),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        url = first_line.split(" on ", 1)[1].split()[0]
        env_lines = [process.stdout.readline() for _ in range(3)]
        assert any(f"ANTHROPIC_BASE_URL={url} ANTHROPIC_API_KEY=fake" in line for line in env_lines)
        client = anthropic.Anthropic(base_url=url, api_key="fake", max_retries=0)
        message = client.messages.create(model=MODEL, max_tokens=64, messages=user("hi"))
        assert message.content[0].text == "from the script file"
        client.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_module_exports() -> None:
    assert fake_messages_api.FakeMessagesAPI is FakeMessagesAPI
    assert {m["id"] for m in fake_messages_api.MODELS} >= {"claude-haiku-4-5"}


async def test_cache_lookback_window() -> None:
    """With ``cache_lookback=20`` an entry more than 20 blocks before every breakpoint is missed,
    as on the real API; the default (unbounded) rule still finds it."""
    base = _cached_request("Lookback. " * 1800, ["start"])  # over Haiku's 4096 tokens
    base["system"][0].pop("cache_control")  # a single breakpoint, on the last message
    extended = json.loads(json.dumps(base))
    del extended["messages"][-1]["content"][0]["cache_control"]
    for i in range(15):  # 15 tool round trips = 30 more blocks
        call = {"type": "tool_use", "id": f"toolu_{i}", "name": "step", "input": {"i": i}}
        result = {"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": "ok"}
        extended["messages"] += [
            {"role": "assistant", "content": [call]},
            {"role": "user", "content": [result]},
        ]
    extended["messages"][-1]["content"][0]["cache_control"] = {"type": "ephemeral"}
    base["tools"] = extended["tools"] = [tool("step")]
    reads = []
    for lookback in (None, 20):
        with FakeMessagesAPI(cache_lookback=lookback) as fake:
            client = anthropic.AsyncAnthropic(base_url=fake.url, api_key="fake")
            await client.messages.create(**base)
            message = await client.messages.create(**extended)
            await client.close()
            reads.append(message.usage.cache_read_input_tokens)
    assert reads[0] > 500
    assert reads[1] == 0


async def test_stopped_it_refuses_connections_and_started_again_serves_the_same_url(
    fake: FakeMessagesAPI, aclient: anthropic.AsyncAnthropic
) -> None:
    url = fake.url
    fake.reply("before")
    await aclient.messages.create(model=MODEL, max_tokens=50, messages=user("hi"))
    fake.stop()
    with pytest.raises(anthropic.APIConnectionError):
        await aclient.messages.create(model=MODEL, max_tokens=50, messages=user("hi"))
    fake.start()
    assert fake.url == url
    fake.reply("after")
    reply = await aclient.messages.create(model=MODEL, max_tokens=50, messages=user("hi"))
    assert reply.content[0].type == "text" and reply.content[0].text == "after"
    assert [r.status for r in fake.requests] == [200, 200], "the log is kept across the gap"
