"""Answers the homeserver refused for good (the bot was removed from their room): the outbox
puts each in a queue, and here its owner is told, with its text, in a private room they and
the bot are still in (`fallback_room`, pure). Telling is best effort, and never chains: a
notice that cannot be delivered either is said in the log only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import DispatchError, HomeserverError
from dispatch_matrix.core.ids import RoomID, UserID
from dispatch_matrix.matrix import texts
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.failures import RequestRefused
from dispatch_matrix.matrix.outbox import Outbox, Undelivered
from dispatch_matrix.store import Database
from dispatch_matrix.store.matrix_tables import OutboxItem

log = logs.get(__name__)


async def tell_undelivered(
    undelivered: asyncio.Queue[Undelivered],
    tell: Callable[[OutboxItem, HomeserverError], Awaitable[None]],
) -> None:
    """Hand each answer the outbox could not deliver to `tell`, one at a time, until
    cancelled."""
    while True:
        item, err = await undelivered.get()
        try:
            await tell(item, err)
        except DispatchError as failed:
            # Telling is best effort: its failure is logged, and the next one is told.
            log.warning("outbox.untold", txn=item.txn_id, error=failed.message)


class UndeliveredAnswers:
    """Tells an owner elsewhere of each answer the outbox put in `undelivered`."""

    def __init__(
        self,
        undelivered: asyncio.Queue[Undelivered],
        client: MatrixClient,
        db: Database,
        outbox: Outbox,
        *,
        owners: frozenset[str],
        room_private: Callable[[str], bool],
    ) -> None:
        self._undelivered = undelivered
        self._client = client
        self._db = db
        self._outbox = outbox
        self._owners = owners
        # The router's: whether a room's members are only the bot and owners.
        self._room_private = room_private

    async def run(self) -> None:
        """Tell each undelivered answer in turn, until cancelled."""
        await tell_undelivered(self._undelivered, self.tell)

    async def tell(self, item: OutboxItem, err: HomeserverError) -> None:
        """Tell the owner of `item` (any owner for a notice) that it could not go to its
        room, and what it said, in another private room."""
        if "-untold." in item.txn_id:
            # Telling failed too: said in the log only, never a chain of notices.
            log.error("outbox.untold", txn=item.txn_id, room=item.room_id)
            return
        task = self._db.task(item.task_id) if item.task_id is not None else None
        owner = task.sender if task is not None else None
        rooms = {
            RoomID(room_id): frozenset(UserID(user) for user in room.users)
            for room_id, room in self._client.client.rooms.items()
            if self._room_private(room_id)
        }
        target = fallback_room(rooms, item.room_id, owner, self._owners, self._client.user_id)
        if target is None:
            log.error("outbox.untold", txn=item.txn_id, room=item.room_id, why="no other room")
            return
        known = self._client.client.rooms.get(item.room_id)
        name = known.display_name if known is not None else item.room_id
        code = err.code if isinstance(err, RequestRefused) else None
        body = str(item.content.get("body", ""))
        text = texts.undeliverable(name, code, task.short_id if task else None, body)
        await self._outbox.post(target, text, notice=True, key=f"untold.{item.txn_id}")
        log.info("outbox.told_elsewhere", txn=item.txn_id, room=item.room_id, told_in=target)


def fallback_room(
    rooms: dict[RoomID, frozenset[UserID]],
    failed: RoomID,
    owner: UserID | None,
    owners: frozenset[str],
    me: str,
) -> RoomID | None:
    """Where to tell an owner what could not go to `failed` (pure): a private room (given
    with its joined members) other than that one, where the bot and the owner (any owner
    when none is known) are still joined; the smallest first (their DM), then by id."""
    fits = [
        room
        for room, members in rooms.items()
        if room != failed
        and me in members
        and (members & ({owner} if owner is not None else owners))
    ]
    return min(fits, key=lambda room: (len(rooms[room]), room), default=None)
