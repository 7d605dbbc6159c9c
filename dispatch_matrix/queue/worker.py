"""The worker: takes tasks from the ledger one at a time, in arrival order, and answers.

The ledger is the truth: the worker holds nothing that a restart cannot rebuild. A task
left `running` by a crash is marked interrupted, the owner is told, and it is picked up
again first, from its last recorded step. Pausing, the API's outages and its refusals only
decide whether and when the next task is taken; how the room shows it is the mirror's, the
process groups a task started are `ProcessGroups`', and long answers are the room's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from dispatch_matrix.agent import ModelAccessError, ModelOutage, ModelUnreachable
from dispatch_matrix.core import logs
from dispatch_matrix.core.backoff import Backoff
from dispatch_matrix.core.errors import ModelError
from dispatch_matrix.core.ids import EventID, RoomID
from dispatch_matrix.queue import texts
from dispatch_matrix.queue.approvals import Approvals
from dispatch_matrix.queue.awake import KeepAwake
from dispatch_matrix.queue.mirror import Mirror, RoomTaskIO
from dispatch_matrix.queue.ports import Answerer, Room
from dispatch_matrix.store import Database, Task, TaskState
from dispatch_matrix.toolbox.groups import ProcessGroups

log = logs.get(__name__)

# After an outage outlasts the SDK's retries the waits double up to this. An overloaded API
# is not probed, so this is how late a task can notice its end; one try (and the SDK's
# retries) every two minutes is no load worth sparing the API.
_OUTAGE_MAX_S = 120.0
# While the API cannot be reached at all, it is probed this often (a free read), so a task
# goes again within seconds of its return, not at the end of a wait that doubled meanwhile.
# The daemon passes `[agent] outage_probe_s`, whose default this is.
_PROBE_EVERY_S = 5.0
# For this long after a task is taken its answer is expected, and decorations wait for it
# (`AnswerDue`): a quick task answers well within it, a long one frees them after it.
ANSWER_DUE_S = 1.0


class AnswerDue:
    """Whether an answer is about to be decided: the worker marks when it takes a task, the
    outbox's sender holds decorations back meanwhile. Made before both, as each needs it."""

    def __init__(self) -> None:
        # When the running task was taken (monotonic); None while no task runs.
        self.since: float | None = None

    def seconds(self) -> float:
        """For how long the running task's answer is still expected soon (0: no task
        runs, or it has run a while); what is not an answer waits meanwhile."""
        if self.since is None:
            return 0.0
        return max(0.0, ANSWER_DUE_S - (time.monotonic() - self.since))


class Worker:
    """Runs queued tasks through the agent and posts each answer as a reply."""

    def __init__(
        self,
        db: Database,
        agent: Answerer,
        room: Room,
        *,
        approval_timeout_s: float,
        outage_first_s: float,
        answered: Callable[[Task, str], None] | None = None,
        probe: Callable[[], Awaitable[bool]] | None = None,
        probe_every_s: float = _PROBE_EVERY_S,
        awake: KeepAwake | None = None,
        answer_due: AnswerDue | None = None,
    ) -> None:
        self._db = db
        # Marked when a task is taken (the outbox holds decorations back for its answer).
        self._due = answer_due or AnswerDue()
        # The sleep inhibitor: held while there is work, let go when the queue is empty.
        self.awake = awake or KeepAwake(enabled=False)
        # Whether the API answers at all now (the agent's `reachable`).
        self._probe = probe
        self._probe_every_s = probe_every_s
        # Told of each answer once it is posted (speech out); must not block.
        self._answered = answered
        self._agent = agent
        self._room = room
        self.mirror = Mirror(db, room)
        self.approvals = Approvals(db, room, approval_timeout_s)
        self._outage = Backoff(outage_first_s, _OUTAGE_MAX_S)
        self._groups = ProcessGroups(db)
        self._wake = asyncio.Event()
        self.current: Task | None = None
        # Why the API is away and since when (monotonic), while tasks wait for it (!status).
        self.outage: str | None = None
        self.outage_since: float | None = None
        self._job: asyncio.Task[str] | None = None
        self._cancelling: int | None = None
        # The running task's room channel, until its end is told (its status message).
        self._io: RoomTaskIO | None = None

    @property
    def paused(self) -> bool:
        return self._db.get_meta("paused") == "1"

    def wake(self) -> None:
        """Tell the worker there may be new work."""
        self._wake.set()

    @property
    def current_since(self) -> float | None:
        """When the running task was taken (monotonic); None while no task runs."""
        return self._due.since

    async def run(self) -> None:
        """Work until cancelled."""
        try:
            await self._recover()
            self.mirror.presence(None, self.paused)
            while True:
                task = None if self.paused else self._db.next_task()
                if task is None:
                    self.awake.release()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                self.awake.hold(f"working on {task.short_id}")
                await self._run_one(task)
                self.mirror.presence(None, self.paused)
        finally:
            self.awake.release()
            self.mirror.close()

    async def _recover(self) -> None:
        """Tasks a crash left running are interrupted: say so, then resume them first."""
        await self._groups.stop_orphans()
        for task in self._db.tasks_in(TaskState.RUNNING):
            self._db.set_task_state(task.id, TaskState.INTERRUPTED)
            log.warning("task.interrupted", task=task.short_id, steps=task.steps)
            await self._room.post(
                task.room_id,
                texts.interrupted(task),
                reply_to=task.event_id,
                task_id=task.id,
                notice=True,
                key=f"t{task.id}.interrupted.{task.steps}",
            )
            self.mirror.show(task, TaskState.INTERRUPTED)

    # -- control ---------------------------------------------------------------------------

    def set_paused(self, paused: bool, *, refused_in: RoomID | None = None) -> None:
        """Stop or restart taking tasks (persisted across restarts); `refused_in`: the room
        told that the API's refusal paused it (such a pause ends at the next start)."""
        self._db.set_meta("paused", "1" if paused else "0")
        self._db.set_meta("paused_by_refusal", refused_in or "")
        self.wake()

    def resume_after_restart(self) -> RoomID | None:
        """A pause the API's refusal caused ends with a restart, the operator's way to put
        a fixed key or a raised budget in place (the queue stayed paused, without a word);
        returns the room that was told of the pause, to be told it is over."""
        room = self._db.get_meta("paused_by_refusal")
        if not room or not self.paused:
            return None
        self.set_paused(False)
        log.info("queue.resumed_after_restart", room=room)
        return RoomID(room)

    async def cancel_running(self) -> Task | None:
        """Stop the running task and every process it started; returns it."""
        task, job, io = self.current, self._job, self._io
        if task is None or job is None or job.done():
            return None
        self._cancelling = task.id
        if io is not None:
            # The agent answers the running calls as cancelled, not as stopped by a restart.
            io.cancel()
        # Cancel first: a killed command must not hand the model a result to go on with.
        job.cancel()
        await self._groups.stop_all()
        return task

    # -- one task --------------------------------------------------------------------------

    async def _run_one(self, task: Task) -> None:
        self.current, self._due.since = task, time.monotonic()
        # Committed with the agent's first write: a crash before it leaves the task queued,
        # which in effect it still was (nothing of it ran yet).
        self._db.stage_task_state(task.id, TaskState.RUNNING)
        log.info("task.started", task=task.short_id, room=task.room_id)
        self.mirror.started(task, self.paused)
        io = self._io = RoomTaskIO(task, self._room, self.approvals, self._groups)
        self._job = asyncio.create_task(self._agent.answer(task, io))
        outage: ModelOutage | None = None
        try:
            answer = await self._job
        except asyncio.CancelledError:
            if self._cancelling != task.id:
                raise
            await self._finish(task, TaskState.CANCELLED, texts.CANCELLED, "cancelled")
            return
        except ModelOutage as err:
            outage = err
        except ModelAccessError as err:
            self.outage = self.outage_since = None
            await self._blocked(task, err)
            return
        except ModelError as err:
            self.outage = self.outage_since = None
            await self._finish(task, TaskState.FAILED, texts.failed(err.message), err.message)
            return
        except Exception as err:
            # A bug met in one task fails that task, not the daemon: a crash would restart
            # into the same task and meet it again, forever.
            log.exception("task.crashed", task=task.short_id)
            reason = f"an internal error ({err.__class__.__name__}); details are in the log"
            await self._finish(task, TaskState.FAILED, texts.failed(reason), reason)
            return
        finally:
            # Also clears the record of the process groups the task's tools started.
            await io.close()
            # `_io` stays until `_finish` has told the status message how the task ended.
            self.current, self._due.since, self._job = None, None, None
            self._cancelling = None
        if outage is not None:
            # Waited out with no task current: it is queued again, not running.
            await self._wait_out(task, outage)
            return
        self._outage.reset()
        self.outage = self.outage_since = None
        self._db.forget_notices("outage")
        await self._finish(task, TaskState.DONE, answer)

    async def _wait_out(self, task: Task, err: ModelError) -> None:
        """The API is away: the task keeps its place and its finished steps; retry later."""
        self._db.set_task_state(task.id, TaskState.QUEUED)
        self.mirror.stopped(task, TaskState.QUEUED)
        wait = self._outage.next()
        self.outage = err.message
        self.outage_since = self.outage_since or time.monotonic()
        log.warning("model.outage", task=task.short_id, error=err.message, retry_in=wait)
        if self._db.first_notice("outage"):
            await self._room.post(
                task.room_id, texts.outage(err.message), reply_to=task.event_id, notice=True
            )
        # No word when it is back: the answer says so, and costs the room no extra event.
        await self._sleep_out(wait, probing=isinstance(err, ModelUnreachable))

    async def _sleep_out(self, wait: float, *, probing: bool) -> None:
        """Wait `wait` seconds, or, while the API cannot be reached, until a probe finds it
        back. An API that answers but is overloaded is not probed: only a real request
        tells whether it takes work again, and the doubling wait spares it ours."""
        if not probing or self._probe is None:
            await asyncio.sleep(wait)
            return
        deadline = time.monotonic() + wait
        while deadline - time.monotonic() > self._probe_every_s:
            await asyncio.sleep(self._probe_every_s)
            if await self._probe():
                log.info("model.reachable")
                return
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))

    async def _blocked(self, task: Task, err: ModelError) -> None:
        """The key or the credit is the problem: pause and say what to fix."""
        self._db.set_task_state(task.id, TaskState.QUEUED)
        self.mirror.stopped(task, TaskState.QUEUED)
        self.set_paused(True, refused_in=task.room_id)
        log.error("model.access_refused", error=err.message)
        await self._room.post(
            task.room_id, texts.access_refused(err), reply_to=task.event_id, notice=True
        )

    async def _finish(
        self, task: Task, state: TaskState, text: str, error: str | None = None
    ) -> None:
        if self._io is not None and self._io.task_id == task.id:
            self._io.ended(state)
        self._io = None

        # The answer and the task's end are one transaction: after a crash the next start
        # sends a recorded answer not yet confirmed (under the same transaction id, so the
        # homeserver never shows it twice), and a task not yet ended runs again from its
        # last step to the same answer key. So the worker does not wait for the homeserver:
        # it takes the next task while this answer goes out, in order behind earlier ones.
        # (A text too long for one event goes as an attached file; the room decides.)
        def record() -> None:
            result = text if state is TaskState.DONE else None
            self._db.set_task_state(task.id, state, result=result, error=error)

        delivery = await self._room.answer(
            task.room_id,
            text,
            reply_to=task.event_id,
            task_id=task.id,
            notice=state is not TaskState.DONE,
            key=f"t{task.id}.{state}",
            record=record,
        )
        # Decorations of the end (✅, speech) follow the answer, never precede it.
        self.mirror.stopped(task, state, after=delivery)
        if state is TaskState.DONE and self._answered is not None:
            answered = self._answered
            delivery.add_done_callback(lambda sent: _if_sent(sent, answered, task, text))
        log.info("task.finished", task=task.short_id, state=str(state))


def _if_sent(
    sent: asyncio.Future[EventID], then: Callable[[Task, str], None], task: Task, text: str
) -> None:
    if not sent.cancelled() and sent.exception() is None and sent.result():
        then(task, text)
