"""Scripted turns: what the stand-in answers to the next request.

Turn formats (dicts; JSON-compatible except ``gate``)::

    {"type": "reply",                    # the default when "type" and "status" are absent
     "content": [{"type": "text", "text": "Hi"},
                 {"type": "tool_use", "name": "ls", "input": {"dir": "."}},   # id: toolu_...
                 {"type": "thinking", "thinking": "hmm"},     # signed by the server
                 {"type": "redacted_thinking"}],              # opaque data, signed too
     # or "text": "Hi" instead of "content"
     "stop_reason": "end_turn",          # default: "tool_use" if any tool_use, else "end_turn";
                                         # any of STOP_REASONS
     "stop_sequence": None, "model": None, "usage": {...overrides...},
     "delay": 0.0,                       # seconds before answering
     "chunk_delay": 0.0,                 # seconds between streamed deltas
     "gate": threading.Event()}          # (Python only) answer once the event is set
    {"type": "error", "status": 529,     # "type" may be omitted when "status" is present
     "error_type": "overloaded_error",   # default derived from the status
     "message": "Overloaded", "retry_after": 2, "should_retry": None,  # x-should-retry header
     "error_code": None,                 # error.details.error_code, when the service gives one
     "headers": {}, "delay": 0.0}
    {"type": "stream_failure", "text": "partial", "after_events": 3,
     "mode": "error",                    # "error": SSE error event; "disconnect": drop the socket
     "error_type": "overloaded_error", "message": "Overloaded"}

A reply that stops with ``max_tokens`` while its last block is a ``tool_use`` streams that
call's input cut in the middle, as the service does: the call is incomplete.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from .cache import canonical_json, estimate_tokens

TurnDict: TypeAlias = dict[str, Any]
Turn: TypeAlias = Mapping[str, Any] | Callable[[dict[str, Any]], Mapping[str, Any] | None]

STOP_REASONS = (
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
STATUS_OF_TYPE = {v: k for k, v in ERROR_TYPES.items()}
DEFAULT_MESSAGES = {
    "invalid_request_error": "Invalid request",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low to access the Anthropic API.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of requests has exceeded your rate limit (fake).",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out",
    "overloaded_error": "Overloaded",
}

_COMMON_KEYS = {"type", "delay", "gate"}
_REPLY_KEYS = _COMMON_KEYS | {
    "content",
    "text",
    "stop_reason",
    "stop_sequence",
    "chunk_delay",
    "model",
    "usage",
}
_TURN_KEYS = {
    "reply": _REPLY_KEYS,
    "error": _COMMON_KEYS
    | {"status", "error_type", "message", "retry_after", "should_retry", "headers", "error_code"},
    "stream_failure": _REPLY_KEYS | {"after_events", "mode", "error_type", "message"},
}


def new_id(prefix: str) -> str:
    """An id of the service's shape: ``msg_…``, ``toolu_…``, ``req_…``."""
    return f"{prefix}_fake{secrets.token_hex(10)}"


def _normalize_block(block: Any) -> dict[str, Any]:
    if isinstance(block, str):
        return {"type": "text", "text": block}
    if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
        raise ValueError(f"a content block must be a dict with a 'type': {block!r}")
    out = dict(block)
    kind = out["type"]
    if kind == "text" and not isinstance(out.get("text"), str):
        raise ValueError(f"a text block needs 'text': {block!r}")
    if kind in ("tool_use", "server_tool_use"):
        if not isinstance(out.get("name"), str):
            raise ValueError(f"a {kind} block needs 'name': {block!r}")
        out["input"] = dict(out.get("input") or {})
        out.setdefault("id", new_id("srvtoolu" if kind == "server_tool_use" else "toolu"))
    if kind == "thinking" and not isinstance(out.get("thinking"), str):
        raise ValueError(f"a thinking block needs 'thinking': {block!r}")
    return out


def normalize_turn(turn: Mapping[str, Any]) -> TurnDict:
    """Check a turn dict and fill in its defaults; raises ValueError/TypeError if malformed."""
    if not isinstance(turn, Mapping):
        raise TypeError(f"a turn must be a dict or a callable, not {type(turn).__name__}")
    kind = turn.get("type") or ("error" if "status" in turn else "reply")
    if kind not in _TURN_KEYS:
        raise ValueError(f"unknown turn type {kind!r}")
    unknown = set(turn) - _TURN_KEYS[kind]
    if unknown:
        raise ValueError(f"unknown keys for a {kind} turn: {sorted(unknown)}")
    gate = turn.get("gate")
    if gate is not None and not callable(getattr(gate, "is_set", None)):
        raise TypeError("'gate' must have an is_set() method (e.g. threading.Event)")
    out: TurnDict = {"type": kind, "delay": float(turn.get("delay") or 0), "gate": gate}
    if kind == "error":
        if "status" not in turn:
            raise ValueError("an error turn needs a 'status'")
        status = int(turn["status"])
        default_type = "api_error" if status >= 500 else "invalid_request_error"
        error_type = turn.get("error_type") or ERROR_TYPES.get(status, default_type)
        retry_after = turn.get("retry_after")
        out.update(
            status=status,
            error_type=error_type,
            message=turn.get("message") or DEFAULT_MESSAGES.get(error_type, error_type),
            retry_after=None if retry_after is None else float(retry_after),
            should_retry=turn.get("should_retry"),
            headers=dict(turn.get("headers") or {}),
            error_code=turn.get("error_code"),
        )
        return out
    if "text" in turn and "content" in turn:
        raise ValueError("give either 'text' or 'content', not both")
    blocks = [turn["text"]] if "text" in turn else list(turn.get("content") or [])
    content = [_normalize_block(b) for b in blocks]
    has_tool = any(b["type"] == "tool_use" for b in content)
    stop_reason = turn.get("stop_reason") or ("tool_use" if has_tool else "end_turn")
    if stop_reason not in STOP_REASONS:
        raise ValueError(f"unknown stop_reason {stop_reason!r}; one of {STOP_REASONS}")
    out.update(
        content=content,
        stop_reason=stop_reason,
        stop_sequence=turn.get("stop_sequence"),
        chunk_delay=float(turn.get("chunk_delay") or 0),
        model=turn.get("model"),
        usage=dict(turn.get("usage") or {}),
    )
    if kind == "stream_failure":
        mode = turn.get("mode", "error")
        if mode not in ("error", "disconnect"):
            raise ValueError(f"stream_failure mode must be 'error' or 'disconnect', not {mode!r}")
        error_type = turn.get("error_type") or "overloaded_error"
        out.update(
            after_events=int(turn.get("after_events", 3)),
            mode=mode,
            error_type=error_type,
            message=turn.get("message") or DEFAULT_MESSAGES.get(error_type, error_type),
        )
    return out


def echo_turn(body: Mapping[str, Any]) -> TurnDict:
    """The default responder: ``echo: <text of the last user message>``."""
    said = "(no user message)"
    for message in reversed(body.get("messages") or []):
        if not isinstance(message, Mapping) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            said = content
            break
        blocks = [b for b in content or [] if isinstance(b, Mapping)]
        texts = [b.get("text", "") for b in blocks if b.get("type") == "text"]
        results = [str(b.get("tool_use_id")) for b in blocks if b.get("type") == "tool_result"]
        if texts:
            said = texts[-1]
        elif results:
            said = "(only tool results, for " + ", ".join(results) + ")"
        else:
            said = "(no text)"
        break
    text = f"echo: {said}"
    # As the service never writes past max_tokens: the echo of a long prompt (a summary
    # request, say) is cut there and says so, counted as the usage counts output.
    limit = body.get("max_tokens")
    if isinstance(limit, int) and limit > 0 and _output_tokens(text) > limit:
        cut = text[: 4 * limit]
        while cut and _output_tokens(cut) > limit:  # JSON escapes and UTF-8 count more
            cut = cut[: len(cut) - max(1, (_output_tokens(cut) - limit) * 2)]
        return normalize_turn({"text": cut, "stop_reason": "max_tokens"})
    return normalize_turn({"text": text})


def _output_tokens(text: str) -> int:
    return estimate_tokens(canonical_json([{"type": "text", "text": text}]))
