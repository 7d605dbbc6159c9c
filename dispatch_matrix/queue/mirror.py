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
"""

from __future__ import annotations

import asyncio
import functools

from dispatch_matrix.core import logs
from dispatch_matrix.core.ids import EventID
from dispatch_matrix.queue import texts
from dispatch_matrix.queue.ports import Room
from dispatch_matrix.store import Task, TaskState
from dispatch_matrix.store.matrix_tables import OutboxQueries

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
