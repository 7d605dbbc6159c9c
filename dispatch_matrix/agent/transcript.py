"""The conversation as requests carry it: what a task's turns say (its first turn, the
notes the loop adds), the stored transcript shaped into a request's messages (valid,
cache-friendly, crash-repaired), and how many tokens a request measures.

A task's first turn holds when it was sent, the owner's words, plus the files they sent —
images as image blocks the model sees, other files as paths it can read with its tools.
The size is pure functions, one small calibrated gauge and the per-block estimates a
request's size is added up from; the engine and the compactor decide with them.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dispatch_matrix.store import Task

CACHE = {"type": "ephemeral"}
CACHE_1H = {"type": "ephemeral", "ttl": "1h"}


def cache_control(ttl: str) -> dict[str, str]:
    """A breakpoint's cache_control for a lifetime of "5m" or "1h"."""
    return dict(CACHE_1H if ttl == "1h" else CACHE)


# What the model reads for a tool call that never finished, by why it did not.
INTERRUPTED_RESULT = (
    "This call was interrupted: dispatch-matrix stopped (restart, crash or power loss) while "
    "it ran, so it may or may not have taken effect. Check the current state before doing it "
    "again."
)
CANCELLED_RESULT = (
    "Not completed: the owner cancelled the task (`!cancel`) while this call ran, and the "
    "processes it started were stopped; it may have been partly done. Check the current state "
    "before doing it again."
)
NOT_RUN_RESULT = "Not run: the owner cancelled the task (`!cancel`) before this call started."
FAILED_RESULT = (
    "Not completed: this call failed inside dispatch-matrix (a bug; the details are in its "
    "log), so it may have been partly done. Check the current state before doing it again."
)
# Only where a request is built, for a call the store holds no answer for (a ledger written
# before cancels recorded theirs): the reason is no longer known.
STOPPED_RESULT = (
    "Not completed: this call was stopped before it finished (the task was cancelled, or "
    "dispatch-matrix stopped), so it may or may not have taken effect. Check the current "
    "state before doing it again."
)
# A task taken up again with `!retry`.
RETRIED_NOTE = (
    "[The owner asked for task {task} again (`!retry`). An earlier attempt, above, did not "
    "finish. Do it now, from the current state of things.]"
)
# A task cancelled as its turn was the conversation's last, taken up again with `!retry`
# where it stopped (not `model.CONTINUE_NOTE`, which asks for the rest of a cut reply).
RETRIED_AFTER_CANCEL_NOTE = (
    "[The owner asked for this task again (`!retry`) after cancelling it. Carry on with it "
    "from the current state of things.]"
)


# -- what a task's first turn says ------------------------------------------------------------

IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}
# The Messages API takes images up to about 5 MB (base64 grows it by a third).
MAX_IMAGE_BYTES = 3_750_000


def _image_bytes(path: Path, limit: int) -> bytes | None:
    """The bytes of a saved image, or None when it is not a regular file of at most `limit`
    bytes now. The inbox lies where the sandboxed agent may write, and this runs outside the
    sandbox: a queued image swapped for a link (to a key file, to /dev/zero) is not followed,
    and no more than `limit` bytes are ever read."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        handle = os.open(path, flags | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    with os.fdopen(handle, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        data = file.read(limit + 1)
    return data if len(data) <= limit else None


def turn_context(now: datetime) -> str:
    """The line of context that travels with one user turn (`now` in the owner's zone)."""
    return f"[sent {now.strftime('%a %Y-%m-%d %H:%M %Z').strip()}]"


def first_turn(task: Task, now: datetime) -> list[dict[str, Any]]:
    """The content blocks of the task's opening user message (`now` in the owner's zone)."""
    blocks: list[dict[str, Any]] = []
    notes: list[str] = []
    for item in task.attachments:
        path = Path(str(item["path"]))
        mimetype = str(item.get("mimetype", ""))
        size = int(str(item.get("size", 0)))
        image = (
            _image_bytes(path, MAX_IMAGE_BYTES)
            if mimetype in IMAGE_TYPES and size <= MAX_IMAGE_BYTES
            else None
        )
        if image is not None:
            data = base64.b64encode(image).decode()
            blocks.append(
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": mimetype, "data": data},
                }
            )
            notes.append(f"- image {path} (shown above)")
        else:
            notes.append(f"- file {path} ({mimetype or 'unknown type'}, {size} bytes)")
    # What a reply refers to comes before the owner's words ("make it shorter": which?).
    said = f"{task.reply_note}\n{task.body}" if task.reply_note else task.body
    text = f"{turn_context(now)}\n{said}".rstrip()
    if notes:
        text += "\n\nThe owner sent these files (saved on this computer):\n" + "\n".join(notes)
    blocks.append({"type": "text", "text": text})
    return blocks


# -- the stored transcript, made valid -------------------------------------------------------


def error_result(tool_use_id: str, text: str) -> dict[str, Any]:
    """A tool_result block telling the model why a call has no real result."""
    return {
        "type": "tool_result",
        "tool_use_id": tool_use_id,
        "content": [{"type": "text", "text": text}],
        "is_error": True,
    }


def cancelled_here(message: dict[str, Any]) -> bool:
    """Whether a user message answers tool calls a `!cancel` stopped (the engine wrote it)."""
    return message.get("role") == "user" and any(
        block.get("type") == "tool_result"
        and any(
            part.get("text") in (CANCELLED_RESULT, NOT_RUN_RESULT)
            for part in block.get("content") or []
            if isinstance(part, dict)
        )
        for block in message["content"]
    )


@dataclass(frozen=True)
class Repair:
    """What `well_formed` changed in a request's messages; falsy when nothing."""

    answered: tuple[str, ...] = ()
    """tool_use ids that had no tool_result and were given STOPPED_RESULT."""
    dropped: tuple[str, ...] = ()
    """tool_use_ids of tool_result blocks left out: no tool_use in the message before, or
    a second result for the same call."""
    moved: int = 0
    """User messages whose tool_result blocks were put back in front of their text."""

    def __bool__(self) -> bool:
        return bool(self.answered or self.dropped or self.moved)


def normalize(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages the API accepts (see `well_formed`), without the account of the repair."""
    return well_formed(messages)[0]


def well_formed(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Repair]:
    """The messages as the API requires them, and what had to change.

    Roles alternate (same-role neighbours merged), the first is the user's, and the
    transcript's invariant holds: every tool_use has exactly one tool_result, at the front
    of the very next (user) message, and no tool_result lacks its tool_use in the message
    before. The stored transcript should already be so; this is the last line, run on every
    request, so that no stored row — one a crash, an old version or a retry left — can make
    the API refuse every later request of the conversation.
    """
    answered: list[str] = []
    dropped: list[str] = []
    moved = 0
    out = _merged(messages)
    for _ in range(3):  # dropping an emptied message can merge two neighbours: go again
        fixed: list[dict[str, Any]] = []
        for index, message in enumerate(out):
            previous = out[index - 1] if index else None
            calls = [b["id"] for b in pending_tool_uses(previous)] if previous else []
            if message["role"] != "user":
                fixed.append(message)
                continue
            content, missing, extra, reordered = _answer(calls, message["content"])
            answered += missing
            dropped += extra
            moved += reordered
            if content:
                fixed.append({"role": "user", "content": content})
        if out and out[-1]["role"] == "assistant":
            # A request may not end on calls without results either.
            calls = [b["id"] for b in pending_tool_uses(out[-1])]
            if calls:
                answered += calls
                results = [error_result(call, STOPPED_RESULT) for call in calls]
                fixed.append({"role": "user", "content": results})
        if len(fixed) == len(out):
            out = fixed
            break
        out = _merged(fixed)
    return out, Repair(tuple(answered), tuple(dropped), moved)


def _merged(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Same-role neighbours merged into one message (copies), the leading replies dropped."""
    merged: list[dict[str, Any]] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1] = {
                "role": message["role"],
                "content": [*merged[-1]["content"], *message["content"]],
            }
        else:
            merged.append({"role": message["role"], "content": list(message["content"])})
    while merged and merged[0]["role"] != "user":
        merged.pop(0)
    return merged


def _answer(
    calls: list[str], content: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[str], list[str], int]:
    """A user message's blocks with one result per call of the message before, in front;
    the calls answered here, the results dropped, and 1 if results had to move forward."""
    results: dict[str, dict[str, Any]] = {}
    dropped: list[str] = []
    others: list[dict[str, Any]] = []
    reordered = 0
    for block in content:
        if block.get("type") != "tool_result":
            others.append(block)
            continue
        call = str(block.get("tool_use_id"))
        if call in calls and call not in results:
            results[call] = block
            reordered = reordered or int(bool(others))
        else:
            dropped.append(call)
    missing = [call for call in calls if call not in results]
    for call in missing:
        results[call] = error_result(call, STOPPED_RESULT)
    ordered = [results[call] for call in calls]
    return [*ordered, *others], missing, dropped, reordered


# Blocks the API takes no cache_control on.
_UNCACHEABLE = frozenset({"thinking", "redacted_thinking"})


def with_cache_breakpoint(messages: list[dict[str, Any]], ttl: str = "5m") -> list[dict[str, Any]]:
    """A copy whose last block carries a cache breakpoint, so the next turn reads it back.

    A turn sent back after `pause_turn` ends with the assistant's message; the breakpoint
    then goes on the last block that takes one (never a thinking block)."""
    if not messages:
        return messages
    out = list(messages)
    for index in range(len(out) - 1, -1, -1):
        if any(b.get("type") not in _UNCACHEABLE for b in out[index]["content"]):
            # Only the message that changes is copied: the others may be shared with the
            # store's parsed rows, and copying a long conversation per request was a cost.
            message = out[index] = copy.deepcopy(out[index])
            blocks = [b for b in message["content"] if b.get("type") not in _UNCACHEABLE]
            blocks[-1]["cache_control"] = cache_control(ttl)
            break
    return out


def pending_tool_uses(message: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The tool_use blocks of an assistant message."""
    if message is None or message.get("role") != "assistant":
        return []
    return [block for block in message["content"] if block.get("type") == "tool_use"]


def interrupted_results(message: dict[str, Any]) -> list[dict[str, Any]]:
    """Error results for tool calls a crash left without an answer."""
    return [error_result(block["id"], INTERRUPTED_RESULT) for block in pending_tool_uses(message)]


def block_dict(block: Any) -> dict[str, Any]:
    """An SDK content block as the dict the API accepts back in a later request."""
    data: dict[str, Any] = block.model_dump(mode="json", exclude_none=True)
    allowed = {
        # Citations stay: they are the answer's sources, and the API takes them back.
        "text": {"type", "text", "citations"},
        "tool_use": {"type", "id", "name", "input"},
        "thinking": {"type", "thinking", "signature"},
        "redacted_thinking": {"type", "data"},
    }.get(data.get("type", ""))
    return {k: v for k, v in data.items() if k in allowed} if allowed else data


def text_of(content: list[dict[str, Any]]) -> str:
    """The text blocks of a message, joined."""
    return "\n\n".join(b["text"] for b in content if b.get("type") == "text").strip()


# -- what is sent: trimmed tool results, the summary first, breakpoints -------------------------

SUMMARY_HEAD = (
    "[Summary of our conversation before this point. The older turns were compacted to keep "
    "the context small; their full record stays in the store.]"
)


def trim_text(text: str, limit: int, row_id: int) -> str:
    """Head and tail of a text longer than `limit`, with a note of what was cut and where
    the whole of it is kept."""
    if len(text) <= limit:
        return text
    head = limit // 2
    tail = limit - head
    cut = len(text) - limit
    note = f"\n[… {cut} chars trimmed; full output in the store, transcript row {row_id}]\n"
    return text[:head] + note + text[len(text) - tail :]


def trim_tool_results(message: dict[str, Any], limit: int, row_id: int) -> dict[str, Any]:
    """The message with each overlong tool-result text trimmed (a copy only if changed)."""
    if message["role"] != "user":
        return message
    changed = False
    content = []
    for block in message["content"]:
        if block.get("type") == "tool_result":
            trimmed = _trim_result(block, limit, row_id)
            changed = changed or trimmed is not block
            block = trimmed
        content.append(block)
    return {"role": "user", "content": content} if changed else message


def _trim_result(block: dict[str, Any], limit: int, row_id: int) -> dict[str, Any]:
    inner = block.get("content")
    if isinstance(inner, str):
        if len(inner) <= limit:
            return block
        return {**block, "content": trim_text(inner, limit, row_id)}
    if not isinstance(inner, list):
        return block
    parts = [
        {**part, "text": trim_text(part["text"], limit, row_id)}
        if part.get("type") == "text" and len(part.get("text", "")) > limit
        else part
        for part in inner
    ]
    if all(new is old for new, old in zip(parts, inner, strict=True)):
        return block
    return {**block, "content": parts}


def summary_message(text: str) -> dict[str, Any]:
    """The user message that stands for the compacted turns, first in every request."""
    return {"role": "user", "content": [{"type": "text", "text": f"{SUMMARY_HEAD}\n\n{text}"}]}


MEDIA_LEFT_OUT = (
    "[{kind} left out: the request was too large for the Messages API (413). The file is "
    "still on this computer; read it with a tool if it is needed.]"
)


def without_media(message: dict[str, Any]) -> dict[str, Any]:
    """The message with each image and document (also inside tool results) replaced by a
    note that it was left out (a copy only if changed)."""

    def shed(blocks: list[Any]) -> tuple[list[Any], bool]:
        out: list[Any] = []
        changed = False
        for block in blocks:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind in ("image", "document"):
                out.append({"type": "text", "text": MEDIA_LEFT_OUT.format(kind=kind.title())})
                changed = True
            elif kind == "tool_result" and isinstance(block.get("content"), list):
                inner, shed_inner = shed(block["content"])
                out.append({**block, "content": inner} if shed_inner else block)
                changed = changed or shed_inner
            else:
                out.append(block)
        return out, changed

    content, changed = shed(message["content"])
    return {"role": message["role"], "content": content} if changed else message


def request_messages(
    rows: list[tuple[int, dict[str, Any]]],
    summary: str | None,
    trim_at: int,
    *,
    lean: bool = False,
    ttl: tuple[str, str] = ("5m", "5m"),
) -> tuple[list[dict[str, Any]], Repair]:
    """The messages of a request: the summary (if any) then the newer turns verbatim, long
    tool results trimmed; breakpoints on the summary and on the tail, with the lifetimes
    `ttl` = (summary's, tail's). `lean` (after a 413) also leaves images and documents out.
    With them, what `well_formed` had to repair for the API to take them (for the log).

    `rows` are (transcript row id, message). The summary carries a breakpoint of its own so
    the prefix a compaction creates is cached once and read back from then on.
    """
    messages = [trim_tool_results(message, trim_at, row_id) for row_id, message in rows]
    if lean:
        messages = [without_media(message) for message in messages]
    if summary is not None:
        messages.insert(0, summary_message(summary))
    valid, repair = well_formed(messages)
    out = with_cache_breakpoint(valid, ttl[1])
    if summary is not None and out:
        out[0]["content"][0]["cache_control"] = cache_control(ttl[0])
    return out, repair


def count_cache_control(request: dict[str, Any]) -> int:
    """How many blocks of a request carry cache_control (the API allows at most 4)."""
    count = 1 if "cache_control" in request else 0
    system = request.get("system")
    blocks: list[Any] = list(request.get("tools") or [])
    blocks += system if isinstance(system, list) else []
    for message in request.get("messages") or []:
        content = message.get("content")
        blocks += content if isinstance(content, list) else []
    return count + sum(1 for b in blocks if isinstance(b, dict) and "cache_control" in b)


# -- how many tokens a request measures -------------------------------------------------------

# What an image costs at most (about 1.15 megapixels; the API scales larger ones down).
MEDIA_TOKENS = 1600


def estimate_tokens(obj: Any) -> int:
    """A token estimate: a quarter of the canonical JSON's UTF-8 bytes, rounded up; an image
    or document counts as MEDIA_TOKENS, whatever the size of its base64 data."""
    plain, media = _without_media(obj)
    data = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return math.ceil(len(data.encode("utf-8")) / 4) + media * MEDIA_TOKENS


def _without_media(obj: Any) -> tuple[Any, int]:
    if isinstance(obj, dict):
        if obj.get("type") in ("image", "document") and isinstance(obj.get("source"), dict):
            return {"type": obj["type"]}, 1
        count = 0
        out = {}
        for key, value in obj.items():
            out[key], found = _without_media(value)
            count += found
        return out, count
    if isinstance(obj, list):
        pairs = [_without_media(item) for item in obj]
        return [item for item, _ in pairs], sum(found for _, found in pairs)
    return obj, 0


@dataclass
class Gauge:
    """Estimates a request's input tokens, calibrated by the last request's real count.

    The bytes/4 rule is off by a steady amount for a given prompt (tool schemas and JSON
    punctuation tokenize differently from prose), so the last real count plus the estimate
    of what changed since is closer than the estimate alone. Kept in memory only: after a
    restart the first request is judged by the plain estimate.
    """

    _estimated: int | None = None
    _real: int | None = None

    def measured(self, estimated: int, real: int) -> None:
        """Record a sent request's estimate and the real count the API reported."""
        if real > 0:
            self._estimated, self._real = estimated, real

    def expect(self, estimated: int) -> int:
        """The expected real size of a request whose plain estimate is `estimated`."""
        if self._estimated is None or self._real is None:
            return estimated
        # The correction is a steady bias, never more than half the estimate either way.
        bias = self._real - self._estimated
        bound = estimated // 2
        return estimated + max(-bound, min(bound, bias))


def real_input(usage: dict[str, int]) -> int:
    """All input tokens of a request: plain, cache writes and cache reads."""
    return (
        usage.get("input_tokens", 0)
        + usage.get("cache_creation_input_tokens", 0)
        + usage.get("cache_read_input_tokens", 0)
    )


# What a message adds to the estimate around its blocks: {"role":"user","content":[…]},
_MESSAGE_TOKENS = 8


class Sizes:
    """A request's size estimate from the estimates of its blocks, kept between requests.

    Every request carries the whole conversation again, and the estimate walked all of it:
    work per request that grew with the conversation, so a catch-up of hundreds of tasks
    slowed as it went. The transcript's blocks never change once written (the store shares
    them, read only), so each block is estimated once and a request adds up the figures.
    Entries are kept by identity, each holding its block, so no other object can take its
    id while the entry is kept.
    """

    def __init__(self) -> None:
        self._kept: dict[int, tuple[Any, int]] = {}

    def messages(self, messages: Sequence[dict[str, Any]]) -> int:
        """The messages' token estimate."""
        kept = self._kept
        used: dict[int, tuple[Any, int]] = {}
        tokens = 0
        for message in messages:
            content = message["content"]
            if isinstance(content, str):
                tokens += estimate_tokens(content) + _MESSAGE_TOKENS
                continue
            for block in content:
                piece = kept.get(id(block))
                if piece is None or piece[0] is not block:
                    piece = (block, estimate_tokens(block))
                used[id(block)] = piece
                tokens += piece[1]
            tokens += _MESSAGE_TOKENS
        # Only what this request used is kept: compacted turns and old tails let go.
        self._kept = used
        return tokens
