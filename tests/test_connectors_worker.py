"""The API's web search as the agent runs it: a long turn paused after a search is sent back
and goes on, the answer carries its sources, the task's search budget shrinks by the
searches used, and the next task's request carries the citations back. The worker tier (no
homeserver; the MCP servers and `mcp import` stay in tests/test_connectors_e2e.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fake_messages_api import FakeMessagesAPI
from fake_web_search import paused_turn, search_turn
from harness.workbench import Bench

from dispatch_matrix.connectors.settings import WEB_SEARCH_VERSION

pytestmark = [pytest.mark.worker]

MakeBench = Callable[..., Bench]


def messages_to_model(fake_api: FakeMessagesAPI) -> list[Any]:
    return [r for r in fake_api.requests if r.path == "/v1/messages" and r.status == 200]


async def test_a_web_search_answer_reaches_the_phone_with_its_sources(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    extra = "\n[web]\nsearch = true\nmax_uses_per_task = 5\n"
    bench = make_bench(extra)
    results = [
        ("https://llamas.example/pricing", "Llama Co pricing"),
        ("https://news.example/llamas-2026", "Llama news 2026"),
    ]
    # The API pauses the long turn after a search; the bot sends it back and it goes on.
    fake_api.script(paused_turn("llama rental prices", results[:1]))
    fake_api.script(
        search_turn(
            "llama rental news",
            results,
            [("Llama Co charges 30 coins a day.", [0]), ("Prices rose this year.", [1, 0])],
            preface="Now the news.",
        )
    )
    await bench.send("research llama rental prices")
    answer = await bench.room.wait_message("Llama Co charges", timeout=60)
    body = answer.body
    assert "**Sources**" in body
    assert "1. [Llama Co pricing](https://llamas.example/pricing)" in body
    assert "2. [Llama news 2026](https://news.example/llamas-2026)" in body
    assert body.index("Prices rose") < body.index("**Sources**")

    first, second = messages_to_model(fake_api)[:2]
    [search] = [t for t in first.body["tools"] if t["name"] == "web_search"]
    assert search == {"type": WEB_SEARCH_VERSION, "name": "web_search", "max_uses": 5}
    # The continuation: the paused assistant turn sent back as the last message.
    tail = second.body["messages"][-1]
    assert tail["role"] == "assistant"
    assert [b["type"] for b in tail["content"]][-2:] == [
        "server_tool_use",
        "web_search_tool_result",
    ]
    # One search used of the task's five.
    [search] = [t for t in second.body["tools"] if t["name"] == "web_search"]
    assert search["max_uses"] == 4

    # The next task's request carries the citations back, as the transcript kept them.
    await bench.send("thanks")
    await bench.room.wait_message("echo: ")
    third = messages_to_model(fake_api)[2]
    cited = [
        c
        for m in third.body["messages"]
        if m["role"] == "assistant"
        for b in m["content"]
        for c in b.get("citations") or []
    ]
    assert {c["url"] for c in cited} == {url for url, _ in results}
    [search] = [t for t in third.body["tools"] if t["name"] == "web_search"]
    assert search["max_uses"] == 5
