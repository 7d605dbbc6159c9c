"""The room mirrors the ledger: a reaction on each owner message shows its task's state, a
read receipt shows it was taken, and the bot's presence says what it is doing."""

from __future__ import annotations

import asyncio

from .. import logs
from ..ids import RoomID
from ..store import Database, Task, TaskState
from . import texts
from .ports import Room

log = logs.get(__name__)


class Mirror:
    """Shows task states in the room."""

    def __init__(self, db: Database, room: Room) -> None:
        self._db = db
        self._room = room
        # Intake and worker may change one task's reaction at once; one change at a time.
        self._lock = asyncio.Lock()

    async def show(self, task: Task, state: TaskState) -> None:
        """Replace the task's status reaction with the one for `state`."""
        room = RoomID(task.room_id)
        async with self._lock:
            previous = self._db.status_reaction(task.id)
            # Fixed keys: a step repeated after a crash sends and redacts nothing twice.
            event_id = await self._room.react(
                room, task.event_id, texts.EMOJI[state], key=f"t{task.id}.react.{state}"
            )
            self._db.set_status_reaction(task.id, event_id)
            if previous and previous != event_id:
                await self._room.redact(room, previous, key=f"t{task.id}.unreact.{previous}")

    async def taken(self, task: Task) -> None:
        """The read receipt: the bot has started on this message."""
        await self._room.read_receipt(RoomID(task.room_id), task.event_id)

    async def presence(self, current: Task | None, paused: bool) -> None:
        """Presence status: idle / working on … / paused."""
        if current is not None:
            status = f"working on {current.short_id}: {texts.first_line(current, 40)}"
        elif paused:
            status = "paused"
        else:
            status = "idle"
        await self._room.presence(status)
