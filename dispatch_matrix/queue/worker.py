"""The worker: takes tasks from the ledger one at a time, in arrival order, and answers.

The ledger is the truth: the worker holds nothing that a restart cannot rebuild. A task
left `running` by a crash is marked interrupted, the owner is told, and it is picked up
again first, from its last recorded step.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

from .. import logs
from ..agent import ModelAccessError, ModelOutage
from ..errors import ModelError
from ..ids import RoomID
from ..store import Database, Task, TaskState
from ..tools.process import group_alive
from . import texts
from .approvals import Approvals
from .mirror import Mirror
from .ports import Answerer, Room
from .taskio import RoomTaskIO

log = logs.get(__name__)

_TYPING_REFRESH_S = 20.0
# Matrix events are capped at 64 KiB, encrypted and with HTML; longer answers go as a file.
LONG_ANSWER_CHARS = 16_000
_KILL_GRACE_S = 1.0


class Worker:
    """Runs queued tasks through the agent and posts each answer as a reply."""

    def __init__(
        self,
        db: Database,
        agent: Answerer,
        room: Room,
        approval_timeout_s: float = 600.0,
        answers_dir: Path | None = None,
        outage_first_s: float = 30.0,
    ) -> None:
        self._answers_dir = answers_dir
        # After an outage outlasts the SDK's retries: wait this long, doubling to 10 min.
        self._outage_first_s = outage_first_s
        self._db = db
        self._agent = agent
        self._room = room
        self.mirror = Mirror(db, room)
        self.approvals = Approvals(db, room, self.mirror, approval_timeout_s)
        self._outage_wait = 0.0
        self._announced: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.current: Task | None = None
        self.current_since: float | None = None
        self._job: asyncio.Task[str] | None = None
        self._cancelling: int | None = None
        self._process_groups: set[int] = set()

    @property
    def paused(self) -> bool:
        return self._db.get_meta("paused") == "1"

    def wake(self) -> None:
        """Tell the worker there may be new work."""
        self._wake.set()

    async def run(self) -> None:
        """Work until cancelled."""
        await self._recover()
        await self.mirror.presence(None, self.paused)
        while True:
            task = None if self.paused else self._db.next_task()
            if task is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._run_one(task)
            await self.mirror.presence(None, self.paused)

    async def _recover(self) -> None:
        """Tasks a crash left running are interrupted: say so, then resume them first."""
        await self._kill_orphans()
        for task in self._db.tasks_in(TaskState.RUNNING):
            self._db.set_task_state(task.id, TaskState.INTERRUPTED)
            log.warning("task.interrupted", task=task.short_id, steps=task.steps)
            await self._room.post(
                RoomID(task.room_id),
                texts.interrupted(task),
                reply_to=task.event_id,
                task_id=task.id,
                notice=True,
                key=f"t{task.id}.interrupted.{task.steps}",
            )
            await self.mirror.show(task, TaskState.INTERRUPTED)

    # -- control ---------------------------------------------------------------------------

    def set_paused(self, paused: bool) -> None:
        """Stop or restart taking tasks (persisted across restarts)."""
        self._db.set_meta("paused", "1" if paused else "0")
        self.wake()

    def register_process_group(self, pgid: int) -> None:
        """A tool started a process group; `cancel` kills it, and so does the next start
        if the daemon dies meanwhile (recorded with this boot's id, so a reboot's reused
        process ids are never touched)."""
        self._process_groups.add(pgid)
        self._db.set_meta(
            "process_groups", f"{_boot_id()}:{','.join(map(str, self._process_groups))}"
        )

    async def cancel_running(self) -> Task | None:
        """Stop the running task and every process it started; returns it."""
        task, job = self.current, self._job
        if task is None or job is None or job.done():
            return None
        self._cancelling = task.id
        # Cancel first: a killed command must not hand the model a result to go on with.
        job.cancel()
        await asyncio.to_thread(self._kill_groups)
        return task

    async def _kill_orphans(self) -> None:
        """Stop what the previous run's tools left running (same boot only)."""
        recorded = self._db.get_meta("process_groups") or ""
        boot, _, groups = recorded.partition(":")
        if boot == _boot_id() and groups:
            self._process_groups = {int(g) for g in groups.split(",") if g.isdigit()}
            log.warning("task.orphans_stopped", groups=sorted(self._process_groups))
            await asyncio.to_thread(self._kill_groups)
        self._db.set_meta("process_groups", "")

    def _kill_groups(self) -> None:
        groups = list(self._process_groups)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            alive = []
            for pgid in groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, sig)
                    alive.append(pgid)
            if not alive or sig == signal.SIGKILL:
                break
            deadline = time.monotonic() + _KILL_GRACE_S
            while time.monotonic() < deadline and any(group_alive(pgid) for pgid in alive):
                time.sleep(0.02)
            groups = [pgid for pgid in alive if group_alive(pgid)]
        self._process_groups.clear()

    # -- one task --------------------------------------------------------------------------

    async def _run_one(self, task: Task) -> None:
        self.current, self.current_since = task, time.monotonic()
        self._db.set_task_state(task.id, TaskState.RUNNING)
        log.info("task.started", task=task.short_id, room=task.room_id)
        room = RoomID(task.room_id)
        # The ⚙️, the read receipt and presence are for show: they go out beside the model
        # call, not before it, and are waited for only before the next status change.
        self._announced = asyncio.create_task(self._announce(task))
        typing = asyncio.create_task(self._keep_typing(room))
        io = RoomTaskIO(task, self._room, self.approvals, self.register_process_group)
        self._job = asyncio.create_task(self._agent.answer(task, io))
        try:
            answer = await self._job
        except asyncio.CancelledError:
            if self._cancelling != task.id:
                raise
            await self._finish(task, TaskState.CANCELLED, typing, texts.CANCELLED, "cancelled")
            return
        except ModelOutage as err:
            await self._stop_typing(typing, room)
            await self._wait_out(task, err)
            return
        except ModelAccessError as err:
            await self._stop_typing(typing, room)
            await self._blocked(task, err)
            return
        except ModelError as err:
            await self._finish(
                task, TaskState.FAILED, typing, texts.failed(err.message), err.message
            )
            return
        except Exception as err:
            # A bug met in one task fails that task, not the daemon: a crash would restart
            # into the same task and meet it again, forever.
            log.exception("task.crashed", task=task.short_id)
            reason = f"an internal error ({err.__class__.__name__}); details are in the log"
            await self._finish(task, TaskState.FAILED, typing, texts.failed(reason), reason)
            return
        finally:
            await io.close()
            self.current, self.current_since, self._job = None, None, None
            self._cancelling = None
            self._process_groups.clear()
            self._db.set_meta("process_groups", "")
        self._outage_wait = 0.0
        self._db.forget_notices("outage")
        await self._finish(task, TaskState.DONE, typing, answer)

    async def _wait_out(self, task: Task, err: ModelError) -> None:
        """The API is away: the task keeps its place and its finished steps; retry later."""
        await self._announcement_done()
        self._db.set_task_state(task.id, TaskState.QUEUED)
        await self.mirror.show(task, TaskState.QUEUED)
        self._outage_wait = min(max(self._outage_wait * 2, self._outage_first_s), 600.0)
        log.warning(
            "model.outage", task=task.short_id, error=err.message, retry_in=self._outage_wait
        )
        if self._db.first_notice("outage"):
            await self._room.post(
                RoomID(task.room_id),
                texts.outage(err.message),
                reply_to=task.event_id,
                notice=True,
            )
        await asyncio.sleep(self._outage_wait)

    async def _blocked(self, task: Task, err: ModelError) -> None:
        """The key or the credit is the problem: pause and say what to fix."""
        await self._announcement_done()
        self._db.set_task_state(task.id, TaskState.QUEUED)
        await self.mirror.show(task, TaskState.QUEUED)
        self.set_paused(True)
        log.error("model.access_refused", error=err.message)
        await self._room.post(
            RoomID(task.room_id),
            texts.access_refused(err),
            reply_to=task.event_id,
            notice=True,
        )

    async def _attach_long_answer(self, task: Task, text: str) -> str:
        """An answer too long for one message goes as a file; the message keeps its start."""
        assert self._answers_dir is not None
        self._answers_dir.mkdir(parents=True, exist_ok=True)
        path = self._answers_dir / f"answer-{task.id}.md"
        await asyncio.to_thread(path.write_text, text)
        await self._room.send_file(
            RoomID(task.room_id),
            path,
            f"answer-{task.id}.md",
            reply_to=task.event_id,
            task_id=task.id,
        )
        head = text[: LONG_ANSWER_CHARS // 4].rsplit("\n", 1)[0]
        return f"{head}\n\n… the full answer ({len(text):,} characters) is in the attached file."

    async def _announce(self, task: Task) -> None:
        await self.mirror.taken(task)
        await self.mirror.show(task, TaskState.RUNNING)
        await self.mirror.presence(task, self.paused)

    async def _announcement_done(self) -> None:
        """Let the start-of-task updates land before a later state is shown."""
        if self._announced is not None:
            with contextlib.suppress(Exception):
                await self._announced
            self._announced = None

    async def _finish(
        self,
        task: Task,
        state: TaskState,
        typing: asyncio.Task[None],
        text: str,
        error: str | None = None,
    ) -> None:
        typing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await typing
        if len(text) > LONG_ANSWER_CHARS and self._answers_dir is not None:
            text = await self._attach_long_answer(task, text)
        # The answer is posted before the task counts as done: a crash in between re-posts
        # it under the same transaction id at the next start, never loses or doubles it.
        await self._room.post(
            RoomID(task.room_id),
            text,
            reply_to=task.event_id,
            task_id=task.id,
            notice=state is not TaskState.DONE,
            key=f"t{task.id}.{state}",
        )
        self._db.set_task_state(
            task.id, state, result=text if state is TaskState.DONE else None, error=error
        )
        await self._room.typing(RoomID(task.room_id), False)
        await self._announcement_done()
        await self.mirror.show(task, state)
        log.info("task.finished", task=task.short_id, state=str(state))

    async def _keep_typing(self, room: RoomID) -> None:
        while True:
            await self._room.typing(room, True)
            await asyncio.sleep(_TYPING_REFRESH_S)

    async def _stop_typing(self, typing: asyncio.Task[None], room: RoomID) -> None:
        typing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await typing
        await self._room.typing(room, False)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"
