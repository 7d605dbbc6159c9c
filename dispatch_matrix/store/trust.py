"""Queries for trust: pinned identities, one-time notices, events waiting for their keys."""

from __future__ import annotations

import json
import time
from typing import Any

from dispatch_matrix.store._base import Base


class TrustQueries(Base):
    """Identities, notices and undecrypted events."""

    # -- identities and one-time notices ---------------------------------------------------

    def pinned_identity(self, user_id: str) -> str | None:
        """The master key pinned for a user."""
        row = self._conn.execute(
            "SELECT master_key FROM identities WHERE user_id = ?", (user_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    def pin_identity(self, user_id: str, master_key: str, how: str) -> None:
        """Pin (or re-pin) a user's master key."""
        with self.tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO identities VALUES (?, ?, ?, ?)",
                (user_id, master_key, time.time(), how),
            )

    def identities(self) -> list[tuple[str, str, float, str]]:
        """Every pinned identity: (user id, master key, pinned at, how)."""
        rows = self._conn.execute("SELECT * FROM identities ORDER BY user_id").fetchall()
        return [(r["user_id"], r["master_key"], r["pinned_at"], r["how"]) for r in rows]

    def first_notice(self, key: str) -> bool:
        """True the first time a notice key is seen, False ever after."""
        with self.tx() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO notices (key, at) VALUES (?, ?)", (key, time.time())
            )
        return cursor.rowcount == 1

    def forget_notices(self, prefix: str) -> None:
        """Allow notices starting with `prefix` to be given again."""
        with self.tx() as conn:
            conn.execute("DELETE FROM notices WHERE key LIKE ?", (prefix + "%",))

    # -- messages held while their sender's identity is not trusted ------------------------

    def hold_message(
        self, event_id: str, room_id: str, sender: str, master_key: str | None, message: str
    ) -> bool:
        """Hold a message (once per event id); True if it was not held already."""
        with self.tx() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO held_messages VALUES (?, ?, ?, ?, ?, ?)",
                (event_id, room_id, sender, master_key, message, time.time()),
            )
        return cursor.rowcount == 1

    def held_messages(self) -> list[tuple[str, str | None, str, float]]:
        """Every held message: (sender, master key it came under, the message, held at),
        in the order they arrived."""
        rows = self._conn.execute("SELECT * FROM held_messages ORDER BY held_at, rowid").fetchall()
        return [(r["sender"], r["master_key"], r["message"], r["held_at"]) for r in rows]

    def release_held(self, event_id: str) -> None:
        """Stop holding a message (run, or named to its owner)."""
        with self.tx() as conn:
            conn.execute("DELETE FROM held_messages WHERE event_id = ?", (event_id,))

    # -- encrypted events waiting for their keys -------------------------------------------

    def hold_undecrypted(
        self, event_id: str, room_id: str, sender: str, source: dict[str, Any]
    ) -> None:
        """Keep an unreadable event to retry (once per event id)."""
        with self.tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO undecrypted VALUES (?, ?, ?, ?, ?, NULL)",
                (event_id, room_id, sender, json.dumps(source), time.time()),
            )

    def waiting_undecrypted(self) -> list[tuple[str, str, dict[str, Any], float]]:
        """Events still waiting: (room id, sender, source, first seen), oldest first."""
        rows = self._conn.execute(
            "SELECT * FROM undecrypted WHERE gave_up_at IS NULL ORDER BY first_seen"
        ).fetchall()
        return [(r["room_id"], r["sender"], json.loads(r["source"]), r["first_seen"]) for r in rows]

    def resolve_undecrypted(self, event_id: str, gave_up: bool) -> None:
        """Stop waiting for an event: read at last, or given up on."""
        with self.tx() as conn:
            if gave_up:
                conn.execute(
                    "UPDATE undecrypted SET gave_up_at = ? WHERE event_id = ?",
                    (time.time(), event_id),
                )
            else:
                conn.execute("DELETE FROM undecrypted WHERE event_id = ?", (event_id,))
