"""The owners' DMs the bot has a word to say in: the one `init` opened for each owner, and
each one it joined at an owner's invite; and whether it has welcomed the owner there.

A row is written when the bot enters the room (init's create, or a join), and `welcomed_at`
once the welcome is sent, so a restart never welcomes twice. DMs from before this table
have no row, and so no late welcome.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from dispatch_matrix.core.ids import RoomID, UserID
from dispatch_matrix.store.db import Connection


@dataclass(frozen=True)
class OwnerRoom:
    """A DM with an owner: who opened it (`bot`: init, `owner`: their invite)."""

    room_id: RoomID
    owner: UserID
    opened_by: str
    welcomed: bool


class RoomQueries(Connection):
    """Owners' DMs and their welcomes."""

    def add_owner_room(self, room_id: RoomID, owner: UserID, opened_by: str) -> None:
        """Record a DM the bot entered (a second record of the same room changes nothing)."""
        with self.tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO owner_rooms (room_id, owner, opened_by, entered_at)"
                " VALUES (?, ?, ?, ?)",
                (room_id, owner, opened_by, time.time()),
            )

    def owner_rooms(self) -> list[OwnerRoom]:
        """Every recorded DM, oldest first."""
        rows = self._conn.execute("SELECT * FROM owner_rooms ORDER BY entered_at").fetchall()
        return [
            OwnerRoom(
                RoomID(r["room_id"]),
                UserID(r["owner"]),
                r["opened_by"],
                r["welcomed_at"] is not None,
            )
            for r in rows
        ]

    def unwelcomed_rooms(self) -> list[OwnerRoom]:
        """DMs still waiting for their welcome."""
        return [room for room in self.owner_rooms() if not room.welcomed]

    def mark_welcomed(self, room_id: RoomID, event_id: str) -> None:
        """The welcome went out (committed before anything else is decided about it)."""
        with self.tx() as conn:
            conn.execute(
                "UPDATE owner_rooms SET welcomed_at = ?, welcome_event = ? WHERE room_id = ?",
                (time.time(), event_id, room_id),
            )
