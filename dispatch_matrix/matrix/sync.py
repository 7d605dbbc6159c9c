"""The sync loop: long-poll forever, back off when the homeserver is away, never lose place.

The sync token is saved only after the router has written the events it covers to the
ledger, so a crash re-reads rather than loses; event-id de-duplication makes the re-read
harmless.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from nio import SyncResponse

from .. import logs
from ..errors import HomeserverError
from ..store import Database
from .client import MatrixClient, TokenRejected

log = logs.get(__name__)

_MAX_BACKOFF_S = 60.0


class SyncLoop:
    """Runs /sync until cancelled, handing each response to `handle`."""

    def __init__(
        self,
        client: MatrixClient,
        db: Database,
        handle: Callable[[SyncResponse, str | None], Awaitable[None]],
        timeout_ms: int,
    ) -> None:
        self._client = client
        self._db = db
        self._handle = handle
        self._timeout_ms = timeout_ms
        self.first_sync_done = asyncio.Event()
        self.first_sync_seconds: float | None = None

    async def run(self) -> None:
        """Sync until cancelled; raises TokenRejected if the login is revoked."""
        token = self._db.sync_token()
        started = time.monotonic()
        backoff = 1.0
        while True:
            first = not self.first_sync_done.is_set()
            try:
                # The first sync after a start asks for the rooms' full state: nio keeps rooms
                # only in memory, and needs members and encryption state to send safely.
                response = await self._client.sync(
                    token, 0 if first else self._timeout_ms, full_state=first
                )
                await self._handle(response, token)
                self._db.save_sync_token(response.next_batch)
                token = response.next_batch
                await self._client.after_sync()
            except asyncio.CancelledError:
                raise
            except TokenRejected:
                raise
            except HomeserverError as err:
                log.warning("sync.failed", error=err.message, retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                continue
            if backoff > 1.0:
                log.info("sync.recovered")
            backoff = 1.0
            if first:
                self.first_sync_seconds = time.monotonic() - started
                self.first_sync_done.set()
                log.info("sync.ready", seconds=round(self.first_sync_seconds, 3))
