"""The identity feature's tables: owners' pinned identities (master keys pinned on first
contact, by pairing, or by the operator) and the messages held while their sender's
identity is not trusted (migration steps 2 and 15). Its one-time notices go in the shared
`notices` table."""

from __future__ import annotations

import time

from dispatch_matrix.store import Connection


class IdentityTables:
    """Pinned identities and held messages."""

    def __init__(self, db: Connection) -> None:
        self._db = db

    # -- pinned identities -----------------------------------------------------------------

    def pinned_identity(self, user_id: str) -> str | None:
        """The master key pinned for a user."""
        row = self._db.read(
            "SELECT master_key FROM identities WHERE user_id = ?", (user_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    def pin_identity(self, user_id: str, master_key: str, how: str) -> None:
        """Pin (or re-pin) a user's master key."""
        with self._db.tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO identities VALUES (?, ?, ?, ?)",
                (user_id, master_key, time.time(), how),
            )

    def identities(self) -> list[tuple[str, str, float, str]]:
        """Every pinned identity: (user id, master key, pinned at, how)."""
        rows = self._db.read("SELECT * FROM identities ORDER BY user_id").fetchall()
        return [(r["user_id"], r["master_key"], r["pinned_at"], r["how"]) for r in rows]

    # -- one-time notices about identities (the shared table) ------------------------------

    def first_notice(self, key: str) -> bool:
        """True the first time a notice key is seen, False ever after."""
        return self._db.first_notice(key)

    def forget_notices(self, prefix: str) -> None:
        """Allow notices starting with `prefix` to be given again."""
        self._db.forget_notices(prefix)

    # -- messages held while their sender's identity is not trusted ------------------------

    def hold_message(
        self, event_id: str, room_id: str, sender: str, master_key: str | None, message: str
    ) -> bool:
        """Hold a message (once per event id); True if it was not held already."""
        with self._db.tx() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO held_messages VALUES (?, ?, ?, ?, ?, ?)",
                (event_id, room_id, sender, master_key, message, time.time()),
            )
        return cursor.rowcount == 1

    def held_messages(self) -> list[tuple[str, str | None, str, float]]:
        """Every held message: (sender, master key it came under, the message, held at),
        in the order they arrived."""
        rows = self._db.read("SELECT * FROM held_messages ORDER BY held_at, rowid").fetchall()
        return [(r["sender"], r["master_key"], r["message"], r["held_at"]) for r in rows]

    def release_held(self, event_id: str) -> None:
        """Stop holding a message (run, or named to its owner)."""
        with self._db.tx() as conn:
            conn.execute("DELETE FROM held_messages WHERE event_id = ?", (event_id,))
