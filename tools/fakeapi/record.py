"""The stand-in's request log: what each request was, what it was answered, what the
simulated cache did with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .cache import CacheOutcome

HEADERS_OF_INTEREST = (
    "x-api-key",
    "authorization",
    "anthropic-version",
    "anthropic-beta",
    "content-type",
    "x-stainless-retry-count",
)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received, in arrival order."""

    path: str
    body: dict[str, Any]
    """Parsed JSON body ({} when there was none or it was not valid JSON)."""
    headers: dict[str, str]
    """x-api-key, authorization, anthropic-version, anthropic-beta, content-type and
    x-stainless-retry-count, when sent."""
    size_bytes: int
    at: float
    """``time.monotonic()`` on arrival."""
    usage: dict[str, Any]
    """The ``usage`` reported (or, for count_tokens, ``{"input_tokens": n}``); {} on errors."""
    status: int
    """HTTP status sent; 0 when the connection was dropped instead."""
    method: str = "POST"
    cache: dict[str, Any] = field(default_factory=dict)
    """Prompt analysis: prompt_bytes, reused_prefix_bytes, reused_share, breakpoints, parts."""
    error_type: str | None = None
    """The error's type when the request was refused (also for a stream that failed)."""


def cache_fields(outcome: CacheOutcome | None) -> dict[str, Any]:
    """The ``cache`` field of a recorded request."""
    if outcome is None:
        return {}
    return {
        "prompt_bytes": outcome.prompt_bytes,
        "prompt_tokens": outcome.total_input_tokens,
        "reused_prefix_bytes": outcome.reused_prefix_bytes,
        "reused_share": outcome.reused_share,
        "breakpoints": outcome.breakpoints,
        "parts": outcome.parts,
    }


def report_row(index: int, rec: RecordedRequest) -> dict[str, Any]:
    """One row of the cache report."""
    return {
        "index": index,
        "status": rec.status,
        "body_bytes": rec.size_bytes,
        "input_bytes": rec.cache["prompt_bytes"],
        "cached_prefix_bytes": rec.cache["reused_prefix_bytes"],
        "share": rec.cache["reused_share"],
        "input_tokens": rec.usage.get("input_tokens", 0),
        "cache_read_input_tokens": rec.usage.get("cache_read_input_tokens", 0),
        "cache_creation_input_tokens": rec.usage.get("cache_creation_input_tokens", 0),
        "output_tokens": rec.usage.get("output_tokens", 0),
    }
