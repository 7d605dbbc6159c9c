"""A request's size estimate, from the estimates of its blocks kept between requests.

Every request carries the whole conversation again, and the estimate walked all of it:
work per request that grew with the conversation, so a catch-up of hundreds of tasks
slowed as it went. The transcript's blocks never change once written (the store shares
them, read only), so each block is estimated once and a request adds up the figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dispatch_matrix.agent.context import estimate_tokens

# What a message adds to the estimate around its blocks: {"role":"user","content":[…]},
_MESSAGE_TOKENS = 8


class Sizes:
    """The token estimates of the last request's blocks, by identity. Each entry holds its
    block, so no other object can take its id while the entry is kept."""

    def __init__(self) -> None:
        self._kept: dict[int, tuple[Any, int]] = {}

    def messages(self, messages: Sequence[dict[str, Any]]) -> int:
        """The messages' token estimate."""
        kept = self._kept
        used: dict[int, tuple[Any, int]] = {}
        tokens = 0
        for message in messages:
            content = message["content"]
            if isinstance(content, str):
                tokens += estimate_tokens(content) + _MESSAGE_TOKENS
                continue
            for block in content:
                piece = kept.get(id(block))
                if piece is None or piece[0] is not block:
                    piece = (block, estimate_tokens(block))
                used[id(block)] = piece
                tokens += piece[1]
            tokens += _MESSAGE_TOKENS
        # Only what this request used is kept: compacted turns and old tails let go.
        self._kept = used
        return tokens
