"""Which thread an owner's message was written in, so every answer to it goes to that
thread: the answer may come after a restart, when nothing in memory remembers it."""

from __future__ import annotations

from dispatch_matrix.core.ids import EventID
from dispatch_matrix.store.db import Connection


class ThreadQueries(Connection):
    """Owners' messages written in a thread, and the thread's root event."""

    def note_thread(self, event_id: EventID, root: EventID) -> None:
        """Record that `event_id` was written in the thread rooted at `root`."""
        with self.tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO threads (event_id, root) VALUES (?, ?)", (event_id, root)
            )

    def thread_of(self, event_id: str) -> EventID | None:
        """The root of the thread `event_id` was written in; None: the main timeline."""
        row = self._conn.execute(
            "SELECT root FROM threads WHERE event_id = ?", (event_id,)
        ).fetchone()
        return EventID(row["root"]) if row is not None else None
