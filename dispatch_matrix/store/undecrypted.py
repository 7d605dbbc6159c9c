"""Encrypted events the bot could not read yet, kept to retry when their room keys arrive
(the late keys of `matrix.late_keys`), or until it gives up on them."""

from __future__ import annotations

import json
import time
from typing import Any

from dispatch_matrix.store.db import Connection


class UndecryptedQueries(Connection):
    """Events waiting for their keys."""

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
