"""The worker: takes tasks from the ledger one at a time, in arrival order, and answers.

The ledger is the truth: the worker holds nothing that a restart cannot rebuild. A task
left `running` by a crash is picked up again first.
"""

from __future__ import annotations

import asyncio
import contextlib

from .. import logs
from ..errors import ModelError
from ..ids import RoomID
from ..store import Database, Task, TaskState
from .ports import Answerer, Room

log = logs.get(__name__)

_TYPING_REFRESH_S = 20.0


class Worker:
    """Runs queued tasks through the agent and posts each answer as a reply."""

    def __init__(self, db: Database, agent: Answerer, room: Room) -> None:
        self._db = db
        self._agent = agent
        self._room = room
        self._wake = asyncio.Event()
        self.current: Task | None = None

    def wake(self) -> None:
        """Tell the worker there may be new work."""
        self._wake.set()

    async def run(self) -> None:
        """Work until cancelled."""
        while True:
            task = self._db.next_task()
            if task is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._run_one(task)

    async def _run_one(self, task: Task) -> None:
        self.current = task
        self._db.set_task_state(task.id, TaskState.RUNNING)
        log.info("task.started", task=task.short_id, room=task.room_id)
        room = RoomID(task.room_id)
        typing = asyncio.create_task(self._keep_typing(room))
        try:
            answer = await self._agent.answer(task)
        except ModelError as err:
            self._db.set_task_state(task.id, TaskState.FAILED, error=err.message)
            log.warning("task.failed", task=task.short_id, error=err.message)
            await self._stop_typing(typing, room)
            await self._room.post(
                room,
                f"⚠️ I could not finish this: {err.message}",
                reply_to=task.event_id,
                task_id=task.id,
                key=f"t{task.id}.failed",
            )
            return
        finally:
            self.current = None
        await self._stop_typing(typing, room)
        # The answer is posted before the task counts as done: a crash in between re-posts
        # it under the same transaction id at the next start, never loses it.
        await self._room.post(
            room, answer, reply_to=task.event_id, task_id=task.id, key=f"t{task.id}.answer"
        )
        self._db.set_task_state(task.id, TaskState.DONE, result=answer)
        log.info("task.done", task=task.short_id)

    async def _keep_typing(self, room: RoomID) -> None:
        while True:
            await self._room.typing(room, True)
            await asyncio.sleep(_TYPING_REFRESH_S)

    async def _stop_typing(self, typing: asyncio.Task[None], room: RoomID) -> None:
        typing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await typing
        await self._room.typing(room, False)
