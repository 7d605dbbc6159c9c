"""`!cancel` of the running task: "Stopping #n…" is queued before the stop, so the worker's
"🚫 Cancelled." (which it queues once the task has stopped) can never arrive first."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.queue import texts
from dispatch_matrix.queue.commands import parse
from dispatch_matrix.queue.control import Control
from dispatch_matrix.store import Database, Task

ROOM = RoomID("!dm:hs")


class Room:
    """Records what is queued for the room, in queue order."""

    def __init__(self) -> None:
        self.queued: list[str] = []

    async def post(self, room_id: RoomID, markdown: str, **_: Any) -> EventID:
        self.queued.append(markdown)
        return EventID(f"$p{len(self.queued)}")

    async def answer(self, room_id: RoomID, markdown: str, **_: Any) -> asyncio.Future[EventID]:
        self.queued.append(markdown)
        done: asyncio.Future[EventID] = asyncio.get_running_loop().create_future()
        done.set_result(EventID(f"$a{len(self.queued)}"))
        return done


class Worker:
    """Stops its task the slow way: its "Cancelled." is queued before the stop returns, as
    when killing a command's processes takes a while."""

    def __init__(self, room: Room, task: Task) -> None:
        self.current: Task | None = task
        self._room = room

    async def cancel_running(self) -> Task | None:
        task, self.current = self.current, None
        assert task is not None
        await self._room.answer(ROOM, texts.CANCELLED, reply_to=task.event_id)
        return task


async def test_stopping_is_queued_before_the_worker_says_cancelled(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    task = db.add_task(EventID("$t"), ROOM, UserID("@o:hs"), "sleep 600", 0)
    assert task is not None
    room = Room()
    control = Control(db, Worker(room, task), room, agent=None)  # type: ignore[arg-type]
    command = parse("!cancel")
    assert command is not None
    await control.run(command, ROOM, "$cancel")
    assert room.queued == [f"Stopping {task.short_id}…", texts.CANCELLED]
    db.close()
