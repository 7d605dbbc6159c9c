"""Schedules from the room, without the model: `!reminders`, `!cancel-reminder ID`, a ❌
reaction on a `!reminders` entry (from a trusted device: the router judged it), `!digest`.

`!reminders` posts one message per schedule, so a reaction names exactly one; only the
first few get their own message (each is an event the homeserver rate-limits), the header
says how many there are.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from zoneinfo import ZoneInfo

from dispatch_matrix.core import logs
from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.queue.intake import Command
from dispatch_matrix.queue.ports import Room
from dispatch_matrix.schedule import texts as schedule_texts
from dispatch_matrix.schedule.digest import Digest
from dispatch_matrix.schedule.tables import ScheduleTables

log = logs.get(__name__)

# Entries posted as their own messages; Synapse lets a burst of 10 events through at once.
ENTRY_MESSAGES = 8
CANCEL_KEYS = frozenset({"❌", "✖️", "✖"})
_REMINDER_ID = re.compile(r"^[#rR]?(\d+)$")

Handler = Callable[[Command, RoomID, EventID], Awaitable[None]]


def reminder_id(arg: str) -> int | None:
    """The schedule number in `r3`, `R3`, `#3` or `3`; None for anything else."""
    match = _REMINDER_ID.match(arg.strip())
    return int(match.group(1)) if match else None


class Reminders:
    """Answers the schedule commands and the ❌ on a list entry."""

    def __init__(
        self,
        schedules: ScheduleTables,
        room: Room,
        zone: ZoneInfo,
        digest: Digest,
        on_change: Callable[[], None],
    ) -> None:
        self._schedules = schedules
        self._room = room
        self._zone = zone
        self._digest = digest
        self._on_change = on_change

    def handlers(self) -> dict[str, Handler]:
        """The commands this answers, by name."""
        return {
            "reminders": self.list,
            "cancel-reminder": self.cancel,
            "digest": self.show_digest,
        }

    async def list(self, _command: Command, room_id: RoomID, event_id: EventID) -> None:
        """`!reminders`: a header, then one message per schedule (a ❌ on it cancels it)."""
        schedules = self._schedules.active_schedules()
        key = f"cmd-{event_id}"
        if not schedules:
            await self._room.post(
                room_id, schedule_texts.NO_REMINDERS, reply_to=event_id, notice=True, key=key
            )
            return
        shown = schedules[:ENTRY_MESSAGES]
        header = schedule_texts.reminders_header(len(schedules), len(shown), self._zone)
        await self._room.post(room_id, header, reply_to=event_id, notice=True, key=key)
        for schedule in shown:
            entry = await self._room.post(
                room_id,
                schedule_texts.reminder_entry(schedule, self._zone),
                notice=True,
                key=f"{key}-{schedule.short_id}",
            )
            if entry:
                self._schedules.remember_entry(entry, room_id, schedule.id)

    async def cancel(self, command: Command, room_id: RoomID, event_id: EventID) -> None:
        """`!cancel-reminder r3`."""
        wanted = reminder_id(command.arg)
        cancelled = self._schedules.cancel_schedule(wanted) if wanted is not None else None
        if cancelled is None:
            text = schedule_texts.no_such_reminder(command.arg)
        else:
            log.info("schedule.cancelled", schedule=cancelled.short_id, how="command")
            self._on_change()
            text = schedule_texts.reminder_cancelled(cancelled)
        await self._room.post(room_id, text, reply_to=event_id, notice=True, key=f"cmd-{event_id}")

    async def reaction(self, target: EventID, key: str, sender: UserID) -> bool:
        """A trusted owner's reaction: ❌ on a list entry cancels its schedule."""
        if key not in CANCEL_KEYS:
            return False
        entry = self._schedules.schedule_of_entry(target)
        if entry is None:
            return False
        schedule_id, room_id = entry
        cancelled = self._schedules.cancel_schedule(schedule_id)
        if cancelled is None:
            return True
        log.info("schedule.cancelled", schedule=cancelled.short_id, how="reaction", by=sender)
        self._on_change()
        await self._room.post(
            room_id,
            schedule_texts.reminder_cancelled(cancelled),
            reply_to=target,
            notice=True,
            key=f"unschedule-{schedule_id}",
        )
        return True

    async def show_digest(self, _command: Command, room_id: RoomID, event_id: EventID) -> None:
        """`!digest`: the check-in now, without moving the daily one's window."""
        text = self._digest.text(time.time())
        await self._room.post(room_id, text, reply_to=event_id, notice=True, key=f"cmd-{event_id}")
