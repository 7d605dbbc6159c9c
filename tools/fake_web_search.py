"""Scripted web search for the fake Messages API: the blocks the real API sends when it
runs its own `web_search` tool (a `server_tool_use`, its `web_search_tool_result`, and text
blocks whose `citations` point at the results).

    fake.script(search_turn("llama prices", [("https://a.example/p", "A's prices")],
                            [("Llamas cost 3 coins.", [0])]))
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from typing import Any


def _encrypted(text: str) -> str:
    # The real API's opaque, encrypted page content; any base64 stands in for it here.
    return base64.b64encode(f"{text}|{secrets.token_hex(4)}".encode()).decode()


def search_blocks(
    query: str, results: Sequence[tuple[str, str]], tool_id: str | None = None
) -> list[dict[str, Any]]:
    """A server_tool_use for `query` and its result list of (url, title)."""
    use_id = tool_id or f"srvtoolu_fake{secrets.token_hex(8)}"
    return [
        {"type": "server_tool_use", "id": use_id, "name": "web_search", "input": {"query": query}},
        {
            "type": "web_search_tool_result",
            "tool_use_id": use_id,
            "content": [
                {
                    "type": "web_search_result",
                    "url": url,
                    "title": title,
                    "encrypted_content": _encrypted(url),
                    "page_age": "1 day ago",
                }
                for url, title in results
            ],
        },
    ]


def cited_text(
    text: str, results: Sequence[tuple[str, str]], cites: Sequence[int]
) -> dict[str, Any]:
    """A text block citing the results at the indexes `cites`."""
    block: dict[str, Any] = {"type": "text", "text": text}
    if cites:
        block["citations"] = [
            {
                "type": "web_search_result_location",
                "url": results[i][0],
                "title": results[i][1],
                "cited_text": f"{results[i][1]}: {text[:40]}",
                "encrypted_index": _encrypted(str(i)),
            }
            for i in cites
        ]
    return block


def search_turn(
    query: str,
    results: Sequence[tuple[str, str]],
    answer: Sequence[tuple[str, Sequence[int]]],
    *,
    preface: str = "I'll search for that.",
    stop_reason: str = "end_turn",
) -> dict[str, Any]:
    """One reply turn: a preface, the search, then the answer's text blocks with their
    citations (each answer item is text and the indexes of the results it cites)."""
    content: list[dict[str, Any]] = [{"type": "text", "text": preface}]
    content += search_blocks(query, results)
    content += [cited_text(text, results, cites) for text, cites in answer]
    return {"type": "reply", "content": content, "stop_reason": stop_reason}


def paused_turn(query: str, results: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """A turn the API paused (`pause_turn`) right after a search."""
    content: list[dict[str, Any]] = [{"type": "text", "text": "Searching…"}]
    content += search_blocks(query, results)
    return {"type": "reply", "content": content, "stop_reason": "pause_turn"}
