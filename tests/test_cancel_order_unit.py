"""`!cancel` of the running task: "Stopping #n…" is queued before the stop, so the worker's
"🚫 Cancelled." (which it queues once the task has stopped) can never arrive first."""

from __future__ import annotations

from pathlib import Path

from harness.workbench import FakeRoom

from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.queue import texts
from dispatch_matrix.queue.control import Control
from dispatch_matrix.queue.intake import parse
from dispatch_matrix.store import Database, Task

ROOM = RoomID("!dm:hs")


class Worker:
    """Stops its task the slow way: its "Cancelled." is queued before the stop returns, as
    when killing a command's processes takes a while."""

    def __init__(self, room: FakeRoom, task: Task) -> None:
        self.current: Task | None = task
        self._room = room

    async def cancel_running(self) -> Task | None:
        task, self.current = self.current, None
        assert task is not None
        await self._room.answer(
            ROOM, texts.CANCELLED, reply_to=task.event_id, task_id=task.id, key="cancelled"
        )
        return task


async def test_stopping_is_queued_before_the_worker_says_cancelled(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    task = db.add_task(EventID("$t"), ROOM, UserID("@o:hs"), "sleep 600", 0)
    assert task is not None
    room = FakeRoom()
    control = Control(db, Worker(room, task), room, agent=None)  # type: ignore[arg-type]
    command = parse("!cancel")
    assert command is not None
    await control.run(command, ROOM, "$cancel")
    # The fake room delivers each message as it is queued: its order is the queue's.
    assert room.bot_texts() == [f"Stopping {task.short_id}…", texts.CANCELLED]
    db.close()
