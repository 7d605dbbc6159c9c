"""The schedule feature's tables: schedules (reminders, recurring tasks, follow-ups) and
their fires.

Times of schedules (`anchor`, `next_at`, `due_at`, `fired_at`) are epoch seconds read from
the daemon's clock seam, not stamped here: the scheduler decides what "now" is. A fire is
recorded in the same transaction that advances its schedule, keyed by schedule and due time,
so a schedule fires at most once per due time whatever crashes; the fire stays pending until
its task is in the ledger, and a restart completes it.
"""

from __future__ import annotations

import enum
import sqlite3
import time
from dataclasses import dataclass

from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.store import Connection


class ScheduleState(enum.StrEnum):
    """Whether a schedule may still fire."""

    ACTIVE = "active"
    DONE = "done"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Schedule:
    """One schedule: what to do, when (kind + spec, read in the owner's zone), for whom."""

    id: int
    title: str
    prompt: str
    kind: str
    spec: str
    room_id: RoomID
    owner: UserID
    origin_task: int | None
    anchor: float
    next_at: float | None
    state: ScheduleState
    fired_count: int
    last_fired_at: float | None

    @property
    def short_id(self) -> str:
        """A handle a person can type: `r3`."""
        return f"r{self.id}"


@dataclass(frozen=True)
class Fire:
    """One firing of a schedule; `task_id` is None until its task is in the ledger."""

    key: str
    schedule_id: int
    due_at: float
    fired_at: float
    late_s: float
    event_id: EventID | None
    task_id: int | None


def _schedule(row: sqlite3.Row) -> Schedule:
    return Schedule(
        id=row["id"],
        title=row["title"],
        prompt=row["prompt"],
        kind=row["kind"],
        spec=row["spec"],
        room_id=RoomID(row["room_id"]),
        owner=UserID(row["owner"]),
        origin_task=row["origin_task"],
        anchor=row["anchor"],
        next_at=row["next_at"],
        state=ScheduleState(row["state"]),
        fired_count=row["fired_count"],
        last_fired_at=row["last_fired_at"],
    )


def _fire(row: sqlite3.Row) -> Fire:
    return Fire(
        key=row["key"],
        schedule_id=row["schedule_id"],
        due_at=row["due_at"],
        fired_at=row["fired_at"],
        late_s=row["late_s"],
        event_id=EventID(row["event_id"]) if row["event_id"] is not None else None,
        task_id=row["task_id"],
    )


def fire_key(schedule_id: int, due_at: float) -> str:
    """The fire's key: the same schedule and due time always give the same key."""
    return f"s{schedule_id}-{int(round(due_at * 1000))}"


class ScheduleTables:
    """Schedules, their fires, and the `!reminders` list entries that point at them (the
    `schedules`, `fires` and `schedule_entries` tables, migration step 9)."""

    def __init__(self, db: Connection) -> None:
        self._db = db

    def add_schedule(
        self,
        *,
        title: str,
        prompt: str,
        kind: str,
        spec: str,
        room_id: RoomID,
        owner: UserID,
        origin_task: int | None,
        anchor: float,
        next_at: float,
    ) -> Schedule:
        """Record a new active schedule."""
        with self._db.tx() as conn:
            cursor = conn.execute(
                "INSERT INTO schedules (title, prompt, kind, spec, room_id, owner, origin_task,"
                " anchor, next_at, state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    title,
                    prompt,
                    kind,
                    spec,
                    room_id,
                    owner,
                    origin_task,
                    anchor,
                    next_at,
                    ScheduleState.ACTIVE,
                    time.time(),
                ),
            )
            row = conn.execute(
                "SELECT * FROM schedules WHERE id = ?", (cursor.lastrowid,)
            ).fetchone()
        return _schedule(row)

    def schedule(self, schedule_id: int) -> Schedule | None:
        """A schedule by id, in any state."""
        row = self._db.read("SELECT * FROM schedules WHERE id = ?", (schedule_id,)).fetchone()
        return None if row is None else _schedule(row)

    def active_schedules(self, limit: int = 1000) -> list[Schedule]:
        """Schedules that may still fire, soonest first."""
        rows = self._db.read(
            "SELECT * FROM schedules WHERE state = ? ORDER BY next_at, id LIMIT ?",
            (ScheduleState.ACTIVE, limit),
        ).fetchall()
        return [_schedule(row) for row in rows]

    def due_schedules(self, now: float) -> list[Schedule]:
        """Active schedules whose time has come, oldest due first."""
        rows = self._db.read(
            "SELECT * FROM schedules WHERE state = ? AND next_at <= ? ORDER BY next_at, id",
            (ScheduleState.ACTIVE, now),
        ).fetchall()
        return [_schedule(row) for row in rows]

    def record_fire(
        self, schedule: Schedule, next_at: float | None, fired_at: float, late_s: float
    ) -> Fire | None:
        """Advance a due schedule and record its fire, in one transaction.

        The update only applies while the schedule still has the `next_at` it was read
        with, so a schedule is never fired twice for one due time; None when it was not.
        A schedule without a next time is done.
        """
        due_at = schedule.next_at
        if due_at is None:
            return None
        key = fire_key(schedule.id, due_at)
        with self._db.tx() as conn:
            cursor = conn.execute(
                "UPDATE schedules SET next_at = ?, fired_count = fired_count + 1,"
                " last_fired_at = ?, state = CASE WHEN ? IS NULL THEN ? ELSE state END"
                " WHERE id = ? AND state = ? AND next_at = ?",
                (
                    next_at,
                    fired_at,
                    next_at,
                    ScheduleState.DONE,
                    schedule.id,
                    ScheduleState.ACTIVE,
                    due_at,
                ),
            )
            if cursor.rowcount == 0:
                return None
            conn.execute(
                "INSERT OR IGNORE INTO fires (key, schedule_id, due_at, fired_at, late_s)"
                " VALUES (?, ?, ?, ?, ?)",
                (key, schedule.id, due_at, fired_at, late_s),
            )
            row = conn.execute("SELECT * FROM fires WHERE key = ?", (key,)).fetchone()
        return _fire(row)

    def pending_fires(self) -> list[Fire]:
        """Fires whose task is not in the ledger yet (a crash came between), oldest first."""
        rows = self._db.read(
            "SELECT * FROM fires WHERE task_id IS NULL ORDER BY fired_at, key"
        ).fetchall()
        return [_fire(row) for row in rows]

    def fires_of(self, schedule_id: int) -> list[Fire]:
        """Every fire of one schedule, oldest first."""
        rows = self._db.read(
            "SELECT * FROM fires WHERE schedule_id = ? ORDER BY fired_at", (schedule_id,)
        ).fetchall()
        return [_fire(row) for row in rows]

    def complete_fire(self, key: str, event_id: EventID, task_id: int) -> None:
        """The fire's message is in the room and its task in the ledger."""
        with self._db.tx() as conn:
            conn.execute(
                "UPDATE fires SET event_id = ?, task_id = ? WHERE key = ?",
                (event_id, task_id, key),
            )

    def cancel_schedule(self, schedule_id: int) -> Schedule | None:
        """Cancel an active schedule; None if there is no such active one."""
        with self._db.tx() as conn:
            cursor = conn.execute(
                "UPDATE schedules SET state = ?, next_at = NULL WHERE id = ? AND state = ?",
                (ScheduleState.CANCELLED, schedule_id, ScheduleState.ACTIVE),
            )
        return self.schedule(schedule_id) if cursor.rowcount else None

    # -- the `!reminders` list: which message shows which schedule ---------------------------

    def remember_entry(self, event_id: EventID, room_id: RoomID, schedule_id: int) -> None:
        """The message `event_id` shows schedule `schedule_id` (a ❌ on it cancels it)."""
        with self._db.tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO schedule_entries (event_id, room_id, schedule_id)"
                " VALUES (?, ?, ?)",
                (event_id, room_id, schedule_id),
            )

    def schedule_of_entry(self, event_id: EventID) -> tuple[int, RoomID] | None:
        """The schedule a list entry shows and the room it is in, if that event is one."""
        row = self._db.read(
            "SELECT schedule_id, room_id FROM schedule_entries WHERE event_id = ?", (event_id,)
        ).fetchone()
        return None if row is None else (int(row[0]), RoomID(row[1]))
