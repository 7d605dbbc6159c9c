"""Prompt-cache and token accounting for the fake Anthropic Messages API.

Used by ``fake_messages_api.py``; it has no dependencies outside the standard library.

Tokens
    The fake has no tokenizer.  A request's prompt is split into *parts* in the API's cache
    order -- each tool definition, then each system block, then each content block of each
    message -- and every part is serialised to canonical JSON (sorted keys, no whitespace,
    UTF-8, ``cache_control`` removed).  A part costs ``ceil(len(bytes) / 4)`` tokens, at least
    1.  A string ``system`` or message ``content`` counts as one text block.  Message parts
    also carry the role and whether they start a new message, so moving a block across a
    message boundary changes the prompt.  (Unlike the real API, thinking blocks of earlier
    turns are counted like any other block.)  English prose runs at about 4 characters a
    token on the real tokenizers, JSON punctuation at fewer, so the estimate is in the
    service's range and steady, which is what the tests need.

Cache
    Every part carrying ``cache_control`` is a breakpoint (so is the last part when the
    request has a top-level ``cache_control``).  The prefix up to and including a breakpoint
    is a cache entry, keyed by a hash chained over the model and the parts.  The request's
    ``tool_choice`` and ``thinking`` settings enter the chain where the messages begin, so,
    as with the real API, changing them invalidates message entries but not tool or system
    entries.

    As on the service, a breakpoint whose prefix is shorter than the model's minimum
    cacheable length (``min_tokens``; None: the family's figure, see ``models.py``) is
    ignored, and an earlier entry is found only within ``lookback`` (20) blocks before one
    of the request's breakpoints (None: anywhere before the last breakpoint).

    On each request, the longest prefix that ends no later than the request's last
    breakpoint and matches a live entry written (or refreshed) by an earlier request is a
    cache read: ``cache_read_input_tokens``.  The tokens after it, up to the last breakpoint,
    are ``cache_creation_input_tokens`` (split into 5 minute / 1 hour by the TTL of the
    breakpoint that closes each stretch); the rest are ``input_tokens``.  An entry lives 5
    minutes, or 1 hour with ``"ttl": "1h"``; a read or rewrite refreshes it.  The clock is
    ``time.monotonic`` plus whatever :meth:`PromptCache.advance` added, so a test (or a
    benchmark of a whole day) moves time instead of waiting.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .models import min_cache_tokens

__all__ = [
    "MAX_BREAKPOINTS",
    "CacheOutcome",
    "PromptCache",
    "PromptPart",
    "canonical_json",
    "count_breakpoints",
    "estimate_tokens",
    "flatten_prompt",
]

MAX_BREAKPOINTS = 4
"""The real API rejects requests with more ``cache_control`` blocks than this."""

TTL_5M = 300.0
TTL_1H = 3600.0


def canonical_json(obj: Any) -> bytes:
    """Serialise ``obj`` as canonical JSON: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def estimate_tokens(data: bytes | str) -> int:
    """Approximate token count: a quarter of the UTF-8 byte length, rounded up (0 if empty)."""
    if isinstance(data, str):
        data = data.encode()
    return math.ceil(len(data) / 4)


def _ttl_of(cache_control: Any) -> float | None:
    if not isinstance(cache_control, dict):
        return None
    return TTL_1H if cache_control.get("ttl") == "1h" else TTL_5M


def _blocks(content: Any) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return content
    return []


def _strip(block: Any) -> Any:
    if isinstance(block, dict) and "cache_control" in block:
        return {k: v for k, v in block.items() if k != "cache_control"}
    return block


@dataclass(frozen=True)
class PromptPart:
    """One cacheable unit of a prompt (a tool, a system block or a message content block)."""

    location: str
    """Where it came from, e.g. ``tools[0]``, ``system[1]``, ``messages[3].content[0]``."""
    data: bytes
    """Canonical JSON (without ``cache_control``); its length is the part's size."""
    tokens: int
    ttl: float | None = None
    """Seconds the entry at this part lives if it is a breakpoint, else None."""
    key_extra: bytes = b""
    """Bytes mixed into the cache key here without counting as prompt content."""


def flatten_prompt(body: dict[str, Any]) -> list[PromptPart]:
    """Split a Messages API request body into parts in cache order: tools, system, messages."""
    raw: list[tuple[str, Any, Any, bytes]] = []
    for i, tool in enumerate(body.get("tools") or []):
        cc = tool.get("cache_control") if isinstance(tool, dict) else None
        raw.append((f"tools[{i}]", {"tool": _strip(tool)}, cc, b""))
    for i, block in enumerate(_blocks(body.get("system"))):
        cc = block.get("cache_control") if isinstance(block, dict) else None
        raw.append((f"system[{i}]", {"system": _strip(block)}, cc, b""))
    settings = canonical_json(
        {"tool_choice": body.get("tool_choice"), "thinking": body.get("thinking")}
    )
    first_message = True
    for m, message in enumerate(body.get("messages") or []):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        for b, block in enumerate(_blocks(message.get("content"))):
            cc = block.get("cache_control") if isinstance(block, dict) else None
            wrapped = {"role": role, "first": b == 0, "block": _strip(block)}
            extra = settings if first_message else b""
            first_message = False
            raw.append((f"messages[{m}].content[{b}]", wrapped, cc, extra))
    top_level = body.get("cache_control")
    if isinstance(top_level, dict) and raw and raw[-1][2] is None:
        loc, wrapped, _, extra = raw[-1]
        raw[-1] = (loc, wrapped, top_level, extra)
    parts = []
    for loc, wrapped, cc, extra in raw:
        data = canonical_json(wrapped)
        parts.append(PromptPart(loc, data, max(1, estimate_tokens(data)), _ttl_of(cc), extra))
    return parts


def count_breakpoints(body: dict[str, Any]) -> int:
    """Number of cache breakpoints a request sets (including a top-level ``cache_control``)."""
    return sum(1 for p in flatten_prompt(body) if p.ttl is not None)


@dataclass(frozen=True)
class CacheOutcome:
    """What the simulated cache did with one request."""

    input_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int
    ephemeral_5m_input_tokens: int
    ephemeral_1h_input_tokens: int
    prompt_bytes: int
    """Total size of the prompt parts (canonical JSON bytes)."""
    reused_prefix_bytes: int
    """Bytes of the longest prefix ending where an earlier request put a breakpoint (TTL and
    lookback ignored: this measures how well the prompts are structured for caching)."""
    breakpoints: int
    parts: int

    @property
    def total_input_tokens(self) -> int:
        """Input tokens of all kinds: plain, cache read and cache write."""
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens

    @property
    def reused_share(self) -> float:
        """``reused_prefix_bytes / prompt_bytes`` (0.0 for an empty prompt)."""
        return self.reused_prefix_bytes / self.prompt_bytes if self.prompt_bytes else 0.0

    def usage(self) -> dict[str, Any]:
        """Input-side fields of the API's ``usage`` object."""
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.ephemeral_5m_input_tokens,
                "ephemeral_1h_input_tokens": self.ephemeral_1h_input_tokens,
            },
        }


@dataclass
class PromptCache:
    """Simulated prompt cache shared by all requests to one fake server (not thread-safe)."""

    clock: Callable[[], float] = time.monotonic
    lookback: int | None = 20
    """An entry is only found within this many parts up to a breakpoint; None: anywhere."""
    min_tokens: int | None = None
    """Breakpoints whose prefix is shorter than this are ignored; None: the model's figure."""
    _entries: dict[bytes, tuple[float, float]] = field(default_factory=dict)  # key -> expiry, ttl
    _ever: set[bytes] = field(default_factory=set)
    _offset: float = 0.0

    def now(self) -> float:
        """The simulator's time: ``clock()`` plus whatever :meth:`advance` added."""
        return self.clock() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the simulator's clock forward, e.g. to expire entries in a test."""
        self._offset += seconds

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()
        self._ever.clear()

    @staticmethod
    def _keys(model: str, parts: list[PromptPart]) -> Iterator[bytes]:
        h = hashlib.sha256(canonical_json({"model": model}))
        for part in parts:
            h.update(part.key_extra)
            h.update(len(part.data).to_bytes(8, "big"))
            h.update(part.data)
            yield h.copy().digest()

    def process(self, body: dict[str, Any], *, commit: bool = True) -> CacheOutcome:
        """Account one request; with ``commit`` also read/refresh/write entries."""
        parts = flatten_prompt(body)
        model = str(body.get("model", ""))
        keys = list(self._keys(model, parts))
        minimum = min_cache_tokens(model) if self.min_tokens is None else self.min_tokens
        tokens = [p.tokens for p in parts]
        prefix_tokens: list[int] = []
        running = 0
        for t in tokens:
            running += t
            prefix_tokens.append(running)
        marked = [i for i, p in enumerate(parts) if p.ttl is not None]
        bps = [i for i in marked if prefix_tokens[i] >= minimum]
        now = self.now()

        hit = -1
        if bps:
            for j in range(bps[-1], -1, -1):
                entry = self._entries.get(keys[j])
                if entry is None or entry[0] <= now:
                    continue
                if self.lookback is None or any(b - self.lookback < j <= b for b in bps):
                    hit = j
                    break
        reused = -1
        for j in range(len(parts) - 1, -1, -1):
            if keys[j] in self._ever:
                reused = j
                break

        read = prefix_tokens[hit] if hit >= 0 else 0
        five = one = 0
        start = hit + 1
        for b in bps:
            if b < start:
                continue
            seg = prefix_tokens[b] - (prefix_tokens[start - 1] if start > 0 else 0)
            if parts[b].ttl == TTL_1H:
                one += seg
            else:
                five += seg
            start = b + 1
        total = prefix_tokens[-1] if parts else 0

        if commit:
            if hit >= 0:
                expiry, ttl = self._entries[keys[hit]]
                self._entries[keys[hit]] = (max(expiry, now + ttl), ttl)
            for b in bps:
                ttl = parts[b].ttl or TTL_5M
                old = self._entries.get(keys[b])
                expiry = now + ttl if old is None else max(old[0], now + ttl)
                self._entries[keys[b]] = (expiry, max(ttl, old[1]) if old else ttl)
            self._ever.update(keys[i] for i in marked)

        size = sum(len(p.data) for p in parts)
        return CacheOutcome(
            input_tokens=total - read - five - one,
            cache_read_input_tokens=read,
            cache_creation_input_tokens=five + one,
            ephemeral_5m_input_tokens=five,
            ephemeral_1h_input_tokens=one,
            prompt_bytes=size,
            reused_prefix_bytes=sum(len(p.data) for p in parts[: reused + 1]),
            breakpoints=len(marked),
            parts=len(parts),
        )
