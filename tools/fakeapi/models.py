"""The stand-in's model catalogue (``GET /v1/models``) and the figures that differ by model.

The ids are those the installed ``anthropic`` SDK lists (``anthropic.types.Model``); the
lifecycle follows the SDK's deprecation table (``anthropic._data.DEPRECATED_MODELS``).

Minimum cacheable prefix, by family, as the service's prompt-caching documentation gives it
(a prefix shorter than this at a breakpoint is silently not cached):

- 4096 tokens: Claude Opus 4.5, 4.6, 4.7; Claude Haiku 4.5
- 2048 tokens: Claude Haiku 3 and 3.5; Claude Fable 5 (its guide)
- 1024 tokens: Claude Sonnet 3.7, 4, 4.5, 4.6, 5; Claude Opus 4, 4.1, 4.8
- 512 tokens: Claude Opus 5 (and, per a gateway's table, Mythos 5)

Not yet documented where we looked: Sonnet 5.5, Opus 5.5, Haiku 5.5. The stand-in takes
the figure of the family's previous model (Sonnet 1024, Opus 512, Haiku 4096); an unknown
id gets the strictest figure, 4096.
"""

from __future__ import annotations

from typing import Any

DEFAULT_MIN_CACHE_TOKENS = 4096

# Longest prefix wins: "claude-opus-4-5-20251101" finds "claude-opus-4-5".
MIN_CACHE_TOKENS: dict[str, int] = {
    "claude-opus-4-5": 4096,
    "claude-opus-4-6": 4096,
    "claude-opus-4-7": 4096,
    "claude-haiku-4-5": 4096,
    "claude-haiku-5": 4096,
    "claude-3-haiku": 2048,
    "claude-3-5-haiku": 2048,
    "claude-fable-5": 2048,
    "claude-3-7-sonnet": 1024,
    "claude-sonnet-4": 1024,
    "claude-sonnet-5": 1024,
    "claude-opus-4": 1024,
    "claude-opus-4-1": 1024,
    "claude-opus-4-8": 1024,
    "claude-opus-5": 512,
    "claude-mythos": 512,
}


def _longest(table: dict[str, int], model: str, default: int) -> int:
    matches = [prefix for prefix in table if model.startswith(prefix)]
    return table[max(matches, key=len)] if matches else default


def min_cache_tokens(model: str) -> int:
    """The minimum cacheable prefix of a model id, in tokens."""
    return _longest(MIN_CACHE_TOKENS, model, DEFAULT_MIN_CACHE_TOKENS)


def _entry(
    model_id: str,
    name: str,
    created: str,
    line: str | None,
    window: int,
    max_tokens: int,
    lifecycle: str = "active",
    deprecated_at: str | None = None,
    retires_at: str | None = None,
) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model_id,
        "display_name": name,
        "created_at": created,
        "line": line,
        "lifecycle": lifecycle,
        "deprecated_at": deprecated_at,
        "retires_at": retires_at,
        "max_input_tokens": window,
        "max_tokens": max_tokens,
    }


# Newest first, as the Models API lists them.
MODELS: tuple[dict[str, Any], ...] = (
    _entry(
        "claude-sonnet-5-5",
        "Claude Sonnet 5.5",
        "2026-09-28T00:00:00Z",
        "sonnet",
        1_000_000,
        128_000,
    ),
    _entry(
        "claude-opus-5-5", "Claude Opus 5.5", "2026-09-28T00:00:00Z", "opus", 1_000_000, 128_000
    ),
    _entry(
        "claude-haiku-5-5", "Claude Haiku 5.5", "2026-09-28T00:00:00Z", "haiku", 400_000, 64_000
    ),
    _entry(
        "claude-sonnet-5", "Claude Sonnet 5", "2026-06-30T00:00:00Z", "sonnet", 1_000_000, 128_000
    ),
    _entry("claude-opus-5", "Claude Opus 5", "2026-06-09T00:00:00Z", "opus", 1_000_000, 128_000),
    _entry(
        "claude-opus-4-8", "Claude Opus 4.8", "2026-04-16T00:00:00Z", "opus", 1_000_000, 128_000
    ),
    _entry(
        "claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-17T00:00:00Z", "sonnet", 200_000, 64_000
    ),
    _entry("claude-opus-4-6", "Claude Opus 4.6", "2026-02-05T00:00:00Z", "opus", 200_000, 128_000),
    _entry(
        "claude-opus-4-5",
        "Claude Opus 4.5",
        "2025-11-24T00:00:00Z",
        "opus",
        200_000,
        64_000,
        "deprecated",
        "2026-07-22T00:00:00Z",
        "2027-01-22T00:00:00Z",
    ),
    _entry(
        "claude-haiku-4-5", "Claude Haiku 4.5", "2025-10-15T00:00:00Z", "haiku", 200_000, 64_000
    ),
    _entry(
        "claude-sonnet-4-5",
        "Claude Sonnet 4.5",
        "2025-09-29T00:00:00Z",
        "sonnet",
        200_000,
        64_000,
        "deprecated",
        "2026-05-30T00:00:00Z",
        "2026-11-30T00:00:00Z",
    ),
    _entry(
        "claude-opus-4-1",
        "Claude Opus 4.1",
        "2025-08-05T00:00:00Z",
        "opus",
        200_000,
        32_000,
        "retired",
        "2026-02-05T00:00:00Z",
        "2026-08-05T00:00:00Z",
    ),
)

# Dated ids the API accepts for a catalogue entry.
ALIASES = {
    "claude-haiku-4-5-20251001": "claude-haiku-4-5",
    "claude-opus-4-5-20251101": "claude-opus-4-5",
    "claude-sonnet-4-5-20250929": "claude-sonnet-4-5",
}


def find(model_id: str) -> dict[str, Any] | None:
    """The catalogue entry of a model id or dated alias; None if unknown."""
    wanted = ALIASES.get(model_id, model_id)
    return next((m for m in MODELS if m["id"] == wanted), None)


def context_window(model_id: str) -> int:
    """The model's context window in tokens (200k for an id the catalogue lacks)."""
    entry = find(model_id)
    return int(entry["max_input_tokens"]) if entry else 200_000
