"""Encrypted messages whose keys are late: kept, retried when keys arrive, never dropped.

An event we cannot decrypt is written to the ledger (before its sync token is saved), and a
key request goes out. The waiting events are retried after a sync that brought room keys
(sent or forwarded to the bot's device), and when the oldest one's grace period ends; one
that is read at last is routed like any other message. One still unreadable after the grace
period is reported to its sender, once, by time and reason — nothing is dropped silently
(a reaction or a poll vote read late is routed as well: it may answer an approval).
While nothing waits, no sync looks here: when the next look is due is kept in memory
(`due_at`, loaded at start).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from nio import EncryptionError, MegolmEvent

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.core.ids import RoomID
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.inbound import Message, Reaction, Unreadable, Vote, from_event
from dispatch_matrix.store.matrix_tables import UndecryptedQueries

log = logs.get(__name__)


class LateKeys:
    """Holds unreadable events and retries them."""

    def __init__(
        self,
        client: MatrixClient,
        db: UndecryptedQueries,
        grace_s: float,
        on_read: Callable[[Message | Reaction | Vote], Awaitable[None]],
        on_give_up: Callable[[Unreadable], Awaitable[None]],
        refused: Callable[[str], bool] = lambda _event_id: False,
        claimed: Callable[[], None] = lambda: None,
    ) -> None:
        self._client = client
        # Commits the replay guard's claims: right after a decryption, before its effects.
        self._claimed = claimed
        # Whether the replay guard refused an event (then waiting for its keys is moot).
        self._refused = refused
        self._db = db
        self._grace_s = grace_s
        self._on_read = on_read
        self._on_give_up = on_give_up
        # When the waiting events need a look even without new keys (the end of the oldest
        # one's grace period); None when nothing waits. Retried sooner when keys arrive.
        self.due_at: float | None = None
        self._due_from(first_seen + grace_s for *_rest, first_seen in db.waiting_undecrypted())

    def _due_from(self, dues: Iterable[float]) -> None:
        self.due_at = min(dues, default=None)

    async def hold(self, item: Unreadable) -> None:
        """Keep the event and ask the sender's devices for its key."""
        self._db.hold_undecrypted(item.event_id, item.room_id, item.sender, item.source)
        if self.due_at is None:
            self.due_at = time.time() + self._grace_s
        log.warning(
            "matrix.undecryptable",
            room=item.room_id,
            event_id=item.event_id,
            sender=item.sender,
            session=item.session_id,
        )
        event = self._event(item.room_id, item.source)
        if event is None:
            return
        try:
            await self._client.client.request_room_key(event)
        except (HomeserverError, OSError, ValueError) as err:
            log.info("matrix.key_request_failed", event_id=item.event_id, error=str(err))

    def deleted(self, event_id: str, room_id: str) -> None:
        """An owner deleted an event: if it waits for its keys, it is dropped, never read nor
        routed (as a deleted queued task is dropped). While nothing waits, nothing is asked."""
        if self.due_at is None or not self._db.forget_undecrypted(event_id, room_id):
            return
        self._due_from(
            first_seen + self._grace_s for *_rest, first_seen in self._db.waiting_undecrypted()
        )
        log.info("matrix.undecryptable_deleted", room=room_id, event_id=event_id)

    def _event(self, room_id: str, source: dict[str, object]) -> MegolmEvent | None:
        event = MegolmEvent.from_dict(source)
        if not isinstance(event, MegolmEvent):
            return None
        event.room_id = room_id
        return event

    async def retry(self, now: float | None = None) -> None:
        """Try every waiting event again; report the ones past their grace period."""
        now = time.time() if now is None else now
        dues: list[float] = []
        for row in self._db.waiting_undecrypted():
            due = await self._retry(row, now)
            if due is not None:
                dues.append(due)
        # Past a failure above, `due_at` stays as it was: the next sync tries again.
        self._due_from(dues)

    async def _retry(self, row: tuple[str, str, dict[str, Any], float], now: float) -> float | None:
        """Try one waiting event; when it is due for another look if it still waits."""
        room_id, _sender, source, first_seen = row
        event = self._event(room_id, source)
        if event is None:
            self._db.resolve_undecrypted(str(source.get("event_id")), gave_up=True)
            return None
        try:
            decrypted = self._client.client.decrypt_event(event)
        except EncryptionError:
            if self._refused(event.event_id):
                self._db.resolve_undecrypted(event.event_id, gave_up=True)
                return None
            if now - first_seen < self._grace_s:
                return first_seen + self._grace_s
            self._db.resolve_undecrypted(event.event_id, gave_up=True)
            item = from_event(RoomID(room_id), event)
            log.warning("matrix.undecryptable_gave_up", event_id=event.event_id)
            if isinstance(item, Unreadable):
                await self._on_give_up(item)
            return None
        self._claimed()
        item = from_event(RoomID(room_id), decrypted)
        log.info("matrix.late_key_arrived", event_id=event.event_id)
        if isinstance(item, Message | Reaction | Vote):
            # A reaction or a vote too: it may be the answer to an approval question.
            # Routed before it stops waiting, so a failure on the way does not lose it; the
            # intake knows each event id it took, so a crash in between runs it once.
            try:
                await self._on_read(item)
            except HomeserverError as err:
                # A message the gate cannot judge waits among the router's unjudged ones
                # (`unjudged.py`); a homeserver failure past the gate keeps it waiting
                # here, due at the next sync, which goes on.
                log.warning("matrix.late_read_deferred", event_id=event.event_id, error=err.message)
                return now
            except Exception:
                # As for any event (router): a bug in handling one must not stop the bot
                # hearing every later one.
                log.exception("matrix.late_read_failed", event_id=event.event_id)
        self._db.resolve_undecrypted(event.event_id, gave_up=False)
        return None
