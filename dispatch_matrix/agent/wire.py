"""A request's messages, serialised from pieces kept between requests.

Every request carries the whole conversation again. The SDK walked and copied the body
before it serialised it, and the size estimate walked it once more: work per request that
grew with the conversation, so a catch-up of hundreds of tasks slowed as it went. The
transcript's blocks never change once written (the store shares them, read only), so each
is serialised and estimated once; a request joins the pieces, and the SDK is handed the
body as ready bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .context import estimate_tokens

# What a message adds to the estimate around its blocks: {"role":"user","content":[…]},
_MESSAGE_TOKENS = 8


def dumps(obj: Any) -> str:
    """Compact JSON, as the SDK's encoder writes it (no NaN: the API takes none)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def body(fields: dict[str, Any], messages_json: str) -> bytes:
    """A request body: `fields` and the messages already serialised."""
    head = dumps(fields)
    return f'{head[:-1]},"messages":{messages_json}}}'.encode()


class Pieces:
    """The serialised blocks of the last request, by identity. Each entry holds its block,
    so no other object can take its id while the entry is kept."""

    def __init__(self) -> None:
        self._kept: dict[int, tuple[Any, str, int]] = {}

    def messages(self, messages: Sequence[dict[str, Any]]) -> tuple[str, int]:
        """The messages as a JSON array, and their token estimate."""
        kept = self._kept
        used: dict[int, tuple[Any, str, int]] = {}
        parts: list[str] = []
        tokens = 0
        for message in messages:
            content = message["content"]
            if isinstance(content, str):
                text, size = dumps(content), estimate_tokens(content)
            else:
                texts: list[str] = []
                size = 0
                for block in content:
                    piece = kept.get(id(block))
                    if piece is None or piece[0] is not block:
                        piece = (block, dumps(block), estimate_tokens(block))
                    used[id(block)] = piece
                    texts.append(piece[1])
                    size += piece[2]
                text = "[" + ",".join(texts) + "]"
            parts.append(f'{{"role":{dumps(message["role"])},"content":{text}}}')
            tokens += size + _MESSAGE_TOKENS
        # Only what this request used is kept: compacted turns and old tails let go.
        self._kept = used
        return "[" + ",".join(parts) + "]", tokens
