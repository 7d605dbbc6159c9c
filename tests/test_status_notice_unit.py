"""A task's status message ("⚙️ #n — step …") ends saying how the task ended, and at the
newest step, even one the coalescing had not shown yet."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from harness.workbench import FakeRoom

from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.queue.mirror import RoomTaskIO
from dispatch_matrix.store import Database, TaskState


def statuses(room: FakeRoom) -> list[str]:
    """The status messages posted (not their edits)."""
    return [m.body for m in room.messages if m.notice and m.replaces is None]


def status_edits(room: FakeRoom) -> list[str]:
    """The edits, each of the one status message."""
    edits = room.edits()
    status_ids = [m.event_id for m in room.messages if m.notice and m.replaces is None]
    assert all(e.replaces in status_ids[:1] for e in edits), "edits of the status message"
    return [e.body for e in edits]


@pytest.mark.parametrize(
    "state, word",
    [(TaskState.DONE, "✅ #1 — done"), (TaskState.FAILED, "❌ #1 — failed")],
)
async def test_the_status_message_ends_with_the_outcome_and_the_newest_step(
    tmp_path: Path, state: TaskState, word: str
) -> None:
    db = Database.open(tmp_path / "d.db")
    task = db.add_task(EventID("$t"), RoomID("!r"), UserID("@o:hs"), "run the tests", 0)
    assert task is not None
    room = FakeRoom()
    io = RoomTaskIO(task, room, approvals=None)  # type: ignore[arg-type]
    await io.progress("step 1: `ls`")
    await room.wait_for(lambda: statuses(room), "status message", 5)
    # Within the edit interval: coalesced, not shown yet when the task ends.
    await io.progress("step 2: `pytest -q`")
    io.ended(state)
    await io.close()
    await room.wait_for(room.edits, "edit", 5)
    assert statuses(room) == ["⚙️ #1 — step 1: `ls`"]
    assert status_edits(room) == [f"{word}; it ended at step 2: `pytest -q`"]
    db.close()


async def test_a_task_that_showed_no_step_gets_no_status_message(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    task = db.add_task(EventID("$t"), RoomID("!r"), UserID("@o:hs"), "hi", 0)
    assert task is not None
    room = FakeRoom()
    io = RoomTaskIO(task, room, approvals=None)  # type: ignore[arg-type]
    io.ended(TaskState.DONE)
    await io.close()
    assert room.messages == []
    db.close()


async def test_a_first_post_still_on_its_way_at_the_end_gets_its_final_edit(
    tmp_path: Path,
) -> None:
    db = Database.open(tmp_path / "d.db")
    task = db.add_task(EventID("$t"), RoomID("!r"), UserID("@o:hs"), "say hi in the shell", 0)
    assert task is not None
    room = FakeRoom()
    release = asyncio.Event()
    plain_post = room.post_status

    async def slow_post(room_id: RoomID, markdown: str, **kw: Any) -> EventID:
        await release.wait()
        return await plain_post(room_id, markdown, **kw)

    room.post_status = slow_post  # type: ignore[method-assign]
    io = RoomTaskIO(task, room, approvals=None)  # type: ignore[arg-type]
    await io.progress("step 1: running `echo hi`")
    await asyncio.sleep(0)
    # The task ends while its status is being sent (a quick tool call): the worker's end
    # does not wait for it, and the status still ends saying done.
    await asyncio.wait_for(io.close(), 1)
    io.ended(TaskState.DONE)
    release.set()
    await room.wait_for(room.edits, "edit", 5)
    assert status_edits(room) == ["✅ #1 — done; it ended at step 1: running `echo hi`"]
    db.close()
