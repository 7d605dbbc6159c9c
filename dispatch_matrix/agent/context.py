"""How full the context is, and where the older part of a conversation may be cut off.

Pure functions, one small calibrated gauge and the per-block estimates a request's size is
added up from; the engine and the compactor decide with them, the store keeps the results.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


def starts_turn(message: dict[str, Any]) -> bool:
    """Whether a message opens a turn: a user message that answers no tool call."""
    return message["role"] == "user" and not any(
        block.get("type") == "tool_result" for block in message["content"]
    )


def cut_point(
    messages: Sequence[dict[str, Any]], keep: int, *, relaxed: bool = False
) -> int | None:
    """Where to cut: messages[:i] become the summary, messages[i:] stay verbatim; None if
    nothing can be cut.

    The cut goes before a message that opens a turn, so a tool_use is never parted from its
    tool_result, and leaves at least `keep` messages. `relaxed` (the API already refused the
    request as too long) gives up `keep` first, then cuts before an assistant message inside
    the running turn — which also keeps every tool_use with its result, both being after it.
    """
    starts = [i for i in range(1, len(messages)) if starts_turn(messages[i])]
    fitting = [i for i in starts if len(messages) - i >= keep]
    if fitting:
        return fitting[-1]
    if not relaxed:
        return None
    if starts:
        return starts[-1]
    replies = [i for i in range(1, len(messages)) if messages[i]["role"] == "assistant"]
    return replies[-1] if replies else None


def render(messages: Sequence[dict[str, Any]], budget_chars: int, per_result: int = 1500) -> str:
    """The messages as plain text for the summariser (a request that has no tools may not
    hold tool blocks); tool results shortened, the whole kept within `budget_chars`."""
    parts: list[str] = []
    for message in messages:
        who = "Owner" if message["role"] == "user" else "Assistant"
        for block in message["content"]:
            kind = block.get("type")
            if kind == "text" and block.get("text", "").strip():
                parts.append(f"{who}: {block['text'].strip()}")
            elif kind in ("image", "document"):
                parts.append(f"{who}: [{kind}]")
            elif kind == "tool_use":
                args = json.dumps(block.get("input") or {}, ensure_ascii=False)
                parts.append(f"Assistant called {block.get('name')}: {_shorten(args, 600)}")
            elif kind == "tool_result":
                label = "Tool error" if block.get("is_error") else "Tool result"
                parts.append(f"{label}: {_shorten(_result_text(block), per_result)}")
    text = "\n\n".join(parts)
    return _shorten(text, budget_chars)


def _result_text(block: dict[str, Any]) -> str:
    inner = block.get("content")
    if isinstance(inner, str):
        return inner
    if isinstance(inner, list):
        return "\n".join(
            part.get("text", "") if part.get("type") == "text" else f"[{part.get('type')}]"
            for part in inner
        )
    return ""


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return f"{text[:head]}\n[… {len(text) - limit} chars left out …]\n{text[len(text) - tail :]}"
