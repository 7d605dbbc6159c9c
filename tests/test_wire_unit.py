"""The request body built from pieces kept between requests: the same JSON as the whole
serialised at once, each block serialised once."""

from __future__ import annotations

import json
from typing import Any

from dispatch_matrix.agent import wire
from dispatch_matrix.agent.context import estimate_tokens


def test_the_joined_pieces_are_the_messages_and_the_body_keeps_every_field() -> None:
    first = {"type": "text", "text": "héllo"}
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [first]},
        {"role": "assistant", "content": [{"type": "text", "text": "hi"}]},
        {"role": "user", "content": "plain"},
    ]
    text, tokens = wire.Pieces().messages(messages)
    assert json.loads(text) == messages
    assert tokens >= estimate_tokens(messages)
    body = json.loads(wire.body({"model": "m", "max_tokens": 5, "stream": True}, text))
    assert body == {"model": "m", "max_tokens": 5, "stream": True, "messages": messages}


def test_a_block_is_serialised_once_while_requests_use_it() -> None:
    pieces = wire.Pieces()
    block = {"type": "text", "text": "kept"}
    pieces.messages([{"role": "user", "content": [block]}])
    # A block changed in place would show its old text: the store never changes one.
    block["text"] = "changed"
    again, _ = pieces.messages([{"role": "user", "content": [block]}])
    assert json.loads(again)[0]["content"][0]["text"] == "kept"
    # A new object with the same contents is serialised anew.
    fresh, _ = pieces.messages([{"role": "user", "content": [dict(block)]}])
    assert json.loads(fresh)[0]["content"][0]["text"] == "changed"
