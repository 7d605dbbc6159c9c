"""Megolm message indexes seen: what makes replay protection survive a restart.

A Megolm session encrypts each message under a new index; the (sender key, session id,
message index) of an authentic event is unique. A second event with the same triple and
another event id is a replay (a hostile homeserver re-injecting an owner's old message).
"""

from __future__ import annotations

import time

from dispatch_matrix.store.db import Connection


class ReplayQueries(Connection):
    """The first event seen at each Megolm message index."""

    def claim_megolm_index(
        self, sender_key: str, session_id: str, index: int, event_id: str, room_id: str
    ) -> str | None:
        """The event id recorded at this index before, if any; when there was none,
        `event_id` is recorded there, committed before this returns."""
        with self.tx() as conn:
            row = conn.execute(
                "SELECT event_id FROM megolm_indexes"
                " WHERE sender_key = ? AND session_id = ? AND message_index = ?",
                (sender_key, session_id, index),
            ).fetchone()
            if row is not None:
                return str(row[0])
            conn.execute(
                "INSERT INTO megolm_indexes VALUES (?, ?, ?, ?, ?, ?)",
                (sender_key, session_id, index, event_id, room_id, time.time()),
            )
        return None

    def megolm_index(self, sender_key: str, session_id: str, index: int) -> str | None:
        """The event id recorded at this index, if any."""
        row = self._conn.execute(
            "SELECT event_id FROM megolm_indexes"
            " WHERE sender_key = ? AND session_id = ? AND message_index = ?",
            (sender_key, session_id, index),
        ).fetchone()
        return None if row is None else str(row[0])

    def record_megolm_indexes(self, claims: list[tuple[str, str, int, str, str]]) -> None:
        """Record (sender key, session id, index, event id, room id) claims found free, in
        one transaction; an index recorded meanwhile keeps its first event."""
        now = time.time()
        with self.tx() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO megolm_indexes VALUES (?, ?, ?, ?, ?, ?)",
                [(*claim, now) for claim in claims],
            )
