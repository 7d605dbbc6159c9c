"""A message as the SSE events the service streams it in."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def _pieces(text: str, parts: int = 3, longest: int = 32) -> list[str]:
    """Split ``text`` into at least ``parts`` pieces (when long enough) of <= ``longest``."""
    if not text:
        return []
    size = max(1, min(longest, math.ceil(len(text) / parts)))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _deltas(block: Mapping[str, Any], cut: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The content_block_start body and the deltas of one block; `cut`: the output limit
    stopped it midway (a tool call's input JSON ends unfinished, a thinking block unsigned)."""
    kind = block["type"]
    if kind == "text":
        # Cited text streams its citations as deltas, as the real API does.
        cited = [{"type": "citations_delta", "citation": c} for c in block.get("citations") or []]
        return {"type": "text", "text": ""}, cited + [
            {"type": "text_delta", "text": p} for p in _pieces(block["text"])
        ]
    if kind in ("tool_use", "server_tool_use"):
        partial = json.dumps(block["input"])
        if cut:
            partial = partial[: max(1, len(partial) // 2)]
        return {**block, "input": {}}, [
            {"type": "input_json_delta", "partial_json": p} for p in _pieces(partial)
        ]
    if kind == "thinking":
        deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(block["thinking"])]
        if not cut:
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        return {"type": "thinking", "thinking": "", "signature": ""}, deltas
    return dict(block), []


def stream_events(message: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events (name, data) that stream ``message`` the way the service does."""
    usage = message["usage"]
    start_usage = {**usage, "output_tokens": min(1, usage["output_tokens"])}
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": {**start, "usage": start_usage}}),
        ("ping", {"type": "ping"}),
    ]
    content = message["content"]
    for index, block in enumerate(content):
        last = index == len(content) - 1
        first, deltas = _deltas(block, cut=last and message["stop_reason"] == "max_tokens")
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": first},
            )
        )
        events.extend(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    keys = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    final_usage = {k: usage[k] for k in keys if k in usage}
    final_usage["output_tokens"] = usage["output_tokens"]
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    events.append(
        ("message_delta", {"type": "message_delta", "delta": delta, "usage": final_usage})
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def sse(name: str, data: Mapping[str, Any]) -> bytes:
    """One SSE event on the wire."""
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
