"""The model call and what its reply says: one request to the Messages API, streamed, with
its failures sorted by what they mean; then what the reply's stop reason asks the loop to
do next (a pure decision, table-tested).

The SDK retries 429, 5xx, 529 and refused connections with backoff that honours
`retry-after` — but only until the response starts. A stream that began with HTTP 200 can
still break: an SSE `error` event (`overloaded_error`, `api_error`) or a connection cut
midway. Those are retried here, from the start of the request, with the same budget and
the same backoff as the SDK's own; what streamed before the break is dropped. What is left
after the retries is classified (see `agent/errors.py`), because each kind asks for a different
answer from the queue: wait for the API (outage), stop and ask the owner to fix something
(auth, credit), shrink the request (too long, too large), or fail the task.

A reply that arrives ends with a `stop_reason`; only `end_turn` (and `stop_sequence`) mean
"this is the answer". The others (`judge`):

- `tool_use`: run the calls and send their results.
- `max_tokens`: the output limit cut the reply. Ask for the rest, up to
  `max_continuations` times; a tool call it was writing is incomplete and never run.
- `model_context_window_exceeded`: the context window filled while the model wrote.
  Compact the older turns, then ask for the rest, as for `max_tokens`.
- `pause_turn`: the API paused a long turn (server tools); send it back as it is and the
  model goes on.
- `refusal`: the model declined. Its partial output is dropped and the owner is told.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anthropic
from anthropic.types import Message

from dispatch_matrix.agent.errors import (
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
from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import ModelError

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
    "CONTEXT_NOTE",
    "CONTINUE_NOTE",
    "DECLINED_MARK",
    "DROPPED_CALLS_NOTE",
    "ENDED_NOTE",
    "NextMove",
    "Step",
    "Turn",
    "classify",
    "complete_blocks",
    "exists",
    "joined",
    "judge",
    "raw_text",
    "reachable",
    "request",
    "usage_counts",
]

# The SDK's own backoff (anthropic._constants): 0.5 s doubling to 8 s, minus up to 25 %.
_FIRST_DELAY_S = 0.5
_MAX_DELAY_S = 8.0

Sleep = Callable[[float], Awaitable[None]]

# Where the SDK's HTTP stack lives (its transport errors carry these module names).
_HTTP_LIBRARIES = frozenset({"httpx", "httpx2", "httpcore", "httpcore2", "h11", "anyio"})


def classify(err: Exception, *, midstream: bool = False) -> ModelError:
    """The ModelError an SDK failure stands for. `midstream`: it broke a stream that had
    begun (HTTP 200 and its first events), which the SDK never retries itself."""
    if isinstance(err, anthropic.APIStatusError):
        error_type, code, text = error_fields(err.body)
        status = err.status_code
        kind = kind_of(status, error_type, code, text)
        if (midstream or status == 200) and issubclass(kind, ModelOutage):
            kind = StreamCut
        return kind(described(kind, status, error_type, text or str(err.message)))
    if midstream:
        # A cut connection mid-answer: the SDK reports it as APIConnectionError today and
        # let its HTTP library's own error through in earlier releases; where it is raised
        # is what tells, not its type.
        why = " ".join(str(err).split())[:200] or err.__class__.__name__
        return StreamCut(f"the connection to the Messages API broke mid-answer ({why})")
    if isinstance(err, anthropic.APIConnectionError):
        return ModelUnreachable(f"the Messages API could not be reached ({err.message})")
    return ModelError(f"the Messages API call failed ({err.__class__.__name__}: {err})")


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
) -> Message:
    """Stream one model response to its end and return it; raises a ModelError kind.

    Failures before the stream opens are the SDK's to retry (429, 5xx, refused
    connections, with its backoff), and come out classified. A stream that opened and then
    broke (an `error` event, a cut connection) is asked again here from the start, with the
    same budget and backoff, and what it had streamed is dropped; only after the budget is
    it an outage (`StreamCut`). Only the SDK's public surface is used: `messages.stream`,
    its exception classes, and where a failure is raised."""
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
        opened = False
        try:
            async with client.messages.stream(**kwargs) as stream:
                opened = True
                return await stream.get_final_message()
        except Exception as err:
            if not (isinstance(err, anthropic.APIError) or (opened and _from_the_wire(err))):
                raise  # a fault of ours, not the API's: no retry hides it
            failure = classify(err, midstream=opened)
            if not isinstance(failure, StreamCut) or attempt >= retries:
                raise failure from err
            wait = backoff(attempt)
            log.warning(
                "model.stream_broken", error=failure.message, retry=attempt + 1, wait_s=wait
            )
            attempt += 1
            await sleep(wait)


def _from_the_wire(err: Exception) -> bool:
    """Whether a failure that broke an opened stream came from the connection. The SDK
    wraps a cut as `APIConnectionError` today; earlier releases let its HTTP library's own
    transport error through, which shares no public base with the SDK's errors, so it is
    known by the library it comes from."""
    module = err.__class__.__module__.split(".")[0]
    return isinstance(err, OSError) or module in _HTTP_LIBRARIES


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


# -- what a reply's stop reason asks of the loop ---------------------------------------------


class Step(enum.StrEnum):
    """The loop's next move after a reply."""

    ANSWER = "answer"
    TOOLS = "tools"
    CONTINUE = "continue"
    COMPACT = "compact"
    RESUME = "resume"
    DECLINED = "declined"
    CUT = "cut"


@dataclass(frozen=True)
class NextMove:
    """The next move, the assistant content to store (empty: store none) and the user
    content to add after it (None: add none)."""

    step: Step
    keep: list[dict[str, Any]]
    note: list[dict[str, Any]] | None = None
    dropped_calls: int = 0


@dataclass
class Turn:
    """What the loop remembers within one task: the text of replies that were cut and are
    being continued, how many continuations it asked for, and whether a 413 made it send
    lean requests (attachments left out, tool results trimmed harder)."""

    parts: list[str] = field(default_factory=list)
    continued: int = 0
    lean: bool = False


CONTINUE_NOTE = (
    "[dispatch-matrix: your reply above was cut off at the output limit (max_tokens). "
    "Continue exactly where it stops, without repeating what you already wrote.]"
)
CONTEXT_NOTE = (
    "[dispatch-matrix: your reply above was cut off because the context window was full. "
    "The older turns are now summarised; continue exactly where it stops, without repeating "
    "what you already wrote.]"
)
DROPPED_CALLS_NOTE = (
    " The tool call you were writing was cut off too, so it was not run: make it again, "
    "smaller (a large file in several parts)."
)
DECLINED_MARK = "[dispatch-matrix: the model declined this task (stop reason: refusal).]"
# After a task that ended unfinished: the transcript then ends with the owner's side, so a
# `!retry` sends it as it stands and the model tries again.
ENDED_NOTE = (
    "[dispatch-matrix: the task above ended unfinished ({why}); the owner was told. If no "
    "new message follows this note, the owner has asked to try that task again: do it now.]"
)

_CUTS = {
    "max_tokens": (Step.CONTINUE, CONTINUE_NOTE),
    "model_context_window_exceeded": (
        Step.COMPACT,
        CONTEXT_NOTE,
    ),
}


def judge(
    stop_reason: str | None, content: list[dict[str, Any]], continued: int, limit: int
) -> NextMove:
    """The next move after a reply with this stop reason and content, `continued`
    continuations into an answer, `limit` of them allowed."""
    if stop_reason == "tool_use" and any(b.get("type") == "tool_use" for b in content):
        return NextMove(Step.TOOLS, content)
    if stop_reason == "pause_turn":
        return NextMove(Step.RESUME, content)
    if stop_reason == "refusal":
        # What streamed before the refusal is not kept: sending it back invites the same end.
        return NextMove(Step.DECLINED, [{"type": "text", "text": DECLINED_MARK}])
    if stop_reason in _CUTS:
        step, note = _CUTS[stop_reason]
        keep = complete_blocks(content)
        dropped = sum(1 for b in content if b.get("type") == "tool_use")
        if continued >= limit:
            return NextMove(Step.CUT, keep, dropped_calls=dropped)
        text = note + (DROPPED_CALLS_NOTE if dropped else "")
        return NextMove(step, keep, [{"type": "text", "text": text}], dropped)
    # end_turn, stop_sequence, a tool_use stop without calls, or a reason this code predates.
    return NextMove(Step.ANSWER, content)


def complete_blocks(content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The blocks of a cut reply that may be sent back: no tool call (the cut one is
    incomplete, and a call is never run from a cut reply), no thinking without its
    signature (the cut came before the signature), no empty text."""
    keep = []
    for block in content:
        kind = block.get("type")
        if kind in ("tool_use", "server_tool_use"):
            continue
        if kind == "thinking" and not block.get("signature"):
            continue
        if kind == "text" and not block.get("text"):
            continue
        keep.append(block)
    # A reply of thinking only says nothing: it would be an assistant message to no end.
    return keep if any(b.get("type") != "thinking" for b in keep) else []


def raw_text(content: list[dict[str, Any]]) -> str:
    """The text of a reply as written, unstripped: a continuation resumes mid-sentence."""
    return "".join(b.get("text", "") for b in content if b.get("type") == "text")


def joined(parts: list[str]) -> str:
    """An answer written across continuations, as one text."""
    return "".join(parts).strip()
