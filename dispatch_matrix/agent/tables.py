"""The Claude Code engine's session of each conversation, so a restart (or a crash) resumes
the same Claude Code conversation; and which task its turn was running, so a task taken
again after a crash is told so instead of being started twice."""

from __future__ import annotations

import time
from dataclasses import dataclass

from dispatch_matrix.store import Connection


@dataclass(frozen=True)
class EngineSession:
    """One conversation's Claude Code session, and the task whose turn was left running."""

    session_id: str
    running_task: int | None


class EngineSessions:
    """Claude Code session ids, one per conversation (`!new` opens a conversation, so a
    fresh session): the `engine_sessions` table, migration step 16."""

    def __init__(self, db: Connection) -> None:
        self._db = db

    def engine_session(self, conversation: int) -> EngineSession | None:
        """The conversation's session, if Claude Code has started one."""
        row = self._db.read(
            "SELECT session_id, running_task FROM engine_sessions WHERE conversation = ?",
            (conversation,),
        ).fetchone()
        if row is None:
            return None
        return EngineSession(str(row["session_id"]), row["running_task"])

    def save_engine_session(
        self, conversation: int, session_id: str, running_task: int | None
    ) -> None:
        """Record the conversation's session id and the task its turn is running (None once
        the turn has ended)."""
        with self._db.tx() as conn:
            conn.execute(
                "INSERT INTO engine_sessions (conversation, session_id, running_task, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (conversation) DO UPDATE SET"
                " session_id = excluded.session_id, running_task = excluded.running_task,"
                " updated_at = excluded.updated_at",
                (conversation, session_id, running_task, time.time()),
            )
