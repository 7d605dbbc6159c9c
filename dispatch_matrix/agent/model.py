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


class BudgetSpent(ModelAccessError):
    """Today's model cost reached [agent] daily_budget_usd: no request until it is raised,
    or tomorrow."""

    def __init__(self, spent_usd: float, budget_usd: float) -> None:
        super().__init__(
            f"the daily budget is spent: today's model cost ${spent_usd:.2f} has reached "
            f"[agent] daily_budget_usd = {budget_usd:.2f}. To go on today, raise "
            "daily_budget_usd in the config file (0 means no limit) and restart dispatch-matrix; "
            "otherwise wait until tomorrow. Then send `!resume`"
        )
        self.spent_usd = spent_usd
        self.budget_usd = budget_usd


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
    thinking: dict[str, Any] | None = None,
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
    if thinking:
        kwargs["thinking"] = thinking
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


def usage_counts(reply: Message) -> dict[str, int]:
    """A reply's token counts (input, output, cache writes and reads) as plain ints."""
    usage = reply.usage.model_dump(exclude_none=True) if reply.usage else {}
    return {k: int(v) for k, v in usage.items() if isinstance(v, int)}


async def exists(client: anthropic.AsyncAnthropic, name: str) -> bool | None:
    """Whether the API knows a model id or alias; None when it cannot tell right now."""
    try:
        await client.with_options(timeout=15.0, max_retries=1).models.retrieve(name)
    except anthropic.NotFoundError:
        return False
    except (anthropic.APIStatusError, anthropic.APIConnectionError):
        return None
    return True
