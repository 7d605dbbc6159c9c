"""The SQLite file: connection settings, schema migrations, and the queries of the ledger.

WAL with synchronous=FULL: a row committed here survives a kill -9 or a power cut, which is
what lets the bot acknowledge a task in the room only after it is on disk. Calls are short
local transactions, made on the event loop thread; nothing here touches the network.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .models import OutboxItem, Session, Task, TaskState

_MIGRATIONS = [
    # 1: the ledger, the transcript, the outbox, the Matrix session.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE session (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        homeserver TEXT NOT NULL, user_id TEXT NOT NULL,
        device_id TEXT NOT NULL, access_token TEXT NOT NULL, created_at REAL NOT NULL
    );
    CREATE TABLE sync_state (
        id INTEGER PRIMARY KEY CHECK (id = 1), next_batch TEXT NOT NULL, saved_at REAL NOT NULL
    );
    CREATE TABLE tasks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        room_id TEXT NOT NULL, sender TEXT NOT NULL, body TEXT NOT NULL,
        origin_ts INTEGER NOT NULL, state TEXT NOT NULL,
        created_at REAL NOT NULL, started_at REAL, finished_at REAL,
        result TEXT, error TEXT
    );
    CREATE INDEX tasks_by_state ON tasks (state, id);
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY AUTOINCREMENT, started_at REAL NOT NULL, closed_at REAL
    );
    CREATE TABLE transcript (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id INTEGER NOT NULL REFERENCES conversations (id),
        task_id INTEGER REFERENCES tasks (id),
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX transcript_by_conversation ON transcript (conversation_id, id);
    CREATE TABLE outbox (
        txn_id TEXT PRIMARY KEY,
        room_id TEXT NOT NULL, event_type TEXT NOT NULL, content TEXT NOT NULL,
        task_id INTEGER REFERENCES tasks (id),
        event_id TEXT, created_at REAL NOT NULL, sent_at REAL
    );
    CREATE TABLE usage (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id INTEGER REFERENCES tasks (id), model TEXT NOT NULL,
        input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
        cache_creation_input_tokens INTEGER NOT NULL, cache_read_input_tokens INTEGER NOT NULL,
        at REAL NOT NULL
    );
    """,
    # 2: pinned identities of owners; notices already given (so each is given once).
    """
    CREATE TABLE identities (
        user_id TEXT PRIMARY KEY, master_key TEXT NOT NULL,
        pinned_at REAL NOT NULL, how TEXT NOT NULL
    );
    CREATE TABLE notices (key TEXT PRIMARY KEY, at REAL NOT NULL);
    """,
    # 3: encrypted events we could not read yet, kept to retry when their keys arrive.
    """
    CREATE TABLE undecrypted (
        event_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, sender TEXT NOT NULL,
        source TEXT NOT NULL, first_seen REAL NOT NULL, gave_up_at REAL
    );
    """,
]


def _task(row: sqlite3.Row) -> Task:
    return Task(
        id=row["id"],
        event_id=row["event_id"],
        room_id=row["room_id"],
        sender=row["sender"],
        body=row["body"],
        state=TaskState(row["state"]),
        origin_ts=row["origin_ts"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        result=row["result"],
        error=row["error"],
    )


def _outbox(row: sqlite3.Row) -> OutboxItem:
    return OutboxItem(
        txn_id=row["txn_id"],
        room_id=row["room_id"],
        event_type=row["event_type"],
        content=json.loads(row["content"]),
        task_id=row["task_id"],
        event_id=row["event_id"],
    )


class Database:
    """Our SQLite file; one connection, used from the event loop's thread."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, path: Path) -> Database:
        """Open (creating if needed) and migrate the database at `path`."""
        new = not path.exists()
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if new:
            path.chmod(0o600)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        db = cls(conn)
        db._migrate()
        return db

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: committed on exit, rolled back on error."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            with self.tx() as conn:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")

    # -- meta ------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """A value of the key-value table, or None."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set a value of the key-value table."""
        with self.tx() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def instance_id(self) -> str:
        """A random id of this ledger, made at its creation."""
        value = self.get_meta("instance_id")
        if value is None:
            value = uuid.uuid4().hex[:12]
            self.set_meta("instance_id", value)
        return value

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

    # -- the Matrix session ----------------------------------------------------------------

    def session(self) -> Session | None:
        """The saved login, if any."""
        row = self._conn.execute("SELECT * FROM session WHERE id = 1").fetchone()
        if row is None:
            return None
        return Session(row["homeserver"], row["user_id"], row["device_id"], row["access_token"])

    def save_session(self, session: Session) -> None:
        """Save the login (replacing any earlier one)."""
        with self.tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO session VALUES (1, ?, ?, ?, ?, ?)",
                (
                    session.homeserver,
                    session.user_id,
                    session.device_id,
                    session.access_token,
                    time.time(),
                ),
            )

    def sync_token(self) -> str | None:
        """The sync token whose events are all in the ledger."""
        row = self._conn.execute("SELECT next_batch FROM sync_state WHERE id = 1").fetchone()
        return None if row is None else str(row[0])

    def save_sync_token(self, token: str) -> None:
        """Record that every event before `token` is in the ledger."""
        with self.tx() as conn:
            conn.execute("INSERT OR REPLACE INTO sync_state VALUES (1, ?, ?)", (token, time.time()))

    # -- tasks -----------------------------------------------------------------------------

    def add_task(
        self, event_id: str, room_id: str, sender: str, body: str, origin_ts: int
    ) -> Task | None:
        """Record an owner message as a queued task; None if this event is already known."""
        with self.tx() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO tasks (event_id, room_id, sender, body, origin_ts, state,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (event_id, room_id, sender, body, origin_ts, TaskState.QUEUED, time.time()),
            )
            if cursor.rowcount == 0:
                return None
            row = conn.execute("SELECT * FROM tasks WHERE id = ?", (cursor.lastrowid,)).fetchone()
        return _task(row)

    def task(self, task_id: int) -> Task | None:
        """A task by its row id."""
        row = self._conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return None if row is None else _task(row)

    def next_task(self) -> Task | None:
        """The oldest task that is queued or was interrupted, in arrival order."""
        row = self._conn.execute(
            "SELECT * FROM tasks WHERE state IN (?, ?, ?) ORDER BY id LIMIT 1",
            (TaskState.RUNNING, TaskState.INTERRUPTED, TaskState.QUEUED),
        ).fetchone()
        return None if row is None else _task(row)

    def tasks_in(self, *states: TaskState, limit: int = 100) -> list[Task]:
        """Tasks in any of the given states, oldest first."""
        marks = ",".join("?" for _ in states)
        rows = self._conn.execute(
            f"SELECT * FROM tasks WHERE state IN ({marks}) ORDER BY id LIMIT ?", (*states, limit)
        ).fetchall()
        return [_task(row) for row in rows]

    def count_tasks(self) -> dict[str, int]:
        """How many tasks are in each state."""
        rows = self._conn.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").fetchall()
        return {str(row[0]): int(row[1]) for row in rows}

    def set_task_state(
        self,
        task_id: int,
        state: TaskState,
        *,
        result: str | None = None,
        error: str | None = None,
    ) -> None:
        """Move a task to a state, stamping when it started or finished."""
        now = time.time()
        with self.tx() as conn:
            conn.execute(
                "UPDATE tasks SET state = ?, result = COALESCE(?, result),"
                " error = COALESCE(?, error),"
                " started_at = CASE WHEN ? = 'running' THEN COALESCE(started_at, ?)"
                " ELSE started_at END,"
                " finished_at = CASE WHEN ? IN ('done', 'failed', 'cancelled') THEN ?"
                " ELSE finished_at END WHERE id = ?",
                (state, result, error, state, now, state, now, task_id),
            )

    # -- the conversation ------------------------------------------------------------------

    def current_conversation(self) -> int:
        """The open conversation's id, opening the first one if there is none."""
        row = self._conn.execute(
            "SELECT id FROM conversations WHERE closed_at IS NULL ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is not None:
            return int(row[0])
        with self.tx() as conn:
            cursor = conn.execute(
                "INSERT INTO conversations (started_at) VALUES (?)", (time.time(),)
            )
        return int(cursor.lastrowid or 0)

    def transcript(self, conversation_id: int) -> list[dict[str, Any]]:
        """The conversation's messages in order, as Messages API dicts."""
        rows = self._conn.execute(
            "SELECT role, content FROM transcript WHERE conversation_id = ? ORDER BY id",
            (conversation_id,),
        ).fetchall()
        return [{"role": row["role"], "content": json.loads(row["content"])} for row in rows]

    def task_messages(self, task_id: int) -> list[dict[str, Any]]:
        """The messages a task added to the transcript, in order."""
        rows = self._conn.execute(
            "SELECT role, content FROM transcript WHERE task_id = ? ORDER BY id", (task_id,)
        ).fetchall()
        return [{"role": row["role"], "content": json.loads(row["content"])} for row in rows]

    def append_message(
        self, conversation_id: int, task_id: int | None, role: str, content: list[dict[str, Any]]
    ) -> None:
        """Append one message to the transcript (committed before the next step)."""
        with self.tx() as conn:
            conn.execute(
                "INSERT INTO transcript (conversation_id, task_id, role, content, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (conversation_id, task_id, role, json.dumps(content), time.time()),
            )

    def record_usage(self, task_id: int | None, model: str, usage: dict[str, int]) -> None:
        """Record one request's token counts."""
        with self.tx() as conn:
            conn.execute(
                "INSERT INTO usage (task_id, model, input_tokens, output_tokens,"
                " cache_creation_input_tokens, cache_read_input_tokens, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    task_id,
                    model,
                    usage.get("input_tokens", 0),
                    usage.get("output_tokens", 0),
                    usage.get("cache_creation_input_tokens", 0),
                    usage.get("cache_read_input_tokens", 0),
                    time.time(),
                ),
            )

    # -- the outbox ------------------------------------------------------------------------

    def enqueue_outgoing(
        self,
        room_id: str,
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

    def mark_sent(self, txn_id: str, event_id: str) -> None:
        """Record the homeserver's event id for a sent message."""
        with self.tx() as conn:
            conn.execute(
                "UPDATE outbox SET event_id = ?, sent_at = ? WHERE txn_id = ?",
                (event_id, time.time(), txn_id),
            )
