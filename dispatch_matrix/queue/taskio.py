"""The agent's channel to the room while one task runs (the `TaskIO` the agent sees): a
status message edited in place, approval questions, files, and the process groups `!cancel`
must stop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dispatch_matrix.agent.ports import Approval
from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.core.ids import EventID
from dispatch_matrix.queue import texts
from dispatch_matrix.queue.approvals import Approvals
from dispatch_matrix.queue.ports import Room
from dispatch_matrix.store import Task, TaskState
from dispatch_matrix.toolbox.groups import ProcessGroups

if TYPE_CHECKING:
    from dispatch_matrix.permissions.policy import Decision

log = logs.get(__name__)

# Edits of the status message are coalesced to one per interval: a fast tool loop never
# trips the homeserver's rate limit, and the phone is not flooded with notifications.
EDIT_INTERVAL_S = 2.0
# Final edits of status messages on their way: a task nobody else holds may be collected.
_FINAL_EDITS: set[asyncio.Task[None]] = set()


class RoomTaskIO:
    """TaskIO over the room for one task."""

    def __init__(
        self,
        task: Task,
        room: Room,
        approvals: Approvals,
        groups: ProcessGroups | None = None,
    ) -> None:
        self._task = task
        self._room = room
        self._approvals = approvals
        self._groups = groups
        self._status: EventID | None = None
        self._last_edit = 0.0
        self._pending: str | None = None
        self._flusher: asyncio.Task[None] | None = None
        # The newest step, shown or not: what the final edit says the task ended at.
        self._latest: str | None = None
        # The first post is on its way: let go, not withdrawn, at the end (the final edit
        # needs its event id, which a cancelled wait for it would lose).
        self._posting = False
        self._cancelled = False
        # Whether a tool of this task started a process group (recorded in `groups`).
        self._started_processes = False

    @property
    def task_id(self) -> int:
        """The task this channel is for."""
        return self._task.id

    async def progress(self, text: str) -> None:
        """Show the current step; never waits for the room. The first call posts the status
        message, later ones edit it, at most one edit per interval and only the newest."""
        self._latest = text
        self._pending = f"⚙️ {self._task.short_id} — {text}"
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending is not None:
            wait = EDIT_INTERVAL_S - (time.monotonic() - self._last_edit)
            if self._status is not None and wait > 0:
                await asyncio.sleep(wait)
            text, self._pending = self._pending, None
            self._last_edit = time.monotonic()
            if self._status is None:
                self._posting = True
                try:
                    status = await self._room.post_status(
                        self._task.room_id,
                        text,
                        reply_to=self._task.event_id,
                        task_id=self._task.id,
                        key=f"t{self._task.id}.progress",
                    )
                finally:
                    self._posting = False
                self._status = status or None
            else:
                await self._room.edit(self._task.room_id, self._status, text, notice=True)

    async def close(self) -> None:
        """End of the task: a status line not yet shown is not worth showing any more (a
        first post already on its way goes on, unwaited: the final edit needs its id).
        The groups its tools started stopped with them: their record is cleared, when there
        is one (a task that started no process costs the store nothing)."""
        if self._groups is not None and self._started_processes:
            self._groups.forget()
        self._pending = None
        if self._flusher is not None and not self._posting:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher

    def ended(self, state: TaskState) -> None:
        """The task ended: its status message, if it was shown, says so and names the step it
        ended at (it kept saying "⚙️ … step 3" for good, maybe an older step than the last,
        while `!status` said idle). A decoration: never waited for."""
        self._pending = None
        if self._flusher is not None and not self._posting:
            self._flusher.cancel()
        if self._latest is None:
            return
        final = asyncio.create_task(self._final_edit(state, self._latest), name="status-final")
        _FINAL_EDITS.add(final)
        final.add_done_callback(_FINAL_EDITS.discard)

    async def _final_edit(self, state: TaskState, step: str) -> None:
        if self._flusher is not None:
            with contextlib.suppress(asyncio.CancelledError, HomeserverError):
                await self._flusher
        if self._status is None:
            return
        text = texts.status_final(self._task, state, step)
        try:
            await self._room.edit(self._task.room_id, self._status, text, notice=True)
        except HomeserverError as err:
            log.info("task.status_final_failed", task=self._task.short_id, error=err.message)

    async def ask(self, decision: Decision, change: str | None = None) -> Approval:
        return await self._approvals.ask(self._task, decision, change)

    async def learned(self, rule: str | None) -> None:
        await self._approvals.learned(self._task, rule)

    async def send_file(self, path: Path, caption: str | None = None) -> str:
        return await self._room.send_file(
            self._task.room_id,
            path,
            caption,
            reply_to=self._task.event_id,
            task_id=self._task.id,
        )

    def cancel(self) -> None:
        """The owner cancelled the task (`!cancel`); said before its job is cancelled."""
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled

    def process_started(self, pgid: int) -> None:
        if self._groups is not None:
            self._groups.register(pgid)
            self._started_processes = True
        log.debug("task.process_started", task=self._task.short_id, pgid=pgid)
