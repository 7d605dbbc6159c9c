"""A task's status message ("⚙️ #n — step …") ends saying how the task ended, and at the
newest step, even one the coalescing had not shown yet."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.queue.taskio import RoomTaskIO
from dispatch_matrix.store import Database, TaskState


class Room:
    def __init__(self) -> None:
        self.posted: list[str] = []
        self.edits: list[str] = []
        self.edited = asyncio.Event()

    async def post_status(self, room_id: RoomID, markdown: str, **_: Any) -> EventID:
        self.posted.append(markdown)
        return EventID("$status")

    async def edit(self, room_id: RoomID, event_id: str, markdown: str, **_: Any) -> EventID:
        assert event_id == "$status"
        self.edits.append(markdown)
        self.edited.set()
        return EventID("$edit")


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
    room = Room()
    io = RoomTaskIO(task, room, approvals=None)  # type: ignore[arg-type]
    await io.progress("step 1: `ls`")
    while not room.posted:
        await asyncio.sleep(0)
    # Within the edit interval: coalesced, not shown yet when the task ends.
    await io.progress("step 2: `pytest -q`")
    io.ended(state)
    await io.close()
    await asyncio.wait_for(room.edited.wait(), 5)
    assert room.posted == ["⚙️ #1 — step 1: `ls`"]
    assert room.edits == [f"{word}; it ended at step 2: `pytest -q`"]
    db.close()


async def test_a_task_that_showed_no_step_gets_no_status_message(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    task = db.add_task(EventID("$t"), RoomID("!r"), UserID("@o:hs"), "hi", 0)
    assert task is not None
    room = Room()
    io = RoomTaskIO(task, room, approvals=None)  # type: ignore[arg-type]
    io.ended(TaskState.DONE)
    await io.close()
    assert room.posted == [] and room.edits == []
    db.close()


async def test_a_first_post_still_on_its_way_at_the_end_gets_its_final_edit(
    tmp_path: Path,
) -> None:
    db = Database.open(tmp_path / "d.db")
    task = db.add_task(EventID("$t"), RoomID("!r"), UserID("@o:hs"), "say hi in the shell", 0)
    assert task is not None
    room = Room()
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
    await asyncio.wait_for(room.edited.wait(), 5)
    assert room.edits == ["✅ #1 — done; it ended at step 1: running `echo hi`"]
    db.close()
