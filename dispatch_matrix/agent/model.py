"""One request to the Messages API, streamed, with its failures sorted by what they mean.

The SDK already retries 429, 5xx, 529 and dropped connections with backoff that honours
`retry-after`. What is left after its retries is classified here, because each kind asks
for a different answer from the queue: wait for the API (outage), stop and ask the owner
to fix something (auth, credit), shrink the context (too long), or fail the task.
"""

from __future__ import annotations

from typing import Any

import anthropic
from anthropic.types import Message

from ..errors import ModelError


class ModelOutage(ModelError):
    """The API is overloaded or unreachable beyond the retry budget; try again later."""


class ModelAccessError(ModelError):
    """The key is rejected or the credit is spent: retrying will not help."""


class ContextTooLong(ModelError):
    """The request does not fit the model's context window."""


def _message_of(err: anthropic.APIStatusError) -> str:
    body = err.body if isinstance(err.body, dict) else None
    if body and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", err.message))
    return str(err.message)


async def request(
    client: anthropic.AsyncAnthropic,
    *,
    model: str,
    max_tokens: int,
    system: list[dict[str, Any]],
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
) -> Message:
    """Stream one model response to its end and return it; raises a ModelError kind."""
    kwargs: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "system": system,
        "messages": messages,
    }
    if tools:
        kwargs["tools"] = tools
    try:
        async with client.messages.stream(**kwargs) as stream:
            return await stream.get_final_message()
    except anthropic.APIStatusError as err:
        text = _message_of(err)
        status = err.status_code
        if status in (401, 403) or "credit balance" in text.lower():
            raise ModelAccessError(f"the Messages API refused access ({status}): {text}") from err
        if status == 400 and ("too long" in text.lower() or "context" in text.lower()):
            raise ContextTooLong(f"the conversation no longer fits the model: {text}") from err
        if status in (429, 500, 502, 503, 504, 529):
            raise ModelOutage(f"the Messages API is unavailable ({status}): {text}") from err
        raise ModelError(f"the Messages API answered {status}: {text}") from err
    except anthropic.APIConnectionError as err:
        raise ModelOutage(f"the Messages API could not be reached ({err})") from err
