"""The room mirrors the ledger: a reaction on each owner message shows its task's state, a
read receipt shows it was taken, typing shows work in progress, and the bot's presence says
what it is doing. All of it is decoration: it goes out beside the work, never ahead of it.
"""

from __future__ import annotations

import asyncio
import contextlib

from .. import logs
from ..ids import RoomID
from ..store import Database, Task, TaskState
from . import texts
from .ports import Room

log = logs.get(__name__)

# Clients drop a typing notice after its timeout; it is renewed well before that.
_TYPING_REFRESH_S = 20.0


class Mirror:
    """Shows task states in the room."""

    def __init__(self, db: Database, room: Room) -> None:
        self._db = db
        self._room = room
        # Intake and worker may change one task's reaction at once; one change at a time.
        self._lock = asyncio.Lock()
        self._announced: asyncio.Task[None] | None = None
        self._typing: asyncio.Task[None] | None = None

    async def show(self, task: Task, state: TaskState) -> None:
        """Replace the task's status reaction with the one for `state`."""
        async with self._lock:
            previous = self._db.status_reaction(task.id)
            # Fixed keys: a step repeated after a crash sends and redacts nothing twice.
            event_id = await self._room.react(
                task.room_id, task.event_id, texts.EMOJI[state], key=f"t{task.id}.react.{state}"
            )
            self._db.set_status_reaction(task.id, event_id)
            if previous and previous != event_id:
                await self._room.redact(
                    task.room_id, previous, key=f"t{task.id}.unreact.{previous}"
                )

    def started(self, task: Task, paused: bool) -> None:
        """The task is taken: ⚙️, read receipt, presence and typing, beside the model call
        (not before it); they are waited for only before the next status change."""
        self._announced = asyncio.create_task(self._announce(task, paused))
        self._typing = asyncio.create_task(self._keep_typing(task.room_id))

    async def stopped(self, task: Task, state: TaskState) -> None:
        """The task left the worker (done, failed, back in the queue): show `state`."""
        if self._typing is not None:
            self._typing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._typing
            self._typing = None
            await self._room.typing(task.room_id, False)
        if self._announced is not None:
            # Let the start-of-task updates land first, or ⚙️ would replace the final state.
            with contextlib.suppress(Exception):
                await self._announced
            self._announced = None
        await self.show(task, state)

    async def _announce(self, task: Task, paused: bool) -> None:
        await self._room.read_receipt(task.room_id, task.event_id)
        await self.show(task, TaskState.RUNNING)
        await self.presence(task, paused)

    async def _keep_typing(self, room: RoomID) -> None:
        while True:
            await self._room.typing(room, True)
            await asyncio.sleep(_TYPING_REFRESH_S)

    async def presence(self, current: Task | None, paused: bool) -> None:
        """Presence status: idle / working on … / paused."""
        if current is not None:
            status = f"working on {current.short_id}: {texts.first_line(current, 40)}"
        elif paused:
            status = "paused"
        else:
            status = "idle"
        await self._room.presence(status)
