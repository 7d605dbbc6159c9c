"""The agent's channel to the room while one task runs (the `TaskIO` the agent sees): a
status message edited in place, approval questions, files, and the process groups `!cancel`
must stop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from .. import logs
from ..agent.ports import Approval
from ..ids import EventID
from ..store import Task
from ..tools import Decision
from ..tools.groups import ProcessGroups
from .approvals import Approvals
from .ports import Room

log = logs.get(__name__)

# Edits of the status message are coalesced to one per interval: a fast tool loop never
# trips the homeserver's rate limit, and the phone is not flooded with notifications.
EDIT_INTERVAL_S = 2.0


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

    async def progress(self, text: str) -> None:
        """Show the current step; the first call posts, later ones edit (coalesced)."""
        line = f"⚙️ {self._task.short_id} — {text}"
        if self._status is None:
            self._status = await self._room.post(
                self._task.room_id,
                line,
                reply_to=self._task.event_id,
                task_id=self._task.id,
                notice=True,
                key=f"t{self._task.id}.progress",
            )
            self._last_edit = time.monotonic()
            return
        self._pending = line
        wait = EDIT_INTERVAL_S - (time.monotonic() - self._last_edit)
        if wait <= 0:
            await self._flush()
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_later(wait))

    async def _flush_later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        await self._flush()

    async def _flush(self) -> None:
        if self._pending is None or self._status is None:
            return
        text, self._pending = self._pending, None
        self._last_edit = time.monotonic()
        await self._room.edit(self._task.room_id, self._status, text, notice=True)

    async def close(self, final: str | None = None) -> None:
        """End of the task: stop pending edits; optionally leave a last status line."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        if final is not None and self._status is not None:
            self._pending = f"{final}"
            await self._flush()

    async def ask(self, decision: Decision) -> Approval:
        return await self._approvals.ask(self._task, decision)

    async def send_file(self, path: Path, caption: str | None = None) -> str:
        return await self._room.send_file(
            self._task.room_id,
            path,
            caption,
            reply_to=self._task.event_id,
            task_id=self._task.id,
        )

    def process_started(self, pgid: int) -> None:
        if self._groups is not None:
            self._groups.register(pgid)
        log.debug("task.process_started", task=self._task.short_id, pgid=pgid)
