"""The room mirrors the ledger: a reaction on each owner message shows its task's state, a
read receipt shows it was taken, typing shows work in progress, and the bot's presence says
what it is doing. All of it is decoration: it goes out beside the work, never ahead of it,
and nothing here is waited for on the way to an answer.

A state must stand a moment before it is worth a room event: a task taken at once never
shows ⏳, one answered within seconds never shows ⚙️, so a quick task costs the answer and
its ✅. A newer state supersedes an older one not yet sent; the reaction that showed the
previous state is redacted once the new one is in the room. Typing waits a moment too, and
a message gets its read receipt once: each of those requests wakes the owner's sync and
the bot's, on a homeserver that is busy with the answer just then.

While a task runs, the agent's channel to the room (`RoomTaskIO`, the `TaskIO` the agent
sees) shows its progress as a status message edited in place (at most one edit per
interval), and its end in that message's last edit; it also carries the task's approval
questions and files to the room, and records the process groups `!cancel` must stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
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
from dispatch_matrix.store.matrix_tables import OutboxQueries
from dispatch_matrix.toolbox.groups import ProcessGroups

if TYPE_CHECKING:
    from dispatch_matrix.permissions.policy import Decision

log = logs.get(__name__)

# How long a state stands before its reaction is sent. The question itself says "waiting for
# approval"; the final states are sent at once (the budget still keeps answers first).
HOLD_S = {
    TaskState.QUEUED: 2.0,
    TaskState.RUNNING: 3.0,
    TaskState.INTERRUPTED: 1.0,
    TaskState.DONE: 0.0,
    TaskState.FAILED: 0.0,
    TaskState.CANCELLED: 0.0,
}
# Clients drop a typing notice after its timeout; it is renewed well before that.
_TYPING_REFRESH_S = 20.0
# Typing shows only for a task still running after this long: a quick answer is its own news.
TYPING_AFTER_S = 1.0
# Receipts sent this run, remembered for this many messages (a task taken after its receipt
# went out at intake needs no second one).
_RECEIPTS_KEPT = 1000
# Edits of the status message are coalesced to one per interval: a fast tool loop never
# trips the homeserver's rate limit, and the phone is not flooded with notifications.
EDIT_INTERVAL_S = 2.0
# Final edits of status messages on their way: a task nobody else holds may be collected.
_FINAL_EDITS: set[asyncio.Task[None]] = set()


class Mirror:
    """Shows task states in the room."""

    def __init__(
        self,
        db: OutboxQueries,
        room: Room,
        hold_s: dict[TaskState, float] = HOLD_S,
        typing_after_s: float = TYPING_AFTER_S,
    ) -> None:
        self._db = db
        self._room = room
        self._hold_s = hold_s
        self._typing_after_s = typing_after_s
        self._settling: dict[int, asyncio.Task[None]] = {}
        self._typing: asyncio.Task[None] | None = None
        # Whether the running task's typing notice went out (so "off" is worth sending).
        self._typing_shown = False
        self._receipted: dict[int, None] = {}
        self._closed = False

    def show(self, task: Task, state: TaskState) -> None:
        """Let the task's reaction show `state`, once it has stood its hold time."""
        if state not in self._hold_s:
            return
        earlier = self._settling.pop(task.id, None)
        if earlier is not None:
            # Not sent yet: withdrawn. Already in the room: the new settle redacts it.
            earlier.cancel()
        job = asyncio.create_task(self._settle(task, state), name=f"mirror-{task.id}")
        self._settling[task.id] = job
        job.add_done_callback(functools.partial(self._settled, task.id))

    def queued(self, task: Task) -> None:
        """The task is on disk: the read receipt says so at once (the first sign of life)."""
        self._receipt(task)
        self.show(task, TaskState.QUEUED)

    def started(self, task: Task, paused: bool) -> None:
        """The task is taken: presence; typing and ⚙️ if it runs a while."""
        self._receipt(task)
        self.show(task, TaskState.RUNNING)
        self.presence(task, paused)
        self._typing_shown = False
        self._typing = asyncio.create_task(self._keep_typing(task))

    def _receipt(self, task: Task) -> None:
        """The task's read receipt, unless this run sent it already (a task queued after
        a restart, or recovered, gets one when it is taken)."""
        if task.id in self._receipted:
            return
        self._receipted[task.id] = None
        while len(self._receipted) > _RECEIPTS_KEPT:
            del self._receipted[next(iter(self._receipted))]
        self._room.read_receipt(task.room_id, task.event_id)

    def stopped(
        self, task: Task, state: TaskState, after: asyncio.Future[EventID] | None = None
    ) -> None:
        """The task left the worker (done, failed, back in the queue): show `state`, once
        `after` (its answer's delivery) is in the room."""
        if self._typing is not None:
            self._typing.cancel()
            self._typing = None
            if self._typing_shown:
                self._room.typing(task.room_id, False)
        if after is None:
            self.show(task, state)
        else:
            after.add_done_callback(lambda sent: self._show_if_sent(task, state, sent))

    def _show_if_sent(self, task: Task, state: TaskState, sent: asyncio.Future[EventID]) -> None:
        if not self._closed and not sent.cancelled() and sent.exception() is None:
            self.show(task, state)

    def presence(self, current: Task | None, paused: bool) -> None:
        """Presence status: idle / working on … / paused."""
        if current is not None:
            status = f"working on {current.short_id}: {current.title(40)}"
        elif paused:
            status = "paused"
        else:
            status = "idle"
        self._room.presence(status)

    def close(self) -> None:
        """Stop showing: what is not in the room yet stays out (the next start re-derives
        every reaction from the ledger)."""
        self._closed = True
        for job in list(self._settling.values()):
            job.cancel()
        if self._typing is not None:
            self._typing.cancel()

    async def idle(self) -> None:
        """Wait until every state change so far is in the room (for tests and shutdown)."""
        while self._settling:
            await asyncio.gather(*self._settling.values(), return_exceptions=True)

    async def _settle(self, task: Task, state: TaskState) -> None:
        await asyncio.sleep(self._hold_s[state])
        emoji = texts.EMOJI[state]
        shown = self._db.reactions_shown(task.id)
        if [e for _, _, e in shown] == [emoji]:
            return
        if emoji not in {e for _, _, e in shown}:
            # A fresh key each time: a task may show the same state twice in its life.
            key = f"t{task.id}.react.{self._db.count_reactions(task.id)}.{state}"
            event_id = await self._room.react(
                task.room_id, task.event_id, emoji, key=key, task_id=task.id
            )
            if not event_id:
                return
        for txn_id, old_event, shown_emoji in shown:
            if shown_emoji != emoji and await self._room.redact(
                task.room_id, old_event, key=f"t{task.id}.unreact.{old_event}"
            ):
                self._db.mark_sent(txn_id, "")

    def _settled(self, task_id: int, job: asyncio.Task[None]) -> None:
        if self._settling.get(task_id) is job:
            del self._settling[task_id]
        if not job.cancelled() and job.exception() is not None:
            log.warning("mirror.failed", task=task_id, error=repr(job.exception()))

    async def _keep_typing(self, task: Task) -> None:
        await asyncio.sleep(self._typing_after_s)
        while True:
            self._typing_shown = True
            self._room.typing(task.room_id, True)
            await asyncio.sleep(_TYPING_REFRESH_S)


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
