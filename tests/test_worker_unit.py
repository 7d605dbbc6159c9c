"""The worker with stand-ins for the room and the agent (no homeserver): a bug in one task
fails that task and the queue goes on."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from dispatch_matrix.ids import EventID, RoomID
from dispatch_matrix.queue.worker import Worker
from dispatch_matrix.store import Database, Task, TaskState


class FakeRoom:
    def __init__(self, until: str) -> None:
        self.posts: list[str] = []
        self.until = until
        self.seen = asyncio.Event()

    async def post(self, room_id: RoomID, markdown: str, **_: Any) -> EventID:
        self.posts.append(markdown)
        if markdown == self.until:
            self.seen.set()
        return EventID(f"$p{len(self.posts)}")

    async def react(self, room_id: RoomID, event_id: str, emoji: str, **_: Any) -> EventID:
        return EventID(f"$r{emoji}")

    async def redact(self, *_: Any, **__: Any) -> None: ...
    async def read_receipt(self, *_: Any) -> None: ...
    async def presence(self, *_: Any, **__: Any) -> None: ...
    async def typing(self, *_: Any) -> None: ...
    async def edit(self, *_: Any, **__: Any) -> EventID:
        return EventID("$e")


class BuggyThenFine:
    async def answer(self, task: Task, io: Any) -> str:
        if "bug" in task.body:
            raise KeyError("oops")
        return f"done: {task.body}"


async def test_a_bug_fails_one_task_and_the_queue_goes_on(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    room = FakeRoom(until="done: a normal task")
    worker = Worker(db, BuggyThenFine(), room)
    db.add_task("$1", "!r", "@me", "trigger the bug", 1)
    db.add_task("$2", "!r", "@me", "a normal task", 2)
    runner = asyncio.create_task(worker.run())
    await asyncio.wait_for(room.seen.wait(), 10)
    runner.cancel()
    first, second = db.task(1), db.task(2)
    assert first is not None and first.state is TaskState.FAILED
    assert "internal error (KeyError)" in (first.error or "")
    assert second is not None and second.state is TaskState.DONE
    assert any("internal error" in p for p in room.posts)
    assert "done: a normal task" in room.posts
