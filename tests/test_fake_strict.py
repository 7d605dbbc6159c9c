"""The stand-in is as strict as the service by default, and each rule can be loosened for one
test: the cache's minimum prefix and lookback, signed thinking, tool pairing, images, the
context window, the body size, models; every stop reason and error shape scriptable."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import pytest
from fake_messages_api import LOOSE, FakeMessagesAPI, Strictness
from fakeapi.models import min_cache_tokens
from fakeapi.turns import STOP_REASONS

SONNET = "claude-sonnet-4-6"
HAIKU = "claude-haiku-4-5"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


@pytest.fixture
def fake() -> Iterator[FakeMessagesAPI]:
    with FakeMessagesAPI() as server:
        yield server


@pytest.fixture
async def client(fake: FakeMessagesAPI) -> AsyncIterator[anthropic.AsyncAnthropic]:
    api = anthropic.AsyncAnthropic(base_url=fake.url, api_key="fake", max_retries=0)
    yield api
    await api.close()


def tool(name: str = "step") -> dict[str, Any]:
    return {"name": name, "description": name, "input_schema": {"type": "object"}}


def call(call_id: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": "step", "input": {}}


def result(call_id: str, said: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": call_id, "content": said, "is_error": True}


def text(said: str) -> dict[str, Any]:
    return {"type": "text", "text": said}


def cached(model: str, words: int) -> dict[str, Any]:
    """A request whose system prompt (about `words` tokens) carries a breakpoint."""
    system = [{"type": "text", "text": "word " * words, "cache_control": {"type": "ephemeral"}}]
    return {
        "model": model,
        "max_tokens": 64,
        "system": system,
        "messages": [{"role": "user", "content": "hi"}],
    }


# ---- the cache ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, minimum",
    [
        ("claude-sonnet-4-6", 1024),
        ("claude-sonnet-5-5", 1024),
        ("claude-haiku-4-5", 4096),
        ("claude-haiku-4-5-20251001", 4096),
        ("claude-opus-4-6", 4096),
        ("claude-opus-4-1", 1024),
        ("claude-opus-5-5", 512),
        ("claude-unknown-9", 4096),
    ],
)
def test_minimum_cacheable_prefix_by_family(model: str, minimum: int) -> None:
    assert min_cache_tokens(model) == minimum


async def test_a_prefix_below_the_family_minimum_is_not_cached(
    client: anthropic.AsyncAnthropic,
) -> None:
    # "word " is 5 bytes: 2000 words are about 2500 tokens — over Sonnet's 1024, under
    # Haiku's 4096.
    for model, cached_tokens in ((SONNET, True), (HAIKU, False)):
        await client.messages.create(**cached(model, 2000))
        again = await client.messages.create(**cached(model, 2000))
        assert (again.usage.cache_read_input_tokens > 2000) is cached_tokens, model


async def test_the_minimum_is_loosened_per_test() -> None:
    with FakeMessagesAPI(cache_min_tokens=0) as fake:
        api = anthropic.AsyncAnthropic(base_url=fake.url, api_key="k", max_retries=0)
        await api.messages.create(**cached(HAIKU, 50))
        again = await api.messages.create(**cached(HAIKU, 50))
        await api.close()
    assert again.usage.cache_read_input_tokens > 0
    assert FakeMessagesAPI().strict.cache_lookback == 20


# ---- thinking ---------------------------------------------------------------------------------


async def thought(fake: FakeMessagesAPI, client: anthropic.AsyncAnthropic) -> list[dict[str, Any]]:
    """One reply with a thinking block, as the blocks to send back."""
    fake.script({"content": [{"type": "thinking", "thinking": "Let me think."}, "Answer."]})
    message = await client.messages.create(
        model=SONNET, max_tokens=64, messages=[{"role": "user", "content": "q"}]
    )
    return [block.model_dump(exclude_none=True) for block in message.content]


def follow_up(content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "model": SONNET,
        "max_tokens": 64,
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": content},
            {"role": "user", "content": "and?"},
        ],
    }


async def test_a_thinking_block_sent_back_unaltered_is_accepted_an_altered_one_refused(
    fake: FakeMessagesAPI, client: anthropic.AsyncAnthropic
) -> None:
    content = await thought(fake, client)
    assert content[0]["signature"]
    await client.messages.create(**follow_up(content))
    altered = [{**content[0], "thinking": "Let me think twice."}, content[1]]
    with pytest.raises(anthropic.BadRequestError) as refused:
        await client.messages.create(**follow_up(altered))
    assert refused.value.type == "invalid_request_error"
    assert "Invalid `signature` in `thinking` block" in str(refused.value.api_message)
    assert "messages.1.content.0" in str(refused.value.api_message)
    made_up = [{"type": "thinking", "thinking": "x", "signature": "c2lnbmF0dXJl"}, content[1]]
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.create(**follow_up(made_up))
    cached_thought = [{**content[0], "cache_control": {"type": "ephemeral"}}, content[1]]
    with pytest.raises(anthropic.BadRequestError, match="cannot be cached"):
        await client.messages.create(**follow_up(cached_thought))


async def test_redacted_thinking_must_come_back_as_it_was(
    fake: FakeMessagesAPI, client: anthropic.AsyncAnthropic
) -> None:
    fake.script({"content": [{"type": "redacted_thinking"}, "Answer."]})
    message = await client.messages.create(
        model=SONNET, max_tokens=64, messages=[{"role": "user", "content": "q"}]
    )
    content = [block.model_dump(exclude_none=True) for block in message.content]
    await client.messages.create(**follow_up(content))
    tampered = [{**content[0], "data": content[0]["data"][:-4] + "AAAA"}, content[1]]
    with pytest.raises(anthropic.BadRequestError, match="redacted_thinking"):
        await client.messages.create(**follow_up(tampered))


async def test_signatures_can_be_loosened() -> None:
    with FakeMessagesAPI(strict=Strictness(signatures=False)) as fake:
        api = anthropic.AsyncAnthropic(base_url=fake.url, api_key="k", max_retries=0)
        made_up = [
            {"type": "thinking", "thinking": "x", "signature": "bogus"},
            {"type": "text", "text": "ok"},
        ]
        await api.messages.create(**follow_up(made_up))
        await api.close()


# ---- the shapes the service refuses -------------------------------------------------------------


def image(data: bytes, media_type: str = "image/png") -> dict[str, Any]:
    encoded = base64.b64encode(data).decode()
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": media_type, "data": encoded},
    }


@pytest.mark.parametrize(
    "body, status, says",
    [
        (
            {
                "messages": [
                    {"role": "user", "content": "go"},
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t1", "name": "step", "input": {}}],
                    },
                ],
            },
            400,
            "must define tools",
        ),
        (
            {
                "tools": [tool()],
                "messages": [
                    {"role": "user", "content": "go"},
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "tool_use", "id": "t1", "name": "step", "input": {}},
                            {"type": "tool_use", "id": "t1", "name": "step", "input": {}},
                        ],
                    },
                ],
            },
            400,
            "ids must be unique",
        ),
        # The body a `!retry` of a task cancelled mid-call used to send (issue 28): the call
        # answered in the next message, then once more after a later turn.
        (
            {
                "tools": [tool()],
                "messages": [
                    {"role": "user", "content": "run it"},
                    {"role": "assistant", "content": [call("t1")]},
                    {"role": "user", "content": [result("t1", "cancelled"), text("anything")]},
                    {"role": "assistant", "content": [text("echo: anything")]},
                    {"role": "user", "content": [result("t1", "interrupted")]},
                ],
            },
            400,
            "messages.4.content.0: unexpected `tool_use_id` found in `tool_result` blocks: t1.",
        ),
        # Two results for one call in the same message.
        (
            {
                "tools": [tool()],
                "messages": [
                    {"role": "user", "content": "run it"},
                    {"role": "assistant", "content": [call("t1")]},
                    {"role": "user", "content": [result("t1", "a"), result("t1", "b")]},
                ],
            },
            400,
            "messages.2.content.1: unexpected `tool_use_id` found in `tool_result` blocks: t1.",
        ),
        (
            {
                "tools": [tool()],
                "messages": [
                    {"role": "user", "content": "run it"},
                    {"role": "assistant", "content": [call("t1")]},
                    {"role": "user", "content": [text("anything")]},
                ],
            },
            400,
            "messages.2: `tool_use` ids were found without `tool_result` blocks immediately "
            "after: t1.",
        ),
        (
            {"messages": [{"role": "user", "content": [image(b"\xff\xd8\xff" + b"\0" * 9)]}]},
            400,
            "does not match the provided media type image/png",
        ),
        (
            {"messages": [{"role": "user", "content": [image(PNG + b"\0" * 5_300_000)]}]},
            400,
            "image exceeds 5 MB maximum",
        ),
        ({"model": "claude-opus-4-1"}, 404, "model: claude-opus-4-1"),
        ({"model": "claude-nonexistent"}, 404, "model: claude-nonexistent"),
        (
            {"model": "claude-opus-4-5", "max_tokens": 100_000},
            400,
            "maximum allowed number of output tokens",
        ),
        (
            {"model": "claude-sonnet-5-5", "thinking": {"type": "enabled", "budget_tokens": 2048}},
            400,
            "adaptive",
        ),
        (
            {
                "system": [
                    {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
                    {
                        "type": "text",
                        "text": "b",
                        "cache_control": {"type": "ephemeral", "ttl": "1h"},
                    },
                ]
            },
            400,
            "may not follow one with ttl '5m'",
        ),
        (
            {"messages": [{"role": "user", "content": "word " * 170_000}]},
            400,
            "prompt is too long: ",
        ),
    ],
)
async def test_what_the_service_refuses_the_stand_in_refuses(
    fake: FakeMessagesAPI,
    client: anthropic.AsyncAnthropic,
    body: dict[str, Any],
    status: int,
    says: str,
) -> None:
    request = {
        "model": SONNET,
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "hi"}],
        **body,
    }
    fake.reply("never sent")
    with pytest.raises(anthropic.APIStatusError) as refused:
        # An explicit timeout: the SDK refuses large max_tokens without streaming otherwise.
        await client.messages.create(**request, timeout=30)
    assert refused.value.status_code == status
    assert says in str(refused.value.api_message)
    assert fake.pending_turns == 1  # a refused request uses no turn


async def test_a_body_over_the_size_limit_gets_a_413() -> None:
    with FakeMessagesAPI(strict=Strictness(max_body_bytes=20_000)) as fake:
        api = anthropic.AsyncAnthropic(base_url=fake.url, api_key="k", max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as refused:
            await api.messages.create(
                model=SONNET, max_tokens=64, messages=[{"role": "user", "content": "x" * 30_000}]
            )
        await api.close()
    assert refused.value.status_code == 413
    assert refused.value.type == "request_too_large"


async def test_everything_can_be_loosened_at_once() -> None:
    with FakeMessagesAPI(strict=LOOSE) as fake:
        api = anthropic.AsyncAnthropic(base_url=fake.url, api_key="k", max_retries=0)
        message = await api.messages.create(
            model="claude-anything", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
        await api.close()
    assert message.content[0].text == "echo: hi"  # type: ignore[union-attr]


# ---- what can be scripted ------------------------------------------------------------------------


@pytest.mark.parametrize("reason", STOP_REASONS)
async def test_every_stop_reason_can_be_scripted_and_streams(
    fake: FakeMessagesAPI, client: anthropic.AsyncAnthropic, reason: str
) -> None:
    content: list[Any] = ["Some text."]
    if reason == "tool_use":
        content.append({"type": "tool_use", "name": "step", "input": {"n": 1}})
    fake.script({"content": content, "stop_reason": reason})
    async with client.messages.stream(
        model=SONNET, max_tokens=64, messages=[{"role": "user", "content": "go"}], tools=[tool()]
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == reason


async def test_a_tool_call_cut_by_max_tokens_streams_incomplete(
    fake: FakeMessagesAPI, client: anthropic.AsyncAnthropic
) -> None:
    """As on the service: the SDK parses what arrived, so the call looks valid but lacks
    the end of its input. It must never be run."""
    whole = {"path": "notes.txt", "text": "a long text " * 20}
    fake.reply("Writing.", tools=[("write", whole)], stop_reason="max_tokens")
    async with client.messages.stream(
        model=SONNET,
        max_tokens=64,
        messages=[{"role": "user", "content": "go"}],
        tools=[tool("write")],
    ) as stream:
        final = await stream.get_final_message()
    call = final.content[-1]
    assert final.stop_reason == "max_tokens"
    assert call.type == "tool_use" and call.input != whole


async def test_an_error_code_travels_in_the_error_details(
    fake: FakeMessagesAPI, client: anthropic.AsyncAnthropic
) -> None:
    fake.fail(429, error_type="rate_limit_error", error_code="enforced_spend_limit_reached")
    with pytest.raises(anthropic.RateLimitError) as refused:
        await client.messages.create(
            model=SONNET, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.error_code == "enforced_spend_limit_reached"


async def test_a_cut_connection_breaks_the_opened_stream_and_is_not_retried_by_the_sdk(
    fake: FakeMessagesAPI, client: anthropic.AsyncAnthropic
) -> None:
    """Measured: a cut inside a 200 stream is raised while the stream is read, never as an
    HTTP status, and the SDK does not ask again. Its type changed between releases (2.15:
    the HTTP library's transport error; 2.17: `APIConnectionError`), so the engine tells a
    cut by where it is raised (`agent/model.py`), not by its class."""
    fake.fail_midstream(mode="disconnect", after_events=5, text="partial words here")
    async with client.messages.stream(
        model=SONNET, max_tokens=64, messages=[{"role": "user", "content": "go"}]
    ) as stream:
        with pytest.raises(Exception) as cut:  # noqa: B017 - its class is the SDK's choice
            await stream.get_final_message()
    assert not isinstance(cut.value, anthropic.APIStatusError)
    assert [r.status for r in fake.requests] == [200]


async def test_the_models_api_pages(client: anthropic.AsyncAnthropic) -> None:
    ids = [model.id async for model in client.models.list(limit=3)]
    listed = await client.models.list(limit=3)
    assert len(listed.data) == 3 and listed.has_more
    assert len(ids) == len(set(ids)) > 3
    assert "claude-opus-4-1" not in ids  # retired
