"""One request to the Messages API, streamed, with its failures sorted by what they mean.

The SDK retries 429, 5xx, 529 and refused connections with backoff that honours
`retry-after` — but only until the response starts. A stream that began with HTTP 200 can
still break: an SSE `error` event (`overloaded_error`, `api_error`) or a connection cut
midway. Those are retried here, from the start of the request, with the same budget and
the same backoff as the SDK's own; what streamed before the break is dropped. What is left
after the retries is classified (see `errors.py`), because each kind asks for a different
answer from the queue: wait for the API (outage), stop and ask the owner to fix something
(auth, credit), shrink the request (too long, too large), or fail the task.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import anthropic
import httpx2
from anthropic.lib.streaming import AsyncMessageStreamManager
from anthropic.types import Message, RawMessageStreamEvent

from .. import logs
from ..errors import ModelError
from . import wire
from .errors import (
    AgentFailure,
    AnswerCut,
    BudgetSpent,
    ContextTooLong,
    ModelAccessError,
    ModelDeclined,
    ModelOutage,
    ModelUnreachable,
    RequestTooLarge,
    StreamCut,
    described,
    error_fields,
    kind_of,
)

log = logs.get(__name__)

__all__ = [
    "AgentFailure",
    "AnswerCut",
    "BudgetSpent",
    "ContextTooLong",
    "ModelAccessError",
    "ModelDeclined",
    "ModelOutage",
    "ModelUnreachable",
    "RequestTooLarge",
    "StreamCut",
    "classify",
    "exists",
    "reachable",
    "request",
    "usage_counts",
]

# The SDK's own backoff (anthropic._constants): 0.5 s doubling to 8 s, minus up to 25 %.
_FIRST_DELAY_S = 0.5
_MAX_DELAY_S = 8.0

Sleep = Callable[[float], Awaitable[None]]


def classify(err: Exception) -> ModelError:
    """The ModelError an SDK or transport failure stands for."""
    if isinstance(err, anthropic.APIStatusError):
        error_type, code, text = error_fields(err.body)
        status = err.status_code
        kind = kind_of(status, error_type, code, text)
        if status == 200 and issubclass(kind, ModelOutage):
            kind = StreamCut
        return kind(described(kind, status, error_type, text or str(err.message)))
    if isinstance(err, anthropic.APIConnectionError):
        return ModelUnreachable(f"the Messages API could not be reached ({err.message})")
    if isinstance(err, httpx2.TransportError):
        name = err.__class__.__name__
        return StreamCut(f"the connection to the Messages API broke mid-answer ({name})")
    return ModelError(f"the Messages API call failed ({err.__class__.__name__}: {err})")


def _midstream(err: Exception) -> bool:
    """Whether a failure broke a stream the SDK had already begun (so it did not retry)."""
    if isinstance(err, anthropic.APIStatusError):
        return err.status_code == 200
    return isinstance(err, httpx2.TransportError)


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (0-based), as the SDK would."""
    return min(_FIRST_DELAY_S * 2.0**attempt, _MAX_DELAY_S) * (1 - 0.25 * random.random())


async def request(
    client: anthropic.AsyncAnthropic,
    *,
    model: str,
    max_tokens: int,
    system: list[dict[str, Any]],
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    thinking: dict[str, Any] | None = None,
    sleep: Sleep = asyncio.sleep,
    messages_json: str | None = None,
) -> Message:
    """Stream one model response to its end and return it; raises a ModelError kind.

    `messages_json` is `messages` already serialised (`wire.Pieces`): then the body goes to
    the SDK as ready bytes, which it neither walks nor copies."""
    kwargs: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "system": system,
        "messages": messages,
    }
    if tools:
        kwargs["tools"] = tools
    if thinking:
        kwargs["thinking"] = thinking
    retries = max(0, int(getattr(client, "max_retries", 0)))
    attempt = 0
    while True:
        try:
            async with _stream(client, kwargs, messages_json) as stream:
                return await stream.get_final_message()
        except (anthropic.APIError, httpx2.TransportError) as err:
            failure = classify(err)
            if not (_midstream(err) and isinstance(failure, StreamCut)) or attempt >= retries:
                raise failure from err
            wait = backoff(attempt)
            log.warning(
                "model.stream_broken", error=failure.message, retry=attempt + 1, wait_s=wait
            )
            attempt += 1
            await sleep(wait)


def _stream(
    client: anthropic.AsyncAnthropic, kwargs: dict[str, Any], messages_json: str | None
) -> AsyncMessageStreamManager[Any]:
    """The SDK's stream of one request: `messages.stream`'s, or with `messages_json` the
    same POST with the body as bytes (the SDK adds its usual headers, retries and timeout)."""
    if messages_json is None:
        return client.messages.stream(**kwargs)
    fields = {key: value for key, value in kwargs.items() if key != "messages"}
    fields["stream"] = True
    opened = client.post(
        "/v1/messages",
        cast_to=Message,
        content=wire.body(fields, messages_json),
        options={"headers": {"Content-Type": "application/json"}},
        stream=True,
        stream_cls=anthropic.AsyncStream[RawMessageStreamEvent],
    )
    return AsyncMessageStreamManager(opened)


def usage_counts(reply: Message) -> dict[str, int]:
    """A reply's token counts (input, output, cache writes and reads) as plain ints; the
    1-hour cache writes also as `cache_write_1h`."""
    usage = reply.usage.model_dump(exclude_none=True) if reply.usage else {}
    counts = {k: int(v) for k, v in usage.items() if isinstance(v, int)}
    split = usage.get("cache_creation")
    if isinstance(split, dict) and isinstance(split.get("ephemeral_1h_input_tokens"), int):
        counts["cache_write_1h"] = int(split["ephemeral_1h_input_tokens"])
    return counts


async def exists(client: anthropic.AsyncAnthropic, name: str) -> bool | None:
    """Whether the API knows a model id or alias; None when it cannot tell right now."""
    try:
        await client.with_options(timeout=15.0, max_retries=1).models.retrieve(name)
    except anthropic.NotFoundError:
        return False
    except (anthropic.APIStatusError, anthropic.APIConnectionError):
        return None
    return True


async def reachable(client: anthropic.AsyncAnthropic) -> bool:
    """Whether the API answers at all right now: one read of the model catalogue (no tokens,
    no retries). Any answer but a 5xx or a 429 counts: what is wrong past that (a key, a
    credit) the next real request reports in its own words."""
    try:
        await client.with_options(timeout=10.0, max_retries=0).models.list(limit=1)
    except anthropic.APIStatusError as err:
        return err.status_code < 500 and err.status_code != 429
    except anthropic.APIConnectionError:
        return False
    return True
