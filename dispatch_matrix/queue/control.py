"""The control commands' effects: answered at once, without the model, even mid-task."""

from __future__ import annotations

import time

from .. import logs
from ..ids import RoomID
from ..store import Database, TaskState
from . import texts
from .commands import Command
from .ports import Room
from .worker import Worker

log = logs.get(__name__)


class Control:
    """Runs a parsed command and answers in the room."""

    def __init__(self, db: Database, worker: Worker, room: Room) -> None:
        self._db = db
        self._worker = worker
        self._room = room
        self._started = time.monotonic()

    async def run(self, command: Command, room_id: RoomID, event_id: str) -> None:
        """Do what the command says and reply to it."""
        handler = getattr(self, f"_{command.name}", None)
        text = await handler(command) if handler else texts.unknown_command(command.arg)
        await self._room.post(room_id, text, reply_to=event_id, notice=True, key=f"cmd-{event_id}")

    async def _unknown(self, command: Command) -> str:
        return texts.unknown_command(command.arg)

    async def _help(self, _command: Command) -> str:
        return texts.HELP

    async def _status(self, _command: Command) -> str:
        worker = self._worker
        current = self._db.task(worker.current.id) if worker.current else None
        elapsed = time.monotonic() - worker.current_since if worker.current_since else None
        queued = len(self._db.tasks_in(TaskState.QUEUED, TaskState.INTERRUPTED, limit=100_000))
        today = time.time() - 86_400
        done = sum(1 for t in self._db.recent_tasks(1000) if (t.finished_at or 0) > today)
        return texts.status(
            current, elapsed, queued, worker.paused, time.monotonic() - self._started, done
        )

    async def _queue(self, _command: Command) -> str:
        waiting = self._db.tasks_in(TaskState.INTERRUPTED, TaskState.QUEUED, limit=50)
        return texts.queue_list(waiting, self._worker.paused)

    async def _cancel(self, command: Command) -> str:
        wanted = command.task_id
        current = self._worker.current
        if wanted is None or (current is not None and current.id == wanted):
            task = await self._worker.cancel_running()
            log.info("command.cancel", task=task.short_id if task else None)
            # The worker posts "Cancelled." as the task's reply once it has stopped.
            return f"Stopping {task.short_id}…" if task else texts.NOTHING_RUNNING
        task = self._db.task(wanted)
        if task is None or task.state not in (TaskState.QUEUED, TaskState.INTERRUPTED):
            return texts.no_such_task(command.arg)
        self._db.set_task_state(task.id, TaskState.CANCELLED, error="cancelled from the queue")
        await self._worker.mirror.show(task, TaskState.CANCELLED)
        return texts.dropped(task)

    async def _pause(self, _command: Command) -> str:
        self._worker.set_paused(True)
        await self._worker.mirror.presence(self._worker.current, True)
        return texts.PAUSED

    async def _resume(self, _command: Command) -> str:
        self._worker.set_paused(False)
        await self._worker.mirror.presence(self._worker.current, False)
        return texts.RESUMED

    async def _retry(self, command: Command) -> str:
        wanted = command.task_id
        if wanted is None:
            candidates = [t for t in self._db.recent_tasks(20) if t.state is not TaskState.DONE]
            wanted = candidates[0].id if candidates else None
        task = self._db.requeue(wanted) if wanted is not None else None
        if task is None:
            return texts.no_such_task(command.arg or "to retry")
        self._worker.wake()
        await self._worker.mirror.show(task, TaskState.QUEUED)
        return texts.retried(task)

    async def _new(self, _command: Command) -> str:
        self._db.new_conversation()
        return texts.NEW_CONVERSATION

    async def _history(self, command: Command) -> str:
        count = int(command.arg) if command.arg.isdigit() else 10
        return texts.history(self._db.recent_tasks(min(count, 50)))
