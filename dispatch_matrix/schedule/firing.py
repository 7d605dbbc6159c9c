"""The scheduler: turns due schedules into tasks in the queue, exactly once each.

A fire takes three steps, each safe to repeat after a kill -9:
1. one transaction advances the schedule (a one-shot is done; a recurring one moves to its
   next time after *now*, so missed periods collapse into this one fire) and records the
   fire under a key made of the schedule and its due time;
2. the reminder is posted through the outbox under a key made from the fire's: a repeat
   finds the first record and its event id, so the room never sees it twice;
3. the task is added with that event id, which the ledger de-duplicates.
A fire whose task is not in the ledger yet is pending; a start completes pending fires
before anything else. The task then runs in order with everything else, through the same
worker, its status reactions on the reminder message.

Time comes from the clock seam; the loop sleeps until the next due time, a nudge (a schedule
was added or cancelled) or a clock jump, whichever comes first.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from dispatch_matrix.core import logs
from dispatch_matrix.core.clock import Clock
from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.core.ids import EventID
from dispatch_matrix.queue.ports import Room
from dispatch_matrix.queue.worker import Worker
from dispatch_matrix.schedule import texts as schedule_texts
from dispatch_matrix.schedule.digest import Digest
from dispatch_matrix.schedule.tables import Fire, Schedule, ScheduleTables
from dispatch_matrix.schedule.timing import ScheduleError, ScheduleKind, Spec, plan
from dispatch_matrix.store import LedgerQueries, TaskState

log = logs.get(__name__)


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class Scheduler:
    """Fires due schedules into the queue; posts the daily digest when it is due."""

    def __init__(
        self,
        schedules: ScheduleTables,
        ledger: LedgerQueries,
        room: Room,
        worker: Worker,
        clock: Clock,
        zone: ZoneInfo,
        digest: Digest | None = None,
        changed: asyncio.Event | None = None,
    ) -> None:
        self._schedules = schedules
        self._ledger = ledger
        # A reminder reaches the owner's phone as a message that mentions them.
        self._room = room
        self._worker = worker
        self._clock = clock
        self._zone = zone
        self._digest = digest
        # Set when a schedule is added or cancelled (the schedule tool, the reminders'
        # commands): made before them, as the agent's tools are built before the scheduler.
        self._wake = changed or asyncio.Event()

    def nudge(self) -> None:
        """A schedule was added or cancelled: look at the times again now."""
        self._wake.set()

    async def run(self) -> None:
        """Complete pending fires, then fire schedules as they come due, until cancelled."""
        await self.complete_pending()
        while True:
            # Cleared before looking, so a nudge during this pass is not lost.
            self._wake.clear()
            now = await self.tick()
            upcoming = self.next_wake(now)
            log.info(
                "schedule.waiting",
                now=now.isoformat(),
                next=upcoming.isoformat() if upcoming else None,
                due_in_s=round((upcoming - now).total_seconds(), 1) if upcoming else None,
            )
            await self._clock.wait_until(upcoming, self._wake)

    async def tick(self) -> datetime:
        """Fire everything due now (and the daily digest); returns the `now` it used."""
        now = self._clock.now()
        for schedule in self._schedules.due_schedules(now.timestamp()):
            try:
                await self.fire(schedule, now)
            except HomeserverError:
                raise
            except Exception:
                # A bug met firing one schedule must not stop the others, nor the daemon (a
                # crash would restart into the same fire). It was advanced first, so it does
                # not come straight back; its fire stays pending for the next start.
                log.exception("schedule.fire_crashed", schedule=schedule.short_id)
        if self._digest is not None:
            await self._digest.post_if_due(now, time.time())
        return now

    def next_wake(self, now: datetime) -> datetime | None:
        """The soonest of the next schedule and the next daily digest."""
        times = [
            _at(s.next_at)
            for s in self._schedules.active_schedules(limit=1)
            if s.next_at is not None
        ]
        if self._digest is not None and (daily := self._digest.next_at(now)) is not None:
            times.append(daily)
        return min(times) if times else None

    async def fire(self, schedule: Schedule, now: datetime) -> Fire | None:
        """Fire one due schedule: record, announce, queue (see the module docstring)."""
        if schedule.next_at is None:
            return None
        try:
            spec = Spec(ScheduleKind(schedule.kind), schedule.spec)
            decided = plan(spec, _at(schedule.anchor), _at(schedule.next_at), now, self._zone)
        except (ScheduleError, ValueError) as err:
            # Written by an older version, or a cron that can never fire again: stop it.
            log.error("schedule.broken", schedule=schedule.short_id, error=str(err))
            self._schedules.cancel_schedule(schedule.id)
            return None
        next_at = decided.next_at.timestamp() if decided.next_at else None
        fire = self._schedules.record_fire(
            schedule, next_at, now.timestamp(), decided.late.total_seconds()
        )
        if fire is None:
            return None
        log.info(
            "schedule.fired",
            schedule=schedule.short_id,
            key=fire.key,
            late_s=round(fire.late_s, 1),
            next=decided.next_at.isoformat() if decided.next_at else None,
        )
        await self._deliver(fire)
        return fire

    async def complete_pending(self) -> None:
        """Fires a crash left without their task: announce (once) and queue them now."""
        for fire in self._schedules.pending_fires():
            log.warning("schedule.fire_resumed", key=fire.key)
            try:
                await self._deliver(fire)
            except HomeserverError:
                raise
            except Exception:
                log.exception("schedule.fire_crashed", key=fire.key)

    async def _deliver(self, fire: Fire) -> None:
        schedule = self._schedules.schedule(fire.schedule_id)
        if schedule is None:
            return
        text = schedule_texts.reminder(schedule, fire, self._zone)
        event_id = await self._room.mention(
            schedule.room_id, text, schedule.owner, key=f"fire-{fire.key}"
        )
        posted = bool(event_id)
        if not posted:
            # The outbox gave up on the room (we left it?): the task still runs, on record.
            event_id = EventID(f"fire:{fire.key}")
        origin = self._ledger.task(schedule.origin_task) if schedule.origin_task else None
        body = schedule_texts.task_body(schedule, fire, origin, self._zone)
        task = self._ledger.add_task(
            event_id, schedule.room_id, schedule.owner, body, int(fire.fired_at * 1000)
        )
        existing = task or self._ledger.task_by_event(event_id)
        if existing is None:
            return
        self._schedules.complete_fire(fire.key, event_id, existing.id)
        if task is not None:
            log.info("task.queued", task=task.short_id, room=task.room_id, schedule=fire.key)
            if posted:
                self._worker.mirror.show(task, TaskState.QUEUED)
            self._worker.wake()
