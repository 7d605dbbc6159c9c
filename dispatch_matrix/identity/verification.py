"""In-room key verification events as a sync brings them: found, typed, grouped by flow,
and a background sync that queues them for a verification in progress.

nio knows none of them as room events, so they are read from each event's `source`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from nio import MegolmEvent, SyncResponse

from dispatch_matrix.core import logs
from dispatch_matrix.core.backoff import Backoff
from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.core.ids import RoomID
from dispatch_matrix.identity import sas_protocol
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.failures import TokenRejected

log = logs.get(__name__)


@dataclass(frozen=True)
class VerificationEvent:
    """An in-room verification event from a sync, decrypted if it was encrypted."""

    room_id: RoomID
    event_id: str
    sender: str
    type: str  # sas_protocol.REQUEST for the request message, else one of sas_protocol.FLOW_TYPES
    content: dict[str, Any] = field(hash=False)
    origin_ts: int = 0

    @property
    def flow_id(self) -> str | None:
        """The id of the request this event belongs to."""
        if self.type == sas_protocol.REQUEST:
            return self.event_id
        relation = self.content.get("m.relates_to")
        if isinstance(relation, dict) and relation.get("rel_type") == "m.reference":
            event_id = relation.get("event_id")
            return event_id if isinstance(event_id, str) else None
        return None


def verification_events(response: SyncResponse) -> list[VerificationEvent]:
    """The verification events of one sync, in room and timeline order.

    nio knows none of them as room events: a request is a `RoomMessageUnknown` (or a
    `BadEvent` without a body), the rest `UnknownEvent`s; decrypted or not, the event's
    `source` holds the plaintext type and content, so that is what is read.
    """
    found = []
    for room_id, info in response.rooms.join.items():
        for event in info.timeline.events:
            source = getattr(event, "source", None)
            if isinstance(event, MegolmEvent) or not isinstance(source, dict):
                continue
            event_type, content = source.get("type"), source.get("content")
            if not isinstance(content, dict):
                continue
            if (
                event_type == sas_protocol.ROOM_MESSAGE
                and content.get("msgtype") == sas_protocol.REQUEST
            ):
                event_type = sas_protocol.REQUEST
            elif event_type not in sas_protocol.FLOW_TYPES:
                continue
            found.append(
                VerificationEvent(
                    RoomID(room_id),
                    event.event_id,
                    event.sender,
                    str(event_type),
                    content,
                    int(event.server_timestamp),
                )
            )
            log.debug(
                "pairing.event",
                type=event_type,
                nio=type(event).__name__,
                encrypted=bool(getattr(event, "decrypted", False)),
                sender=event.sender,
            )
    return found


def fresh_requests(events: list[VerificationEvent], since_ms: int) -> list[VerificationEvent]:
    """Requests sent since `since_ms` that nobody has answered, cancelled or finished."""
    answered = {e.flow_id for e in events if e.type != sas_protocol.REQUEST}
    return [
        e
        for e in events
        if e.type == sas_protocol.REQUEST and e.origin_ts >= since_ms and e.event_id not in answered
    ]


class VerificationStream:
    """Syncs in the background and keeps the verification events it brings, in order."""

    def __init__(self, client: MatrixClient, io: asyncio.Lock, sync_timeout_ms: int) -> None:
        self._client = client
        # Held while nio's key housekeeping runs (its key query is not re-entrant).
        self._io = io
        self._sync_timeout_ms = sync_timeout_ms
        self._buffer: deque[VerificationEvent] = deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.initial: list[VerificationEvent] = []

    async def start(self) -> None:
        """One full sync (no token), then keep syncing from there."""
        # "offline": the bot does not serve while pairing, and nothing resets it afterwards.
        response = await self._client.sync(None, 0, presence="offline")
        self.initial = verification_events(response)
        async with self._io:
            await self._client.after_sync()
        self._task = asyncio.create_task(self._run(response.next_batch), name="pairing-sync")

    async def _run(self, token: str) -> None:
        backoff = Backoff(1.0, 30.0)
        while True:
            try:
                response = await self._client.sync(token, self._sync_timeout_ms, presence="offline")
                token = response.next_batch
                self._buffer.extend(verification_events(response))
                self._arrived.set()
                async with self._io:
                    await self._client.after_sync()
            except TokenRejected:
                raise
            except HomeserverError as err:
                wait = backoff.next()
                log.warning("pairing.sync_failed", error=err.message, retry_in=wait)
                await asyncio.sleep(wait)
                continue
            backoff.reset()

    async def next(self, deadline: float) -> VerificationEvent:
        """The next event; TimeoutError once the loop's clock passes `deadline`."""
        assert self._task is not None
        loop = asyncio.get_running_loop()
        while not self._buffer:
            if self._task.done():
                self._task.result()
                raise HomeserverError("pairing: the sync stopped")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            self._arrived.clear()
            waiter = asyncio.ensure_future(self._arrived.wait())
            try:
                await asyncio.wait(
                    {waiter, self._task}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waiter.cancel()
        return self._buffer.popleft()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, HomeserverError):
                await self._task
