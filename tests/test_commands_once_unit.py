"""A command, or an approval's answer, in a sync that is read again (a crash before the
sync token's save, a failed handling) runs once: the ledger knows each command's event id.
A task is de-duplicated by its event id already (`add_task`)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from harness.workbench import FakeRoom

from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.permissions.policy import Decision
from dispatch_matrix.queue import texts
from dispatch_matrix.queue.control import Control
from dispatch_matrix.queue.intake import Intake, parse
from dispatch_matrix.queue.worker import Worker
from dispatch_matrix.store import Database, Task, TaskState

ROOM, OWNER = RoomID("!dm:hs"), UserID("@o:hs")


def bench(tmp_path: Path) -> tuple[Database, FakeRoom, Worker, Intake]:
    db, room = Database.open(tmp_path / "d.db"), FakeRoom()
    worker = Worker(db, None, room, approval_timeout_s=5, outage_first_s=30)  # type: ignore[arg-type]
    control = Control(db, worker, room, agent=None)  # type: ignore[arg-type]
    return db, room, worker, Intake(db, worker, room, control, 1000)


def add_task(db: Database, n: int, state: TaskState) -> Task:
    task = db.add_task(EventID(f"$t{n}"), ROOM, OWNER, f"task {n}", n)
    assert task is not None
    db.set_task_state(task.id, state)
    return task


async def say(intake: Intake, event_id: str, body: str) -> None:
    await intake.message(EventID(event_id), ROOM, OWNER, body, 1)


async def test_a_retry_read_again_does_not_requeue_the_task_a_second_time(
    tmp_path: Path,
) -> None:
    db, room, worker, intake = bench(tmp_path)
    task = add_task(db, 1, TaskState.FAILED)
    await say(intake, "$retry", f"!retry {task.id}")
    assert db.task(task.id).state is TaskState.QUEUED  # type: ignore[union-attr]
    # It ran again and failed again; then the sync that brought `!retry` is read again.
    db.set_task_state(task.id, TaskState.FAILED)
    await say(intake, "$retry", f"!retry {task.id}")
    assert db.task(task.id).state is TaskState.FAILED  # type: ignore[union-attr]
    assert room.bot_texts().count(texts.retried(task)) == 1
    worker.mirror.close()
    db.close()


async def test_a_new_conversation_read_again_opens_no_third(tmp_path: Path) -> None:
    db, room, worker, intake = bench(tmp_path)
    first = db.current_conversation()
    await say(intake, "$new", "!new")
    second = db.current_conversation()
    await say(intake, "$new", "!new")
    assert first != second == db.current_conversation()
    assert room.bot_texts() == [texts.NEW_CONVERSATION]
    worker.mirror.close()
    db.close()


async def test_a_pause_read_again_after_a_resume_leaves_the_queue_running(
    tmp_path: Path,
) -> None:
    db, _room, worker, intake = bench(tmp_path)
    await say(intake, "$pause", "!pause")
    await say(intake, "$resume", "!resume")
    await say(intake, "$pause", "!pause")
    assert not worker.paused
    worker.mirror.close()
    db.close()


async def test_a_cancel_read_again_does_not_stop_the_task_after_it(tmp_path: Path) -> None:
    db, room, _worker, _intake = bench(tmp_path)
    stopped: list[Task] = []

    class Running:
        """A worker whose current task each `!cancel` stops; the next one then runs."""

        def __init__(self) -> None:
            self.current: Task | None = add_task(db, 1, TaskState.RUNNING)

        async def cancel_running(self) -> Task | None:
            task, self.current = self.current, add_task(db, len(stopped) + 2, TaskState.RUNNING)
            assert task is not None
            stopped.append(task)
            return task

    control = Control(db, Running(), room, agent=None)  # type: ignore[arg-type]
    command = parse("!cancel")
    assert command is not None
    await control.run(command, ROOM, "$cancel")
    await control.run(command, ROOM, "$cancel")
    assert [task.event_id for task in stopped] == ["$t1"]
    db.close()


async def test_a_ledger_only_command_whose_write_fails_is_not_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record rides in the effect's transaction: both or neither, so the command runs
    when read again (exactly once), not lost as a command recorded before its effect."""
    db, room, worker, intake = bench(tmp_path)
    first = db.current_conversation()

    def broken() -> int:
        with db.tx() as conn:
            conn.execute("INSERT INTO conversations (started_at) VALUES (1)")
            raise sqlite3.OperationalError("disk I/O error")

    with monkeypatch.context() as patch:
        patch.setattr(db, "new_conversation", broken)
        with pytest.raises(sqlite3.OperationalError):
            await say(intake, "$new", "!new")
    assert db.current_conversation() == first and not db.command_ran("$new")
    await say(intake, "$new", "!new")
    assert db.current_conversation() != first
    assert room.bot_texts() == [texts.NEW_CONVERSATION]
    worker.mirror.close()
    db.close()


async def test_an_answer_read_again_answers_no_later_question_and_is_no_task(
    tmp_path: Path,
) -> None:
    db, room, worker, intake = bench(tmp_path)
    first = asyncio.create_task(
        worker.approvals.ask(add_task(db, 1, TaskState.RUNNING), decision("touch a"))
    )
    await room.wait_message("touch a", timeout=5)
    await say(intake, "$yes", "yes")
    await first
    second = asyncio.create_task(
        worker.approvals.ask(add_task(db, 2, TaskState.RUNNING), decision("touch b"))
    )
    await room.wait_message("touch b", timeout=5)
    # Read again while the next question is open: it does not answer that one.
    await say(intake, "$yes", "yes")
    assert not second.done()
    await say(intake, "$no", "no")
    await second
    # Read again with no question open: it does not become a task either.
    await say(intake, "$yes", "yes")
    assert db.task_by_event(EventID("$yes")) is None
    worker.mirror.close()
    db.close()


def decision(command: str) -> Decision:
    return Decision("ask", "no rule allows it", command, None, ())
