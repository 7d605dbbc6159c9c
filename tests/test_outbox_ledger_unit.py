"""What the outbox writes to the ledger, without a homeserver: an answer is recorded with
its task's end in one transaction and goes out without being waited for; a decoration is
recorded only when it goes out, so one withdrawn before its turn leaves no trace."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.outbox import Outbox, preview
from dispatch_matrix.matrix.sender import Budget
from dispatch_matrix.store import Database, TaskState

ROOM = RoomID("!room:example.org")


class GatedClient:
    """Stands in for MatrixClient: each send waits until the test opens the gate."""

    homeserver = "http://hs.example"
    user_id = "@bot:example.org"

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.gate = asyncio.Event()

    async def send(
        self, room_id: RoomID, event_type: str, content: dict[str, Any], txn_id: str
    ) -> EventID:
        await self.gate.wait()
        self.sent.append((event_type, content))
        return EventID(f"$e{len(self.sent)}")


def make(tmp_path: Path, budget: Budget) -> tuple[Outbox, GatedClient, Database]:
    client = GatedClient()
    db = Database.open(tmp_path / "ledger.db")
    box = Outbox(
        cast(MatrixClient, client),
        db,
        before_send=None,
        max_file_bytes=1_000_000,
        long_texts=tmp_path / "answers",
        budget=budget,
        presence_every_s=30,
    )
    return box, client, db


async def test_an_answer_is_recorded_with_its_task_and_delivered_later(tmp_path: Path) -> None:
    box, client, db = make(tmp_path, Budget(0, 10))
    sender = asyncio.create_task(box.sender.run())
    try:
        task = db.add_task(EventID("$q"), ROOM, UserID("@o:x"), "hi", 1)
        assert task is not None

        def record() -> None:
            db.set_task_state(task.id, TaskState.DONE, result="hello")

        delivery = await box.answer(
            ROOM, "hello", reply_to="$q", task_id=task.id, key="t1.done", record=record
        )
        # Recorded (the next start would send it), not yet in the room.
        assert not delivery.done()
        assert [item.txn_id for item in db.unsent()] == [f"dm-{db.instance_id()}-t1.done"]
        assert db.task(task.id).state is TaskState.DONE  # type: ignore[union-attr]
        client.gate.set()
        assert await asyncio.wait_for(delivery, 10) == "$e1"
        assert db.unsent() == []
        again = await box.answer(ROOM, "hello", reply_to="$q", task_id=task.id, key="t1.done")
        assert again.result() == "$e1" and len(client.sent) == 1
    finally:
        sender.cancel()


async def test_a_decoration_withdrawn_before_its_turn_is_never_recorded(tmp_path: Path) -> None:
    # A budget with no room for decorations: they wait behind the reserve kept for answers.
    box, client, db = make(tmp_path, Budget(1e-6, 2))
    client.gate.set()
    sender = asyncio.create_task(box.sender.run())
    try:
        task = db.add_task(EventID("$q"), ROOM, UserID("@o:x"), "hi", 1)
        assert task is not None
        waiting = asyncio.create_task(
            box.react(ROOM, "$q", "⏳", key="t1.react.0.queued", task_id=task.id)
        )
        while box.sender.pending() == 0:
            await asyncio.sleep(0)  # yield until the reaction has taken its place
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert box.sender.pending() == 0
        assert db.count_reactions(task.id) == 0 and db.unsent() == []
    finally:
        sender.cancel()


async def test_a_decoration_sent_is_recorded_with_its_event_id(tmp_path: Path) -> None:
    box, client, db = make(tmp_path, Budget(0, 10))
    client.gate.set()
    sender = asyncio.create_task(box.sender.run())
    try:
        task = db.add_task(EventID("$q"), ROOM, UserID("@o:x"), "hi", 1)
        assert task is not None
        sent = await box.react(ROOM, "$q", "✅", key="t1.react.0.done", task_id=task.id)
        assert db.reactions_shown(task.id)[0][1:] == (sent, "✅")
        # The same key again sends nothing new.
        assert await box.react(ROOM, "$q", "✅", key="t1.react.0.done", task_id=task.id) == sent
        assert len(client.sent) == 1
    finally:
        sender.cancel()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("short", "short"),
        # The echo of a 20,000-character line: one short line, then the long one.
        ("[sent 12:00]\n" + "x" * 20_000, "[sent 12:00]\n" + "x" * 87),
        ("[sent 12:00]\n" + "word " * 4_000, "[sent 12:00]\n" + ("word " * 17).rstrip()),
        ("para one\n" * 30, ("para one\n" * 11).rstrip()),
    ],
)
def test_a_long_texts_preview_keeps_most_of_its_window(text: str, expected: str) -> None:
    assert preview(text, 100) == expected
