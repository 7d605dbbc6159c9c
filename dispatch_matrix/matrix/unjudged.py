"""Owners' messages the trust gate could not judge yet: kept, judged again, in room order.

To judge an encrypted message the gate needs the sender's published keys; when the
homeserver fails that query (away, a 5xx) there is no verdict, only a `HomeserverError`. The
message is then neither dropped (the product's first promise: lose nothing) nor taken
unjudged: it is written to the ledger before its sync token is saved, and judged again at
each later sync until the gate can judge it, then taken or refused like any message.

Room order is kept: while a message of a room waits, each later message of that room waits
behind it without being judged, so none overtakes it into the queue (a command included: a
`!cancel` behind a waiting task means that task). At each sync they are judged again in the
order they came; a room whose oldest still cannot be judged keeps all of its messages
waiting. The ledger keeps them across a restart; what waits is also kept in memory (the
rooms, loaded at start), so that while nothing waits a sync costs nothing here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import Any

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.matrix.inbound import Message
from dispatch_matrix.store.matrix_tables import UnjudgedQueries

log = logs.get(__name__)


def encode(message: Message) -> str:
    """A message as the ledger keeps it."""
    return json.dumps(dataclasses.asdict(message))


def decode(raw: str) -> Message:
    """A message as `encode` kept it."""
    fields: dict[str, Any] = json.loads(raw)
    return Message(**fields)


class Unjudged:
    """The messages waiting for the gate, and their next judgement."""

    def __init__(
        self,
        db: UnjudgedQueries,
        judge: Callable[[Message], Awaitable[bool]],
        take: Callable[[Message], Awaitable[None]],
    ) -> None:
        self._db = db
        # The gate's verdict (raises HomeserverError while it cannot give one).
        self._judge = judge
        # What an admitted message does (the router's routing past the gate).
        self._take = take
        # The rooms with a message waiting.
        self.rooms: set[str] = db.unjudged_rooms()

    def waits(self, room_id: str) -> bool:
        """Whether a message of this room waits (a later one must wait behind it)."""
        return room_id in self.rooms

    def keep(self, message: Message, why: str) -> None:
        """Keep a message to judge at the next sync (committed before this returns)."""
        self._db.keep_unjudged(message.event_id, message.room_id, encode(message))
        self.rooms.add(message.room_id)
        log.warning("message.unjudged", room=message.room_id, event_id=message.event_id, why=why)

    async def retry(self) -> None:
        """Judge the waiting messages again, oldest first; a room whose message still
        cannot be judged keeps it and every later one of that room waiting."""
        stuck: set[str] = set()
        for room_id, raw in self._db.unjudged():
            if room_id in stuck:
                continue
            message = decode(raw)
            try:
                admitted = await self._judge(message)
            except HomeserverError as err:
                stuck.add(room_id)
                log.info("message.still_unjudged", event_id=message.event_id, error=err.message)
                continue
            except Exception:
                # A bug, not the homeserver: judged again it would fail every sync.
                log.exception("message.judge_failed", event_id=message.event_id)
                admitted = False
            if admitted:
                try:
                    # Taken before it stops waiting: a crash in between takes it again,
                    # which the intake's event-id records make harmless.
                    await self._take(message)
                except Exception:
                    # As for any event (router): a bug in handling one must not stop the
                    # bot hearing every later one.
                    log.exception("message.take_failed", event_id=message.event_id)
            self._db.judged(message.event_id)
            log.info("message.judged_late", event_id=message.event_id, admitted=admitted)
        self.rooms = stuck
