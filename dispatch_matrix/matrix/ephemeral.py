"""What the bot shows beside its room events: typing, read receipts and presence.

None of these is a room event, none is ever waited for on the way to an answer, and each
keeps only its latest wish: a typing "on" then "off" not yet sent sends only "off". Typing
and receipts are not rate-limited by Synapse; presence is (once per 10 s by default, and
every /sync spends from the same allowance), so presence is coalesced to one update per
`presence_every_s`, and one the homeserver refuses waits for the next slot unless a newer
wish replaced it (skipping it left "working on #19" shown for good after the task ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.core.ids import RoomID
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.failures import RateLimited, Unreachable

log = logs.get(__name__)


class Ephemeral:
    """Typing, receipts and presence, sent by one background loop."""

    def __init__(self, client: MatrixClient, presence_every_s: float) -> None:
        self._client = client
        self._presence_every_s = presence_every_s
        self._typing: dict[RoomID, bool] = {}
        # Per room: the event to mark read, and its thread ("main": the main timeline).
        self._receipts: dict[RoomID, tuple[str, str]] = {}
        self._presence: str | None = None
        self._presence_sent: str | None = None
        self._presence_at = -presence_every_s
        self._wake = asyncio.Event()

    def typing(self, room_id: RoomID, on: bool) -> None:
        self._typing[room_id] = on
        self._wake.set()

    def read_receipt(self, room_id: RoomID, event_id: str, thread_id: str = "main") -> None:
        self._receipts[room_id] = (event_id, thread_id)
        self._wake.set()

    def presence(self, status: str) -> None:
        self._presence = status
        self._wake.set()

    async def run(self) -> None:
        """Send the latest wishes until cancelled."""
        while True:
            await self._drain()
            wait = self._presence_due_in()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _drain(self) -> None:
        while self._receipts:
            room_id, (event_id, thread_id) = self._receipts.popitem()
            await self._quietly("receipt", self._client.read_receipt(room_id, event_id, thread_id))
        while self._typing:
            room_id, on = self._typing.popitem()
            await self._quietly("typing", self._client.typing(room_id, on))
        if self._presence is not None and self._presence_due_in() is None:
            status, self._presence = self._presence, None
            if status != self._presence_sent:
                self._presence_at = time.monotonic()
                try:
                    await self._client.set_presence("online", status)
                    self._presence_sent = status
                except (RateLimited, Unreachable) as err:
                    log.debug("outbox.presence_later", error=err.message)
                    if self._presence is None:
                        self._presence = status
                except HomeserverError as err:
                    log.info("outbox.ephemeral_failed", what="presence", error=err.message)

    def _presence_due_in(self) -> float | None:
        """Seconds until a waiting presence update may go; None if it may go now or there
        is none (then only a new wish wakes the loop)."""
        if self._presence is None:
            return None
        left = self._presence_at + self._presence_every_s - time.monotonic()
        return left if left > 0 else None

    async def _quietly(self, what: str, call: Awaitable[None]) -> bool:
        try:
            await call
        except RateLimited:
            log.debug("outbox.skipped", what=what, reason="rate limited")
            return False
        except HomeserverError as err:
            log.info("outbox.ephemeral_failed", what=what, error=err.message)
            return False
        return True
