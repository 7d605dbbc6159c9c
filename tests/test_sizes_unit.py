"""A request's size estimate from block estimates kept between requests: at least the
estimate of the whole, each block estimated once while requests use it."""

from __future__ import annotations

from typing import Any

from dispatch_matrix.agent.transcript import Sizes, estimate_tokens


def test_the_estimate_covers_the_whole_conversation() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": "héllo " * 200}]},
        {"role": "assistant", "content": [{"type": "text", "text": "hi"}]},
        {"role": "user", "content": "plain " * 50},
    ]
    assert Sizes().messages(messages) >= estimate_tokens(messages)


def test_a_block_is_estimated_once_while_requests_use_it() -> None:
    sizes = Sizes()
    block = {"type": "text", "text": "kept"}
    first = sizes.messages([{"role": "user", "content": [block]}])
    # A block changed in place keeps its old figure: the store never changes one.
    block["text"] = "changed " * 100
    assert sizes.messages([{"role": "user", "content": [block]}]) == first
    # A new object with the same contents is estimated anew.
    assert sizes.messages([{"role": "user", "content": [dict(block)]}]) > first
