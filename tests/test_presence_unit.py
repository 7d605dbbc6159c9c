"""Presence without a homeserver: a refused update is not the last word."""

from __future__ import annotations

import asyncio

from dispatch_matrix.matrix.failures import RateLimited
from dispatch_matrix.matrix.sender import Ephemeral


class Client:
    """Refuses the first presence update with a 429, as Synapse does within 10 s."""

    def __init__(self) -> None:
        self.shown: list[str | None] = []
        self.refusals = 1
        self.changed = asyncio.Event()

    async def set_presence(self, presence: str, status: str | None = None) -> None:
        if self.refusals:
            self.refusals -= 1
            raise RateLimited("presence: rate limited", 10.0)
        self.shown.append(status)
        self.changed.set()


async def test_a_refused_presence_goes_at_the_next_slot() -> None:
    client = Client()
    ephemeral = Ephemeral(client, presence_every_s=0.05)  # type: ignore[arg-type]
    runner = asyncio.create_task(ephemeral.run())
    try:
        # The task ended; the homeserver refused the update: "idle" must still get there.
        ephemeral.presence("idle")
        await asyncio.wait_for(client.changed.wait(), 5)
        assert client.shown == ["idle"]
    finally:
        runner.cancel()
