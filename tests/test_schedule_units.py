"""The clock seam, the machine's zone, the schedules ledger and the scheduler, with a moved
clock and a stand-in room (no homeserver): each fire happens once, crashes included."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from dispatch_matrix.core.clock import SystemClock
from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.queue.worker import Worker
from dispatch_matrix.schedule.firing import Scheduler
from dispatch_matrix.schedule.tables import Schedule, ScheduleState, ScheduleTables
from dispatch_matrix.schedule.zones import machine_zone_name, owner_zone
from dispatch_matrix.store import Database, Task, TaskState

BERLIN = ZoneInfo("Europe/Berlin")
ROOM, OWNER = RoomID("!dm:hs"), UserID("@owner:hs")
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


class MovedClock:
    """A clock the test sets; waiting returns when moved or woken."""

    def __init__(self, now: datetime) -> None:
        self.current = now
        self.moved = asyncio.Event()
        self.waits: list[datetime | None] = []
        self.waiting = asyncio.Event()

    def now(self) -> datetime:
        return self.current

    def move(self, delta: timedelta) -> None:
        self.current += delta
        self.moved.set()

    async def wait_until(self, when: datetime | None, wake: asyncio.Event) -> None:
        """Returns when due or woken only: a loop that missed a nudge would wait forever."""
        self.waits.append(when)
        self.waiting.set()
        while when is None or self.current < when:
            if wake.is_set():
                return
            self.moved.clear()
            waiter = asyncio.ensure_future(wake.wait())
            mover = asyncio.ensure_future(self.moved.wait())
            await asyncio.wait({waiter, mover}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            mover.cancel()


class FakeRoom:
    """The outbox's dedup by key, without a homeserver; can fail the next N mentions."""

    def __init__(self) -> None:
        self.sent: dict[str, tuple[str, dict[str, Any]]] = {}
        self.order: list[str] = []
        self.fail_mentions = 0
        self.posted = asyncio.Event()

    async def mention(
        self, room_id: RoomID, markdown: str, user_id: UserID, *, key: str
    ) -> EventID:
        if self.fail_mentions:
            self.fail_mentions -= 1
            raise OSError("power cut")
        return self._send(key, markdown, {"mention": user_id})

    async def post(self, room_id: RoomID, markdown: str, **kw: Any) -> EventID:
        return self._send(kw.get("key") or f"k{len(self.order)}", markdown, kw)

    def _send(self, key: str, text: str, extra: dict[str, Any]) -> EventID:
        if key not in self.sent:
            self.sent[key] = (text, extra)
            self.order.append(key)
        self.posted.set()
        return EventID(f"${key}")

    async def react(self, room_id: RoomID, event_id: str, emoji: str, **_: Any) -> EventID:
        return EventID(f"$r{emoji}{event_id}")

    async def redact(self, *_: Any, **__: Any) -> None: ...
    async def read_receipt(self, *_: Any) -> None: ...
    async def presence(self, *_: Any, **__: Any) -> None: ...
    async def typing(self, *_: Any) -> None: ...

    def mentions(self) -> list[str]:
        return [self.sent[k][0] for k in self.order if "mention" in self.sent[k][1]]


class NoAgent:
    async def answer(self, task: Task, io: Any) -> str:
        raise AssertionError("the worker is not run in these tests")


def setup(tmp_path: Path, clock: MovedClock) -> tuple[Database, FakeRoom, Scheduler]:
    db = Database.open(tmp_path / "d.db")
    room = FakeRoom()
    worker = Worker(db, NoAgent(), room, approval_timeout_s=60, outage_first_s=30)
    return db, room, Scheduler(ScheduleTables(db), db, room, worker, clock, BERLIN)


def add(db: Database, kind: str, spec: str, next_at: datetime, **kw: Any) -> Schedule:
    return ScheduleTables(db).add_schedule(
        title=kw.get("title", "Stretch"),
        prompt=kw.get("prompt", "Remind the owner to stretch."),
        kind=kind,
        spec=spec,
        room_id=ROOM,
        owner=OWNER,
        origin_task=kw.get("origin_task"),
        anchor=kw.get("anchor", T0).timestamp(),
        next_at=next_at.timestamp(),
    )


def queued(db: Database) -> list[Task]:
    return db.tasks_in(TaskState.QUEUED)


# -- the clock seam -----------------------------------------------------------------------


async def test_the_test_clock_reads_its_offset_and_notices_a_move_at_once(tmp_path: Path) -> None:
    clock = SystemClock.for_tests(tmp_path)
    assert abs(clock.now().timestamp() - time.time()) < 1, "no file: no offset"
    (tmp_path / "clock-offset").write_text("3600")
    assert abs(clock.now().timestamp() - time.time() - 3600) < 1
    far = clock.now() + timedelta(days=3)
    waiting = asyncio.create_task(clock.wait_until(far, asyncio.Event()))
    await asyncio.sleep(0.3)
    assert not waiting.done(), "nothing moved, nothing due"
    began = time.monotonic()
    (tmp_path / "clock-offset").write_text(str(3600 + 86400))
    await asyncio.wait_for(waiting, 2)
    print(f"clock move noticed after {time.monotonic() - began:.3f}s")


async def test_a_wait_ends_at_its_time_or_when_woken(tmp_path: Path) -> None:
    clock = SystemClock(slice_s=0.05)
    due = clock.now() + timedelta(seconds=0.2)
    # A hang guard (generous: a loaded machine is late, never early).
    await asyncio.wait_for(clock.wait_until(due, asyncio.Event()), 30)
    # It ended at its time, not before (read on the clock it waits on).
    assert clock.now() >= due
    wake = asyncio.Event()
    waiting = asyncio.create_task(clock.wait_until(None, wake))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    wake.set()
    await asyncio.wait_for(waiting, 30)


@pytest.mark.parametrize(
    ("environ", "link", "expected"),
    [
        ({"TZ": "Europe/Berlin"}, "/usr/share/zoneinfo/Asia/Tokyo", "Europe/Berlin"),
        ({"TZ": ":America/New_York"}, None, "America/New_York"),
        ({"TZ": "UTC0"}, "/usr/share/zoneinfo/Asia/Tokyo", "Asia/Tokyo"),
        ({}, "/usr/share/zoneinfo/Australia/Sydney", "Australia/Sydney"),
        ({}, None, "UTC"),
    ],
)
def test_the_machine_zone_is_an_iana_name(
    tmp_path: Path, environ: dict[str, str], link: str | None, expected: str
) -> None:
    localtime = tmp_path / "localtime"
    if link is not None:
        localtime.symlink_to(link)
    assert machine_zone_name(environ, localtime) == expected


def test_the_configured_zone_wins_and_a_wrong_one_names_the_key() -> None:
    assert owner_zone("Pacific/Auckland").key == "Pacific/Auckland"
    with pytest.raises(Exception, match="schedule.timezone"):
        owner_zone("Mars/Olympus")


# -- the ledger ---------------------------------------------------------------------------


def test_a_due_time_is_fired_once_however_often_it_is_recorded(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    schedule = add(db, "at", "2026-12-01T10:01:00Z", T0 + timedelta(minutes=1))
    first = ScheduleTables(db).record_fire(schedule, None, T0.timestamp() + 60, 0.0)
    again = ScheduleTables(db).record_fire(schedule, None, T0.timestamp() + 61, 0.0)
    assert first is not None and again is None
    done = ScheduleTables(db).schedule(schedule.id)
    assert done is not None and done.state is ScheduleState.DONE and done.next_at is None
    assert ScheduleTables(db).due_schedules(T0.timestamp() + 86400) == []
    assert [f.key for f in ScheduleTables(db).pending_fires()] == [first.key]


# -- the scheduler ------------------------------------------------------------------------


async def test_a_reminder_fires_at_its_time_not_before(tmp_path: Path) -> None:
    clock = MovedClock(T0)
    db, room, scheduler = setup(tmp_path, clock)
    add(db, "at", "2026-12-01T10:01:00Z", T0 + timedelta(minutes=1))
    clock.move(timedelta(seconds=59))
    await scheduler.tick()
    assert room.mentions() == [] and queued(db) == []
    clock.move(timedelta(seconds=2))
    await scheduler.tick()
    assert len(room.mentions()) == 1
    text = room.mentions()[0]
    assert text.startswith("⏰ **Stretch** (r1)") and "late" not in text
    assert OWNER in text
    [task] = queued(db)
    assert task.sender == OWNER and task.event_id == EventID(
        "$fire-s1-" + str(int((T0 + timedelta(minutes=1)).timestamp() * 1000))
    )
    assert task.body.startswith('[Scheduled task r1 "Stretch" (once)')
    assert "Remind the owner to stretch." in task.body
    await scheduler.tick()
    assert len(room.mentions()) == 1 and len(queued(db)) == 1


async def test_the_loop_wakes_for_a_new_schedule_and_for_its_time(tmp_path: Path) -> None:
    clock = MovedClock(T0)
    db, room, scheduler = setup(tmp_path, clock)
    runner = asyncio.create_task(scheduler.run())
    await asyncio.wait_for(clock.waiting.wait(), 2)
    assert clock.waits == [None], "nothing scheduled: it waits for a nudge"
    clock.waiting.clear()
    add(db, "at", "2026-12-01T10:05:00Z", T0 + timedelta(minutes=5))
    scheduler.nudge()
    await asyncio.wait_for(clock.waiting.wait(), 2)
    assert clock.waits == [None, T0 + timedelta(minutes=5)]
    clock.move(timedelta(minutes=5))
    await asyncio.wait_for(room.posted.wait(), 2)
    runner.cancel()
    assert len(room.mentions()) == 1


async def test_a_crash_between_firing_and_queueing_completes_once_on_restart(
    tmp_path: Path,
) -> None:
    clock = MovedClock(T0 + timedelta(minutes=1))
    db, room, scheduler = setup(tmp_path, clock)
    add(db, "at", "2026-12-01T10:01:00Z", T0 + timedelta(minutes=1))
    # The post fails as a kill -9 would cut it short (the scheduler logs it and goes on).
    room.fail_mentions = 1
    await scheduler.tick()
    assert ScheduleTables(db).due_schedules(clock.now().timestamp()) == [], (
        "advanced before posting"
    )
    assert len(ScheduleTables(db).pending_fires()) == 1 and room.mentions() == []
    # The restart: a new scheduler over the same ledger and room.
    worker = Worker(db, NoAgent(), room, approval_timeout_s=60, outage_first_s=30)
    restarted = Scheduler(ScheduleTables(db), db, room, worker, clock, BERLIN)
    await restarted.complete_pending()
    await restarted.complete_pending()
    await restarted.tick()
    assert len(room.mentions()) == 1 and len(queued(db)) == 1
    assert ScheduleTables(db).pending_fires() == []


async def test_a_crash_after_posting_before_queueing_posts_nothing_twice(tmp_path: Path) -> None:
    clock = MovedClock(T0 + timedelta(minutes=1))
    db, room, scheduler = setup(tmp_path, clock)
    schedule = add(db, "at", "2026-12-01T10:01:00Z", T0 + timedelta(minutes=1))
    fire = ScheduleTables(db).record_fire(schedule, None, clock.now().timestamp(), 0.0)
    assert fire is not None
    # As if the reminder went out and the process died before its task was written.
    await room.mention(ROOM, "⏰ first try", OWNER, key=f"fire-{fire.key}")
    await scheduler.complete_pending()
    assert room.mentions() == ["⏰ first try"]
    [task] = queued(db)
    assert task.event_id == EventID(f"$fire-{fire.key}")


async def test_a_recurring_one_missed_for_days_fires_once_marked_late(tmp_path: Path) -> None:
    clock = MovedClock(T0)
    db, room, scheduler = setup(tmp_path, clock)
    schedule = add(db, "every", "1d", T0 + timedelta(days=1))
    clock.move(timedelta(days=5, hours=2, minutes=10))
    await scheduler.tick()
    await scheduler.tick()
    [text] = room.mentions()
    assert text.startswith("⏰ 4 d 2 h late: **Stretch**")
    assert "Next: Mon 2026-12-07 11:00 CET (every 1d)" in text
    after = ScheduleTables(db).schedule(schedule.id)
    assert after is not None and after.next_at == (T0 + timedelta(days=6)).timestamp()
    [task] = queued(db)
    assert "fired 4 d 2 h late" in task.body


async def test_a_cancelled_schedule_never_fires(tmp_path: Path) -> None:
    clock = MovedClock(T0)
    db, room, scheduler = setup(tmp_path, clock)
    schedule = add(db, "every", "2h", T0 + timedelta(hours=2))
    assert ScheduleTables(db).cancel_schedule(schedule.id) is not None
    assert ScheduleTables(db).cancel_schedule(schedule.id) is None
    clock.move(timedelta(days=1))
    await scheduler.tick()
    assert room.mentions() == [] and scheduler.next_wake(clock.now()) is None


async def test_a_follow_up_carries_the_task_that_set_it(tmp_path: Path) -> None:
    clock = MovedClock(T0)
    db, room, scheduler = setup(tmp_path, clock)
    origin = db.add_task(EventID("$ask"), ROOM, OWNER, "Check yesterday's deployment", 1)
    assert origin is not None
    db.set_task_state(origin.id, TaskState.DONE, result="Still rolling out: 3 of 5 pods.")
    add(
        db,
        "at",
        "2026-12-01T12:00:00Z",
        T0 + timedelta(hours=2),
        title="Check the deployment again",
        prompt="Check whether the rollout finished; if not, pull the logs and summarise.",
        origin_task=origin.id,
    )
    clock.move(timedelta(hours=2))
    await scheduler.tick()
    task = queued(db)[-1]
    assert "set during task #1" in task.body
    assert "Check yesterday's deployment" in task.body
    assert "Still rolling out: 3 of 5 pods." in task.body
    assert "pull the logs" in task.body
