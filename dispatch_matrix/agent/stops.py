"""What a reply's stop reason asks the loop to do next: a pure decision, table-tested.

The Messages API ends every reply with a `stop_reason`; only `end_turn` (and
`stop_sequence`) mean "this is the answer". The others:

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

import enum
from dataclasses import dataclass, field
from typing import Any


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

_ANSWERS = frozenset({"end_turn", "stop_sequence"})
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
