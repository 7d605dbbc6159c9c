"""The control commands' effects: answered at once, without the model, even mid-task."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from dispatch_matrix.agent import usage
from dispatch_matrix.connectors.inventory import Group
from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import ModelError
from dispatch_matrix.core.ids import EventID, RoomID
from dispatch_matrix.queue import texts
from dispatch_matrix.queue.intake import Command
from dispatch_matrix.queue.ports import Room
from dispatch_matrix.queue.worker import Worker
from dispatch_matrix.store import LedgerQueries, Task, TaskState

if TYPE_CHECKING:
    from dispatch_matrix.agent import Engine

log = logs.get(__name__)

# A command answered elsewhere (the schedule commands): it posts its own reply.
Handler = Callable[[Command, RoomID, EventID], Awaitable[None]]
# A command another part may take before the queue does (voice's `!retry` of a voice message
# not heard): the line to answer with, or None to leave the command to the queue.
Taker = Callable[[Command, RoomID], Awaitable[str | None]]

_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,99}")


class Control:
    """Runs a parsed command and answers in the room."""

    def __init__(
        self,
        db: LedgerQueries,
        worker: Worker,
        room: Room,
        agent: Engine,
        more: Mapping[str, Handler] | None = None,
        tools: Callable[[], list[Group]] | None = None,
        first: Mapping[str, Taker] | None = None,
    ) -> None:
        self._more = dict(more or {})
        self._first = dict(first or {})
        self._db = db
        self._inventory = tools
        self._worker = worker
        self._room = room
        self._agent = agent
        self._started = time.monotonic()
        self._compacting: asyncio.Task[None] | None = None
        # The task a ledger-only command changed, and its new state, to show once committed.
        self._shown: tuple[Task, TaskState] | None = None

    async def run(self, command: Command, room_id: RoomID, event_id: str) -> None:
        """Do what the command says and reply to it, once: a command whose sync is read
        again (a crash before the sync token's save, a failed handling) is not run again.

        The command's event id goes to the ledger in the transaction of its effect when
        that effect is a ledger write and nothing else (`_LEDGER_ONLY`: both or neither
        survive a crash, so it runs exactly once); otherwise it is committed before the
        command runs (at most once: a crash in between loses the command, never repeats
        a `!cancel` that would stop the task after it, or a second `!compact`)."""
        if self._db.command_ran(event_id):
            log.info("command.duplicate", command=command.name, event_id=event_id)
            return
        more = self._more.get(command.name)
        first = self._first.get(command.name)
        running = self._running(command) if command.name == "cancel" else None
        once = _LEDGER_ONLY.get(command.name)
        if once is not None and more is None and first is None and running is None:
            # Nothing is shown of a transaction that is rolled back.
            self._shown = None
            with self._db.tx():
                self._db.record_command(event_id, command.name)
                text = once(self, command)
            self._after(command)
            await self._room.post(
                room_id, text, reply_to=event_id, notice=True, key=f"cmd-{event_id}"
            )
            return
        self._db.record_command(event_id, command.name)
        if more is not None:
            await more(command, room_id, EventID(event_id))
            return
        taken = await first(command, room_id) if first is not None else None
        if taken is not None:
            text = taken
        elif command.name == "compact":
            # A summary takes the model a while: answer now, report when it is written,
            # and keep the sync loop (approvals, other commands) moving meanwhile.
            text = self._start_compaction(room_id, event_id)
        elif running is not None:
            # "Stopping #n…" is queued before the stop, so the worker's "🚫 Cancelled."
            # follows it (said after, it arrived first); not waited for: a stop never waits
            # on the homeserver.
            await self._room.answer(
                room_id,
                texts.stopping(running),
                reply_to=event_id,
                task_id=running.id,
                key=f"cmd-{event_id}",
                notice=True,
            )
            await self._cancel(command)
            return
        elif once is not None:
            # Another part could have taken it (`first`): recorded before, as any other.
            text = once(self, command)
            self._after(command)
        else:
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
        away = time.monotonic() - worker.outage_since if worker.outage_since else 0.0
        return texts.status(
            current,
            elapsed,
            queued,
            worker.paused,
            time.monotonic() - self._started,
            done,
            worker.outage if queued else None,
            away,
            texts.awake_line(worker.awake.enabled, worker.awake.available, worker.awake.held),
        )

    async def _queue(self, _command: Command) -> str:
        waiting = self._db.tasks_in(TaskState.INTERRUPTED, TaskState.QUEUED, limit=50)
        return texts.queue_list(waiting, self._worker.paused)

    def _running(self, command: Command) -> Task | None:
        """The running task a `!cancel` stops, if it stops one."""
        current = self._worker.current
        if current is not None and command.task_id in (None, current.id):
            return current
        return None

    async def _cancel(self, command: Command) -> str:
        task = await self._worker.cancel_running()
        log.info("command.cancel", task=task.short_id if task else None)
        # The worker posts "Cancelled." as the task's reply once it has stopped.
        return texts.stopping(task) if task else texts.NOTHING_RUNNING

    # The commands whose lasting effect is one ledger write, made inside the transaction
    # that records the command (`run`); what they show or wake follows in `_after`.

    def _drop(self, command: Command) -> str:
        """`!cancel` of no running task: a queued one is dropped."""
        wanted = command.task_id
        if wanted is None:
            return texts.NOTHING_RUNNING
        task = self._db.task(wanted)
        if task is None or task.state not in (TaskState.QUEUED, TaskState.INTERRUPTED):
            return texts.no_such_task(command.arg)
        self._db.set_task_state(task.id, TaskState.CANCELLED, error="cancelled from the queue")
        self._shown = (task, TaskState.CANCELLED)
        return texts.dropped(task)

    def _pause(self, _command: Command) -> str:
        self._worker.set_paused(True)
        return texts.PAUSED

    def _resume(self, _command: Command) -> str:
        self._worker.set_paused(False)
        return texts.RESUMED

    def _retry(self, command: Command) -> str:
        wanted = command.task_id
        if wanted is None:
            candidates = [t for t in self._db.recent_tasks(20) if t.state is not TaskState.DONE]
            wanted = candidates[0].id if candidates else None
        task = self._db.requeue(wanted) if wanted is not None else None
        if task is None:
            return texts.no_such_task(command.arg or "to retry")
        self._shown = (task, TaskState.QUEUED)
        return texts.retried(task)

    def _new(self, _command: Command) -> str:
        self._db.new_conversation()
        return texts.NEW_CONVERSATION

    def _after(self, command: Command) -> None:
        """What a ledger-only command shows once its transaction is committed."""
        shown, self._shown = self._shown, None
        if command.name in ("pause", "resume"):
            self._worker.mirror.presence(self._worker.current, command.name == "pause")
        if shown is not None:
            if shown[1] is TaskState.QUEUED:
                self._worker.wake()
            self._worker.mirror.show(*shown)

    async def _history(self, command: Command) -> str:
        count = int(command.arg) if command.arg.isdigit() else 10
        return texts.history(self._db.recent_tasks(min(count, 50)))

    # -- the engine: compaction, memory, usage, model ----------------------------------------

    def _start_compaction(self, room_id: RoomID, event_id: str) -> str:
        if self._compacting is not None and not self._compacting.done():
            return texts.STILL_COMPACTING
        self._compacting = asyncio.create_task(self._compact(room_id, event_id))
        self._compacting.add_done_callback(_log_failure)
        return texts.COMPACTING

    async def _compact(self, room_id: RoomID, event_id: str) -> None:
        agent = self._agent
        try:
            done = await agent.compact_now()
        except ModelError as err:
            log.warning("command.compact_failed", error=err.message)
            text = texts.compact_failed(err.message)
        else:
            keep = agent.settings.keep_recent_messages
            if done is True:
                text = texts.COMPACTED_BY_ENGINE
            else:
                text = texts.compacted(done) if done else texts.nothing_to_compact(keep)
        await self._room.post(
            room_id, text, reply_to=event_id, notice=True, key=f"cmd-{event_id}-done"
        )

    async def _memory(self, _command: Command) -> str:
        memory = self._agent.memory
        if memory is None:
            return texts.NO_MEMORY
        return texts.memory_shown(memory.read(), memory.max_bytes)

    async def _usage(self, _command: Command) -> str:
        now = datetime.now(UTC)
        recent = [
            (self._db.task(task_id), totals) for task_id, totals in usage.recent_tasks(self._db)
        ]
        budget = self._agent.settings.daily_budget_usd
        return texts.usage_report(
            usage.today(self._db, now), usage.last_days(self._db, now, 7), recent, budget
        )

    async def _model(self, command: Command) -> str:
        agent = self._agent
        current, default, name = agent.current_model(), agent.default_model, command.arg.strip()
        if not name:
            shown = texts.model_shown(current, default, usage.price_of(current) is not None)
            return f"{shown}\n\n{texts.models_offered(await agent.models(), current)}"
        if name.lower() in ("default", "reset") or name == default:
            agent.set_model(None)
            return texts.model_reset(default)
        if not _MODEL_ID.fullmatch(name):
            return texts.model_invalid(name)
        known = await agent.model_exists(name)
        if known is False:
            return texts.model_unknown(name, current)
        agent.set_model(name)
        log.info("command.model", model=name, checked=known)
        return texts.model_changed(name, usage.price_of(name) is not None, known is True)

    async def _tools(self, _command: Command) -> str:
        if self._inventory is None:
            return texts.NO_TOOLS_REPORT
        return texts.tools_report(self._inventory())


# The commands whose whole lasting effect is a ledger write (`run` records them with it).
_LEDGER_ONLY: dict[str, Callable[[Control, Command], str]] = {
    "cancel": Control._drop,
    "pause": Control._pause,
    "resume": Control._resume,
    "retry": Control._retry,
    "new": Control._new,
}


def _log_failure(job: asyncio.Task[None]) -> None:
    if not job.cancelled() and job.exception() is not None:
        log.error("command.compact_crashed", error=repr(job.exception()))
