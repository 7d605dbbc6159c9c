"""While an owner's file waits for its download (the media repository failing for hours), the
task running in its room stays answerable and stoppable: an approval's answer (✅, a poll
vote, a "yes") and a stop or show command go ahead of the file; work, edits and other files
keep the room's order behind it. Review 3: the ✅ waited behind the file until its question
expired (the command was refused), and a `!cancel` sent while the file waited ran only once
the file was fetched, stopping the file's own task that had just started."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.workbench import FakeRoom
from test_file_waits_unit import BAD_GATEWAY, Bench, MediaNio, file_event
from test_sync_news_unit import ROOM, text
from test_unjudged_answers_unit import asking, reaction, task, vote
from test_unjudged_unit import FailingGate, with_gate

from dispatch_matrix.agent.ports import Approval
from dispatch_matrix.core.ids import RoomID
from dispatch_matrix.matrix.handlers import Tasks
from dispatch_matrix.queue.intake import Command, Intake
from dispatch_matrix.queue.polls import ONCE
from dispatch_matrix.queue.worker import Worker
from dispatch_matrix.store import Database


class Commands:
    """The control commands' stand-in: records what ran."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    async def run(self, command: Command, room_id: RoomID, event_id: str) -> None:
        self.ran.append(command.name)


class Ahead(Bench):
    """The file bench with the real intake, worker and approvals behind the router."""

    def __init__(self, tmp_path: Path) -> None:
        self.room = FakeRoom()
        self.commands = Commands()

        def intake(db: Database) -> Tasks:
            # Made with the router, so its files' tasks reach the real queue too.
            self.worker = Worker(db, None, self.room, approval_timeout_s=30, outage_first_s=30)  # type: ignore[arg-type]
            return Intake(db, self.worker, self.room, self.commands, 1000)  # type: ignore[arg-type]

        super().__init__(tmp_path, MediaNio(), intake)

    def queued(self, *event_ids: str) -> list[str]:
        """Those of the events that are tasks, in the order they were queued."""
        found = [(t.id, e) for e in event_ids if (t := self.db.task_by_event(e)) is not None]
        return [e for _id, e in sorted(found)]


@pytest.fixture
def ahead(tmp_path: Path) -> Iterator[Ahead]:
    made = Ahead(tmp_path)
    yield made
    made.worker.mirror.close()
    made.db.close()


async def test_an_approval_answer_goes_ahead_of_a_waiting_file(ahead: Ahead) -> None:
    await ahead.sync()
    running = task(ahead.db, 1)
    pending = asyncio.create_task(ahead.worker.approvals.ask(running, asking("touch x")))
    question = await ahead.room.wait_message("touch x", timeout=5)
    ahead.nio.always = BAD_GATEWAY
    await ahead.sync(file_event(), text("after"), reaction(question.event_id))
    assert await asyncio.wait_for(pending, 5) is Approval.YES
    # The work sent after the file still waits behind it.
    assert ahead.waiting() == [("$file", "file"), ("$text-after", "gate")]
    # A poll vote and a bare "yes" answer the next questions as well.
    second = asyncio.create_task(ahead.worker.approvals.ask(running, asking("touch y")))
    await ahead.room.wait_message("touch y", timeout=5)
    polls = await ahead.room.wait_for(lambda: ahead.room.events[1:], "the second poll", 5)
    poll = polls[-1]
    await ahead.sync(vote(poll.event_id, ONCE), after_s=1)
    assert await asyncio.wait_for(second, 5) is Approval.YES
    third = asyncio.create_task(ahead.worker.approvals.ask(running, asking("touch z")))
    await ahead.room.wait_message("touch z", timeout=5)
    await ahead.sync(text("yes"), after_s=1)
    assert await asyncio.wait_for(third, 5) is Approval.YES
    assert ahead.waiting() == [("$file", "file"), ("$text-after", "gate")]
    # The repository mends: the file, then the work sent after it, in order.
    ahead.nio.always = None
    await ahead.sync(after_s=60)
    assert ahead.queued("$text-after", "$file", "$t1") == ["$t1", "$file", "$text-after"]


async def test_stop_commands_go_ahead_of_a_waiting_file_and_work_does_not(
    ahead: Ahead,
) -> None:
    await ahead.sync()
    ahead.nio.always = BAD_GATEWAY
    await ahead.sync(file_event(), text("!cancel"), text("!new"), text("more work"))
    assert ahead.commands.ran == ["cancel"]
    assert ahead.waiting() == [
        ("$file", "file"),
        ("$text-!new", "gate"),
        ("$text-more work", "gate"),
    ]
    ahead.nio.always = None
    await ahead.sync(after_s=60)
    assert ahead.commands.ran == ["cancel", "new"]
    assert ahead.waiting() == []


async def test_behind_an_event_waiting_for_the_gate_the_order_is_kept(ahead: Ahead) -> None:
    # Not a file: an owner's message the gate could not judge. A ✅ after it still waits
    # (one order per room, unjudged.py), as before.
    gate = with_gate(ahead.router, FailingGate())
    await ahead.sync()
    gate.down = True
    await ahead.sync(text("first"))
    gate.down = False
    running = task(ahead.db, 1)
    pending = asyncio.create_task(ahead.worker.approvals.ask(running, asking("touch x")))
    question = await ahead.room.wait_message("touch x", timeout=5)
    gate.down = True
    await ahead.sync(reaction(question.event_id), after_s=1)
    assert [e for e, _kind in ahead.waiting()] == ["$text-first", "$r"]
    assert not pending.done()
    pending.cancel()


@pytest.mark.parametrize(
    ("body", "question_open", "expected"),
    [
        ("!cancel", False, True),
        ("!pause", False, True),
        ("!resume", False, True),
        ("!status", False, True),
        ("!queue", False, True),
        ("!help", False, True),
        # Commands that make or change work keep their place.
        ("!new", False, False),
        ("!retry", False, False),
        ("!compact", False, False),
        ("!model opus", False, False),
        # An answer only while a question of the room is open; otherwise it is work.
        ("yes", True, True),
        ("no", True, True),
        ("yes", False, False),
        ("fix the tests", True, False),
    ],
)
async def test_which_texts_go_ahead(
    ahead: Ahead, body: str, question_open: bool, expected: bool
) -> None:
    pending = None
    if question_open:
        pending = asyncio.create_task(ahead.worker.approvals.ask(task(ahead.db, 1), asking("x")))
        await ahead.room.wait_message("x", timeout=5)
    assert ahead.router._intake.goes_ahead(RoomID(ROOM), body, None) is expected
    assert ahead.router._intake.goes_ahead(RoomID("!other:example.org"), body, None) is (
        expected and body.startswith("!")
    )
    if pending is not None:
        pending.cancel()
