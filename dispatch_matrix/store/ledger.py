"""The ledger: the tasks owners' messages became, with their approvals, the conversation
transcript and its summaries, and the model's usage; the rows it returns, as typed values.

The queue writes a task here before it is acknowledged in the room and moves it through its
states; the agent appends each step to the transcript and records each request's usage. The
outbox, which the Matrix layer writes, is in `matrix_tables.py`."""

from __future__ import annotations

import enum
import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.store.db import Connection


class TaskState(enum.StrEnum):
    """Where a task is in its life; the terminal ones never change again."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting-approval"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        """Whether the task has ended."""
        return self in (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED)


@dataclass(frozen=True)
class Task:
    """One owner message taken as work."""

    id: int
    event_id: EventID
    room_id: RoomID
    sender: UserID
    body: str
    state: TaskState
    origin_ts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    result: str | None
    error: str | None
    steps: int = 0
    # Files the owner sent with the task: {path, mimetype, size, name}.
    attachments: tuple[dict[str, object], ...] = ()
    # What the message replies to, for the model: "(This replies to … #7 …)"; None: no reply.
    reply_note: str | None = None

    @property
    def short_id(self) -> str:
        """A handle a person can type: the row number."""
        return f"#{self.id}"

    def title(self, width: int = 60) -> str:
        """The task's text shortened to one line, as lists and status lines name it."""
        line = self.body.strip().splitlines()[0] if self.body.strip() else ""
        return line if len(line) <= width else line[: width - 1] + "…"


@dataclass(frozen=True)
class TranscriptRow:
    """One stored message of the conversation, with the row id that names it."""

    id: int
    task_id: int | None
    role: str
    content: list[dict[str, Any]]

    def message(self) -> dict[str, Any]:
        """The message as a Messages API dict."""
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class Summary:
    """A summary that replaces, in requests, the turns up to `covers_up_to`."""

    id: int
    conversation_id: int
    covers_up_to: int
    text: str
    created_at: float


@dataclass(frozen=True)
class UsageRow:
    """The token counts of one model request."""

    task_id: int | None
    model: str
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    at: float
    # The part of cache_creation_input_tokens written with the 1-hour lifetime.
    cache_write_1h: int = 0
    # How it was paid: None (the API engine: the API), "api" or "plan" (the Claude Code
    # engine, from the credential it used).
    billing: str | None = None


def _task(row: sqlite3.Row) -> Task:
    return Task(
        id=row["id"],
        event_id=EventID(row["event_id"]),
        room_id=RoomID(row["room_id"]),
        sender=UserID(row["sender"]),
        body=row["body"],
        state=TaskState(row["state"]),
        origin_ts=row["origin_ts"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        result=row["result"],
        error=row["error"],
        steps=row["steps"],
        attachments=tuple(json.loads(row["attachments"] or "[]")),
        reply_note=row["reply_note"],
    )


_SET_STATE = (
    "UPDATE tasks SET state = ?, result = COALESCE(?, result), error = COALESCE(?, error),"
    " started_at = CASE WHEN ? = 'running' THEN COALESCE(started_at, ?) ELSE started_at END,"
    " finished_at = CASE WHEN ? IN ('done', 'failed', 'cancelled') THEN ? ELSE finished_at END"
    " WHERE id = ?"
)


def _state_params(
    task_id: int, state: TaskState, result: str | None, error: str | None
) -> tuple[Any, ...]:
    now = time.time()
    return (state, result, error, state, now, state, now, task_id)


class LedgerQueries(Connection):
    """Tasks and their approvals, the transcript and its summaries, usage."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(conn)
        # Per conversation: the row id the kept rows start after, and the parsed rows after
        # it, oldest first (see `transcript_rows`).
        self._rows: dict[int, tuple[int, list[TranscriptRow]]] = {}

    # -- tasks -----------------------------------------------------------------------------

    def add_task(
        self,
        event_id: EventID,
        room_id: RoomID,
        sender: UserID,
        body: str,
        origin_ts: int,
        attachments: list[dict[str, Any]] | None = None,
        reply_note: str | None = None,
    ) -> Task | None:
        """Record an owner message as a queued task; None if this event is already known."""
        with self.tx() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO tasks (event_id, room_id, sender, body, origin_ts, state,"
                " created_at, attachments, reply_note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event_id,
                    room_id,
                    sender,
                    body,
                    origin_ts,
                    TaskState.QUEUED,
                    time.time(),
                    json.dumps(attachments or []),
                    reply_note,
                ),
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
        with self.tx() as conn:
            conn.execute(_SET_STATE, _state_params(task_id, state, result, error))

    def stage_task_state(self, task_id: int, state: TaskState) -> None:
        """`set_task_state`, committed with the next transaction (see `stage`)."""
        self.stage(_SET_STATE, _state_params(task_id, state, None, None))

    def task_by_event(self, event_id: str) -> Task | None:
        """The task made from an event."""
        row = self._conn.execute("SELECT * FROM tasks WHERE event_id = ?", (event_id,)).fetchone()
        return None if row is None else _task(row)

    def tasks_finished_since(self, since: float, limit: int = 500) -> list[Task]:
        """Tasks that ended (done, failed, cancelled) at or after `since` (ledger time)."""
        rows = self._conn.execute(
            "SELECT * FROM tasks WHERE state IN (?, ?, ?) AND finished_at >= ?"
            " ORDER BY finished_at LIMIT ?",
            (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED, since, limit),
        ).fetchall()
        return [_task(row) for row in rows]

    def latest_room(self) -> RoomID | None:
        """The room of the newest task: where an unprompted message (the digest) goes."""
        row = self._conn.execute("SELECT room_id FROM tasks ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else RoomID(row[0])

    def recent_tasks(self, limit: int = 10) -> list[Task]:
        """The latest finished tasks, newest first."""
        rows = self._conn.execute(
            "SELECT * FROM tasks WHERE state IN (?, ?, ?) ORDER BY finished_at DESC LIMIT ?",
            (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED, limit),
        ).fetchall()
        return [_task(row) for row in rows]

    def edit_queued(self, event_id: str, body: str) -> Task | None:
        """Replace the text of a task that has not started; None if it has."""
        with self.tx() as conn:
            cursor = conn.execute(
                "UPDATE tasks SET body = ? WHERE event_id = ? AND state = ?",
                (body, event_id, TaskState.QUEUED),
            )
        return self.task_by_event(event_id) if cursor.rowcount else None

    def requeue(self, task_id: int) -> Task | None:
        """Put a failed, cancelled or interrupted task back in the queue."""
        with self.tx() as conn:
            cursor = conn.execute(
                "UPDATE tasks SET state = ?, error = NULL, result = NULL, finished_at = NULL"
                " WHERE id = ? AND state IN (?, ?, ?)",
                (
                    TaskState.QUEUED,
                    task_id,
                    TaskState.FAILED,
                    TaskState.CANCELLED,
                    TaskState.INTERRUPTED,
                ),
            )
        return self.task(task_id) if cursor.rowcount else None

    def count_step(self, task_id: int) -> int:
        """Count one more agent step for a task; returns the new count."""
        with self.tx() as conn:
            conn.execute("UPDATE tasks SET steps = steps + 1 WHERE id = ?", (task_id,))
            row = conn.execute("SELECT steps FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return int(row[0])

    def record_approval(
        self, task_id: int, subject: str, fingerprint: str, approved: bool, decided_by: str
    ) -> None:
        """Keep the decision on an approval question in the task's record."""
        with self.tx() as conn:
            conn.execute(
                "INSERT INTO approvals (task_id, subject, fingerprint, approved, decided_by, at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (task_id, subject, fingerprint, int(approved), decided_by, time.time()),
            )

    def approvals(self, task_id: int) -> list[tuple[str, bool, str]]:
        """A task's approval decisions: (subject, approved, decided by)."""
        rows = self._conn.execute(
            "SELECT subject, approved, decided_by FROM approvals WHERE task_id = ? ORDER BY id",
            (task_id,),
        ).fetchall()
        return [(r[0], bool(r[1]), r[2]) for r in rows]

    # -- commands run ----------------------------------------------------------------------

    def command_ran(self, event_id: str) -> bool:
        """Whether an owner's message was already handled as a command or an answer."""
        row = self._conn.execute(
            "SELECT 1 FROM commands_run WHERE event_id = ?", (event_id,)
        ).fetchone()
        return row is not None

    def record_command(self, event_id: str, name: str) -> bool:
        """Record that the message `event_id` is handled as command `name` (committed when
        this returns, or with the transaction it is called in); False when it was already."""
        with self.tx() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO commands_run (event_id, name, at) VALUES (?, ?, ?)",
                (event_id, name, time.time()),
            )
        return cursor.rowcount == 1

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

    def new_conversation(self) -> int:
        """Close the open conversation (it stays in the store) and open a fresh one."""
        now = time.time()
        with self.tx() as conn:
            conn.execute("UPDATE conversations SET closed_at = ? WHERE closed_at IS NULL", (now,))
            cursor = conn.execute("INSERT INTO conversations (started_at) VALUES (?)", (now,))
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

    def record_usage(
        self, task_id: int | None, model: str, usage: dict[str, int], billing: str | None = None
    ) -> None:
        """Record one request's token counts (`billing`: "plan" or "api" for the Claude Code
        engine, which knows how it is paid; None for the API engine)."""
        with self.tx() as conn:
            conn.execute(
                "INSERT INTO usage (task_id, model, input_tokens, output_tokens,"
                " cache_creation_input_tokens, cache_read_input_tokens, cache_write_1h, at,"
                " billing) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    task_id,
                    model,
                    usage.get("input_tokens", 0),
                    usage.get("output_tokens", 0),
                    usage.get("cache_creation_input_tokens", 0),
                    usage.get("cache_read_input_tokens", 0),
                    usage.get("cache_write_1h", 0),
                    time.time(),
                    billing,
                ),
            )

    # -- context: transcript rows with their ids, summaries ----------------------------------

    def transcript_rows(self, conversation_id: int, after_id: int = 0) -> list[TranscriptRow]:
        """The conversation's messages after row `after_id`, in order, with their row ids.

        Rows are never changed once written, so the parsed ones are kept: each request reads
        only the rows added since the last one (a long conversation was re-read and re-parsed
        whole for every step). Ids only grow (AUTOINCREMENT) and the daemon writes through one
        connection, so no row can appear below one already read. The rows are shared: read
        them, never modify them.

        What is kept starts where the latest read began (the summary's end): the rows a
        summary stands for are let go, so the cache is the context, not the whole life of the
        conversation (it kept every row: 7 KiB a turn, for months). A read from further back
        goes to the disk.
        """
        floor, cached = self._rows.get(conversation_id, (0, []))
        if after_id < floor:
            return self._read_rows(conversation_id, after_id)
        if after_id > floor:
            cached = [row for row in cached if row.id > after_id]
            floor = after_id
        newest = cached[-1].id if cached else floor
        fresh = self._read_rows(conversation_id, newest)
        # Only what is committed is kept: a row read inside an open transaction may still be
        # rolled back.
        if not self._conn.in_transaction:
            self._rows[conversation_id] = (floor, cached + fresh)
        return cached + fresh

    def _read_rows(self, conversation_id: int, after_id: int) -> list[TranscriptRow]:
        fetched = self._conn.execute(
            "SELECT id, task_id, role, content FROM transcript"
            " WHERE conversation_id = ? AND id > ? ORDER BY id",
            (conversation_id, after_id),
        ).fetchall()
        return [
            TranscriptRow(row["id"], row["task_id"], row["role"], json.loads(row["content"]))
            for row in fetched
        ]

    def add_summary(self, conversation_id: int, covers_up_to: int, text: str) -> Summary:
        """Record a summary that stands for the conversation up to row `covers_up_to`."""
        now = time.time()
        with self.tx() as conn:
            cursor = conn.execute(
                "INSERT INTO summaries (conversation_id, covers_up_to, text, created_at)"
                " VALUES (?, ?, ?, ?)",
                (conversation_id, covers_up_to, text, now),
            )
        return Summary(int(cursor.lastrowid or 0), conversation_id, covers_up_to, text, now)

    def latest_summary(self, conversation_id: int) -> Summary | None:
        """The newest summary of a conversation, if it was ever compacted."""
        row = self._conn.execute(
            "SELECT * FROM summaries WHERE conversation_id = ? ORDER BY id DESC LIMIT 1",
            (conversation_id,),
        ).fetchone()
        if row is None:
            return None
        return Summary(
            row["id"], row["conversation_id"], row["covers_up_to"], row["text"], row["created_at"]
        )

    # -- usage -----------------------------------------------------------------------------

    def usage_rows(self, since: float = 0.0, task_id: int | None = None) -> list[UsageRow]:
        """Recorded requests since a time (epoch seconds), optionally of one task only."""
        query = "SELECT * FROM usage WHERE at >= ?"
        params: list[Any] = [since]
        if task_id is not None:
            query += " AND task_id = ?"
            params.append(task_id)
        rows = self._conn.execute(query + " ORDER BY id", params).fetchall()
        return [
            UsageRow(
                task_id=row["task_id"],
                model=row["model"],
                input_tokens=row["input_tokens"],
                output_tokens=row["output_tokens"],
                cache_creation_input_tokens=row["cache_creation_input_tokens"],
                cache_read_input_tokens=row["cache_read_input_tokens"],
                at=row["at"],
                cache_write_1h=row["cache_write_1h"],
                billing=row["billing"],
            )
            for row in rows
        ]

    def tasks_with_usage(self, limit: int = 5) -> list[int]:
        """Ids of the tasks that made model requests most recently, newest first."""
        rows = self._conn.execute(
            "SELECT task_id FROM usage WHERE task_id IS NOT NULL"
            " GROUP BY task_id ORDER BY MAX(at) DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [int(row[0]) for row in rows]
