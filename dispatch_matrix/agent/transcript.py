"""Shaping the stored transcript into requests: valid, cache-friendly, crash-repaired."""

from __future__ import annotations

import copy
from typing import Any

CACHE = {"type": "ephemeral"}

INTERRUPTED_RESULT = (
    "This call was interrupted: dispatch-matrix stopped (restart, crash or power loss) while "
    "it ran, so it may or may not have taken effect. Check the current state before doing it "
    "again."
)


def normalize(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages the API accepts: roles alternate (same-role neighbours merged), user first."""
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


def with_cache_breakpoint(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy whose last block carries a cache breakpoint, so the next turn reads it back."""
    if not messages:
        return messages
    out = copy.deepcopy(messages)
    out[-1]["content"][-1]["cache_control"] = dict(CACHE)
    return out


def pending_tool_uses(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool_use blocks of an assistant message."""
    if message.get("role") != "assistant":
        return []
    return [block for block in message["content"] if block.get("type") == "tool_use"]


def interrupted_results(message: dict[str, Any]) -> list[dict[str, Any]]:
    """Error results for tool calls a crash left without an answer."""
    return [
        {
            "type": "tool_result",
            "tool_use_id": block["id"],
            "content": [{"type": "text", "text": INTERRUPTED_RESULT}],
            "is_error": True,
        }
        for block in pending_tool_uses(message)
    ]


def block_dict(block: Any) -> dict[str, Any]:
    """An SDK content block as the dict the API accepts back in a later request."""
    data: dict[str, Any] = block.model_dump(mode="json", exclude_none=True)
    allowed = {
        "text": {"type", "text"},
        "tool_use": {"type", "id", "name", "input"},
        "thinking": {"type", "thinking", "signature"},
        "redacted_thinking": {"type", "data"},
    }.get(data.get("type", ""))
    return {k: v for k, v in data.items() if k in allowed} if allowed else data


def text_of(content: list[dict[str, Any]]) -> str:
    """The text blocks of a message, joined."""
    return "\n\n".join(b["text"] for b in content if b.get("type") == "text").strip()
