"""The worker with stand-ins for the room and the agent (no homeserver): a bug in one task
fails that task and the queue goes on; an API that cannot be reached is probed, so a task
goes again soon after it is back; process groups a dead run left are stopped."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from harness.workbench import FakeRoom

from dispatch_matrix.agent import ModelAccessError, ModelOutage, ModelUnreachable
from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.queue import texts
from dispatch_matrix.queue.worker import ANSWER_DUE_S, AnswerDue, Worker
from dispatch_matrix.store import Database, Task, TaskState
from dispatch_matrix.toolbox.groups import ProcessGroups
from dispatch_matrix.toolbox.process import group_alive


class BuggyThenFine:
    async def answer(self, task: Task, io: Any) -> str:
        if "bug" in task.body:
            raise KeyError("oops")
        return f"done: {task.body}"


async def test_a_bug_fails_one_task_and_the_queue_goes_on(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    room = FakeRoom()
    worker = Worker(db, BuggyThenFine(), room, approval_timeout_s=60, outage_first_s=30)
    room_id, me = RoomID("!r"), UserID("@me")
    db.add_task(EventID("$1"), room_id, me, "trigger the bug", 1)
    db.add_task(EventID("$2"), room_id, me, "a normal task", 2)
    runner = asyncio.create_task(worker.run())
    await room.wait_message("done: a normal task", timeout=10)
    runner.cancel()
    first, second = db.task(1), db.task(2)
    assert first is not None and first.state is TaskState.FAILED
    assert "internal error (KeyError)" in (first.error or "")
    assert second is not None and second.state is TaskState.DONE
    assert any("internal error" in p for p in room.bot_texts())
    assert "done: a normal task" in room.bot_texts()


class AwayThenBack:
    """Fails the first `away` answers with `outage`; counts the probes, which find the API
    back from the `back_at`-th on."""

    def __init__(self, outage: Exception, away: int = 1, back_at: int = 1) -> None:
        self.outage, self.away, self.back_at = outage, away, back_at
        self.answers = 0
        self.probes = 0

    async def answer(self, task: Task, io: Any) -> str:
        self.answers += 1
        if self.answers <= self.away:
            raise self.outage
        return f"done: {task.body}"

    async def reachable(self) -> bool:
        self.probes += 1
        return self.probes >= self.back_at


async def test_an_unreachable_api_is_probed_and_the_task_goes_again_once_it_is_back(
    tmp_path: Path,
) -> None:
    db = Database.open(tmp_path / "d.db")
    room = FakeRoom()
    agent = AwayThenBack(ModelUnreachable("the Messages API could not be reached"), back_at=3)
    # A wait of an hour: only the probe can end it within the test's timeout.
    worker = Worker(
        db, agent, room, approval_timeout_s=60, outage_first_s=3600,
        probe=agent.reachable, probe_every_s=0.01,
    )  # fmt: skip
    db.add_task(EventID("$1"), RoomID("!r"), UserID("@me"), "first", 1)
    runner = asyncio.create_task(worker.run())
    while not agent.probes:
        await asyncio.sleep(0.001)
    # While it waits, the task is queued again, not current, and !status says why.
    assert worker.current is None and worker.outage == "the Messages API could not be reached"
    waiting = db.task(1)
    assert waiting is not None and waiting.state is TaskState.QUEUED
    await room.wait_message("done: first", timeout=10)
    runner.cancel()
    assert worker.outage is None and worker.outage_since is None
    assert agent.probes == 3 and agent.answers == 2
    posts = room.bot_texts()
    assert [p for p in posts if "unavailable" in p] == [posts[0]]
    task = db.task(1)
    assert task is not None and task.state is TaskState.DONE


@pytest.mark.parametrize(
    "outage, queued, says",
    [
        (None, 0, "💤 Idle."),
        (
            "the Messages API could not be reached",
            2,
            "⏳ Waiting for the model for 2m 05s: the Messages API could not be reached.",
        ),
    ],
)
def test_status_says_whether_it_idles_or_waits_for_the_model(
    outage: str | None, queued: int, says: str
) -> None:
    shown = texts.status(None, None, queued, False, 60, 0, outage, 125)
    assert shown.split("\n\n")[0].startswith(says)
    assert f"Queue: {queued} waiting" in shown


async def test_an_overloaded_api_is_not_probed_but_waited_out(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    room = FakeRoom()
    agent = AwayThenBack(ModelOutage("overloaded (529)"), away=2)
    worker = Worker(
        db, agent, room, approval_timeout_s=60, outage_first_s=0.01,
        probe=agent.reachable, probe_every_s=0.001,
    )  # fmt: skip
    db.add_task(EventID("$1"), RoomID("!r"), UserID("@me"), "first", 1)
    runner = asyncio.create_task(worker.run())
    await room.wait_message("done: first", timeout=10)
    runner.cancel()
    # Only a real request tells whether an overloaded API takes work again.
    assert agent.probes == 0 and agent.answers == 3
    assert len([p for p in room.bot_texts() if "unavailable" in p]) == 1, "told once"


async def test_groups_left_by_a_dead_run_are_stopped_only_on_the_same_boot(
    tmp_path: Path,
) -> None:
    db = Database.open(tmp_path / "d.db")
    children = [subprocess.Popen(["sleep", "60"], start_new_session=True) for _ in range(2)]
    try:
        ProcessGroups(db, boot="boot-1").register(children[0].pid)
        # A restart on another boot leaves the recorded (maybe reused) ids alone.
        await ProcessGroups(db, boot="boot-2").stop_orphans()
        assert children[0].poll() is None
        assert db.get_meta("process_groups") == ""
        ProcessGroups(db, boot="boot-1").register(children[1].pid)
        await ProcessGroups(db, boot="boot-1").stop_orphans()
        assert children[1].wait(5) is not None
        assert not group_alive(children[1].pid)
    finally:
        for child in children:
            child.kill()
            child.wait()


class SlowRoom(FakeRoom):
    """Answers are recorded at once but reach the room only when the test lets them."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[str] = []
        self.deliveries: list[asyncio.Future[EventID]] = []
        self.recorded = asyncio.Event()

    async def answer(
        self, room_id: RoomID, markdown: str, *, record: Any = None, **_: Any
    ) -> asyncio.Future[EventID]:
        if record is not None:
            record()
        self.answers.append(markdown)
        self.deliveries.append(asyncio.get_running_loop().create_future())
        if len(self.deliveries) == 2:
            self.recorded.set()
        return self.deliveries[-1]

    def emoji(self) -> list[str]:
        return [emoji for _, emoji, _ in self.reactions]


async def test_the_next_task_starts_while_an_answer_goes_out_and_its_done_mark_waits(
    tmp_path: Path,
) -> None:
    db = Database.open(tmp_path / "d.db")
    room = SlowRoom()
    worker = Worker(db, BuggyThenFine(), room, approval_timeout_s=60, outage_first_s=30)
    room_id, me = RoomID("!r"), UserID("@me")
    db.add_task(EventID("$1"), room_id, me, "first", 1)
    db.add_task(EventID("$2"), room_id, me, "second", 2)
    runner = asyncio.create_task(worker.run())
    try:
        # Neither answer is in the room, yet both tasks ran, in order, and are done.
        await asyncio.wait_for(room.recorded.wait(), 10)
        assert room.answers == ["done: first", "done: second"]
        assert [t.state for t in (db.task(1), db.task(2))] == [TaskState.DONE] * 2  # type: ignore[union-attr]
        await worker.mirror.idle()
        assert "✅" not in room.emoji()
        room.deliveries[0].set_result(EventID("$a1"))
        await asyncio.sleep(0)
        await worker.mirror.idle()
        assert room.emoji().count("✅") == 1
    finally:
        runner.cancel()


class RefusedKey:
    async def answer(self, task: Task, io: Any) -> str:
        raise ModelAccessError("authentication_error: invalid x-api-key")


async def test_a_pause_the_apis_refusal_caused_ends_at_the_next_start(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    refused = texts.access_refused("authentication_error: invalid x-api-key")
    room = FakeRoom()
    worker = Worker(db, RefusedKey(), room, approval_timeout_s=60, outage_first_s=30)
    db.add_task(EventID("$1"), RoomID("!r"), UserID("@me"), "first", 1)
    runner = asyncio.create_task(worker.run())
    await room.wait_message(refused, timeout=10)
    runner.cancel()
    assert worker.paused
    # Restarted (with a key fixed, the operator's way): the queue is taken up again, and the
    # room that heard of the pause hears that it is over.
    restarted = Worker(db, BuggyThenFine(), room, approval_timeout_s=60, outage_first_s=30)
    assert restarted.resume_after_restart() == "!r" and not restarted.paused
    assert restarted.resume_after_restart() is None, "said once"
    # A pause the owner asked for stays across a restart.
    restarted.set_paused(True)
    again = Worker(db, BuggyThenFine(), room, approval_timeout_s=60, outage_first_s=30)
    assert again.resume_after_restart() is None and again.paused
    db.close()


class SeesTheAnswerDue:
    """Answers with how long the worker's answer was still due while it answered."""

    def __init__(self, due: AnswerDue) -> None:
        self.due = due

    async def answer(self, task: Task, io: Any) -> str:
        return "due" if self.due.seconds() > 0 else "not due"


async def test_an_answer_is_due_while_a_task_is_taken_and_not_after(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    room = FakeRoom()
    due = AnswerDue()
    worker = Worker(
        db, SeesTheAnswerDue(due), room, approval_timeout_s=60, outage_first_s=30, answer_due=due
    )
    assert due.seconds() == 0.0
    db.add_task(EventID("$1"), RoomID("!r"), UserID("@me"), "quick", 1)
    runner = asyncio.create_task(worker.run())
    answer = await room.wait_message("due", timeout=10)
    runner.cancel()
    assert "not due" not in answer.body, "the answer was not due while its task ran"
    assert due.seconds() == 0.0 and due.since is None
    assert worker.current_since is None


def test_an_answer_stops_being_due_a_moment_after_its_task_was_taken() -> None:
    due = AnswerDue()
    due.since = time.monotonic() - ANSWER_DUE_S - 0.1
    assert due.seconds() == 0.0
    due.since = time.monotonic()
    assert 0.0 < due.seconds() <= ANSWER_DUE_S


class StartsAProcessWhenAsked:
    """Answers at once; for a task saying "spawn", first reports a process group started."""

    async def answer(self, task: Task, io: Any) -> str:
        if "spawn" in task.body:
            # Only recorded, never signalled: no task here is cancelled.
            io.process_started(2**22 + 7)
        return f"done: {task.body}"


async def test_the_process_group_record_is_cleared_only_after_a_task_that_started_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forgotten: list[str] = []
    forget = ProcessGroups.forget

    def counted(self: ProcessGroups) -> None:
        forgotten.append(str(db.get_meta("process_groups")))
        forget(self)

    monkeypatch.setattr(ProcessGroups, "forget", counted)
    db = Database.open(tmp_path / "d.db")
    room = FakeRoom()
    worker = Worker(db, StartsAProcessWhenAsked(), room, approval_timeout_s=60, outage_first_s=30)
    room_id, me = RoomID("!r"), UserID("@me")
    for n, body in enumerate(["plain", "spawn one", "plain again"], start=1):
        db.add_task(EventID(f"${n}"), room_id, me, body, n)
    runner = asyncio.create_task(worker.run())
    await room.wait_message("done: plain again", timeout=10)
    runner.cancel()
    # Once, after the task that recorded a group (then on record); the store is clear.
    assert len(forgotten) == 1 and forgotten[0].endswith(f":{2**22 + 7}")
    assert db.get_meta("process_groups") == ""
