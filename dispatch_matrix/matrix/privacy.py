"""Rooms the bot obeys in stay private: when anyone besides the bot and its owners is
invited or joins, the owners hear it at once, before they send anything else; when the
room is private again, they hear that too.

The decision is pure (`privacy_change`); `RoomWatch` feeds it the rooms whose state a sync
changed (every room on a run's first sync) and keeps what it last saw in the ledger, so a
restart neither repeats a notice nor misses a change.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable

from dispatch_matrix.core import logs
from dispatch_matrix.core.ids import RoomID
from dispatch_matrix.matrix import texts
from dispatch_matrix.store import Connection

log = logs.get(__name__)


class Change(enum.Enum):
    """What happened to a room's privacy since the last sync."""

    NONE = "none"
    OPENED = "opened"  # someone besides the owners is in it now
    CLOSED = "closed"  # only the bot and its owners again


def outsiders(members: Iterable[str], owners: frozenset[str], me: str) -> list[str]:
    """Members (joined or invited) who are neither the bot nor an owner, sorted."""
    return sorted(set(members) - owners - {me})


def privacy_change(was_private: bool | None, now_private: bool) -> Change:
    """The change to announce; a room first seen is only remembered (the bot never obeyed
    in it, and an owner who writes there is told why it does not)."""
    if was_private is None or was_private == now_private:
        return Change.NONE
    return Change.CLOSED if now_private else Change.OPENED


class RoomWatch:
    """Announces privacy changes of the rooms the bot is in."""

    def __init__(
        self,
        db: Connection,
        owners: frozenset[str],
        me: str,
        post: Callable[[RoomID, str, str], Awaitable[object]],
    ) -> None:
        self._db = db
        self._owners = owners
        self._me = me
        self._post = post

    async def check(self, room_id: RoomID, members: Iterable[str], allowed: bool) -> None:
        """Compare the room's members now with what was last seen; announce a change."""
        strangers = [] if allowed else outsiders(members, self._owners, self._me)
        key = f"room_private:{room_id}"
        stored = self._db.get_meta(key)
        was = None if stored is None else stored == "1"
        now = not strangers
        change = privacy_change(was, now)
        if stored is None or change is not Change.NONE:
            self._db.set_meta(key, "1" if now else "0")
        if change is Change.NONE:
            return
        # Each change is its own notice (a room may open and close many times).
        count = int(self._db.get_meta(f"room_changes:{room_id}") or "0") + 1
        self._db.set_meta(f"room_changes:{room_id}", str(count))
        notice_key = f"privacy-{room_id}-{count}"
        if change is Change.OPENED:
            log.warning("room.not_private", room=room_id, outsiders=strangers)
            # The notice given when an owner writes into the shared room is this one.
            self._db.first_notice(f"room-shared:{room_id}")
            await self._post(room_id, texts.room_opened(strangers), notice_key)
        else:
            log.info("room.private_again", room=room_id)
            self._db.forget_notices(f"room-shared:{room_id}")
            await self._post(room_id, texts.ROOM_CLOSED, notice_key)
