"""Queries of the outbox: every event the bot decided to send, with its transaction id fixed
before the first attempt, and what became of it (sent with an event id, or dropped)."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from typing import Any

from dispatch_matrix.core.ids import RoomID
from dispatch_matrix.store.db import Connection
from dispatch_matrix.store.models import OutboxItem


def _outbox(row: sqlite3.Row) -> OutboxItem:
    return OutboxItem(
        txn_id=row["txn_id"],
        room_id=RoomID(row["room_id"]),
        event_type=row["event_type"],
        content=json.loads(row["content"]),
        task_id=row["task_id"],
        event_id=row["event_id"],
    )


class OutboxQueries(Connection):
    """The outbox table."""

    def enqueue_outgoing(
        self,
        room_id: RoomID,
        event_type: str,
        content: dict[str, Any],
        task_id: int | None = None,
        key: str | None = None,
    ) -> OutboxItem:
        """Record a message to send, fixing its transaction id before the first attempt.

        With a `key` the transaction id is derived from it: recording the same key again
        returns the first record (and its event id once sent), so a step repeated after a
        crash sends nothing twice.
        """
        # The ledger's own id keeps keys from two ledgers (a lost and a new store) apart.
        txn_id = f"dm-{self.instance_id()}-{key}" if key else "dm-" + uuid.uuid4().hex
        with self.tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO outbox (txn_id, room_id, event_type, content, task_id,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (txn_id, room_id, event_type, json.dumps(content), task_id, time.time()),
            )
            row = conn.execute("SELECT * FROM outbox WHERE txn_id = ?", (txn_id,)).fetchone()
        return _outbox(row)

    def unsent(self) -> list[OutboxItem]:
        """Messages recorded but not yet confirmed sent, oldest first."""
        rows = self._conn.execute(
            "SELECT * FROM outbox WHERE event_id IS NULL ORDER BY created_at"
        ).fetchall()
        return [_outbox(row) for row in rows]

    def reactions_shown(self, task_id: int) -> list[tuple[str, str, str]]:
        """The task's status reactions now in the room: (txn_id, event_id, emoji), oldest
        first. A reaction leaves this list when it is redacted (`mark_sent(txn, "")`)."""
        rows = self._conn.execute(
            "SELECT txn_id, event_id, content FROM outbox WHERE task_id = ? AND"
            " event_type = 'm.reaction' AND event_id IS NOT NULL AND event_id != ''"
            " ORDER BY created_at",
            (task_id,),
        ).fetchall()
        shown = []
        for txn_id, event_id, content in rows:
            relation = json.loads(content).get("m.relates_to") or {}
            shown.append((str(txn_id), str(event_id), str(relation.get("key", ""))))
        return shown

    def sent_event(self, event_id: str) -> OutboxItem | None:
        """The bot's own event with this event id (what an owner's reply names), if any."""
        if not event_id:
            return None
        row = self._conn.execute(
            "SELECT * FROM outbox WHERE event_id = ? LIMIT 1", (event_id,)
        ).fetchone()
        return None if row is None else _outbox(row)

    def was_question(self, event_id: str) -> bool:
        """Whether the bot's event was an approval question (open or closed)."""
        row = self._conn.execute(
            "SELECT 1 FROM outbox WHERE event_id = ? AND txn_id LIKE '%.ask.%'", (event_id,)
        ).fetchone()
        return row is not None

    def count_reactions(self, task_id: int) -> int:
        """How many status reactions the task has had recorded (sent, dropped or pending)."""
        row = self._conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE task_id = ? AND event_type = 'm.reaction'",
            (task_id,),
        ).fetchone()
        return int(row[0])

    def mark_sent(self, txn_id: str, event_id: str) -> None:
        """Record the homeserver's event id for a sent message."""
        with self.tx() as conn:
            conn.execute(
                "UPDATE outbox SET event_id = ?, sent_at = ? WHERE txn_id = ?",
                (event_id, time.time(), txn_id),
            )
