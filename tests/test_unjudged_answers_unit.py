"""An owner's reaction or poll vote the trust gate cannot judge (the homeserver failed the
owner's key query) waits as a message does: kept in the ledger, judged again at the next
sync in its room's one order, then handled exactly as if judged on time. A ✅ answered late
approves while its question is open, and nothing once it expired."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any, cast

import pytest
from harness.workbench import FakeRoom
from nio import EncryptionError, MegolmEvent, SyncResponse
from nio.events import Event
from structlog.testing import capture_logs
from test_sync_news_unit import (
    OWNER,
    ROOM,
    ROOM_KEY,
    FakeClient,
    FakeNio,
    build,
    response,
    text,
    waiting_event,
)
from test_unjudged_unit import FailingGate, KeysClient, owner_keys, real_gate, with_gate

from dispatch_matrix.agent.ports import Approval
from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.matrix.handlers import Tasks
from dispatch_matrix.matrix.inbound import Message, Reaction, Vote
from dispatch_matrix.matrix.polls import UNSTABLE_RESPONSE, Ballot
from dispatch_matrix.matrix.router import (
    AfterVerdict,
    Router,
    after_verdict,
    explains_refusal,
)
from dispatch_matrix.matrix.unjudged import decode, encode
from dispatch_matrix.permissions.policy import Decision
from dispatch_matrix.queue.intake import Intake
from dispatch_matrix.queue.polls import ONCE
from dispatch_matrix.queue.worker import Worker
from dispatch_matrix.store import Database, Task

ROOM_ID, EVENT, SENDER = RoomID(ROOM), EventID("$e"), UserID(OWNER)
MESSAGE = Message(ROOM_ID, EVENT, SENDER, "hi", 5, True, "curve", reply_to=EventID("$r"))
REACTION = Reaction(ROOM_ID, EVENT, SENDER, EventID("$question"), "✅", True, "curve")
VOTE = Vote(ROOM_ID, EVENT, SENDER, Ballot(EventID("$poll"), ("once",)), True, "curve")
PLAIN_REACTION = dataclasses.replace(REACTION, was_encrypted=False, sender_key=None)
PLAIN_VOTE = dataclasses.replace(VOTE, was_encrypted=False, sender_key=None)
PLAIN_MESSAGE = dataclasses.replace(MESSAGE, was_encrypted=False, sender_key=None)


# -- the stored form -------------------------------------------------------------------------


@pytest.mark.parametrize("item", [MESSAGE, REACTION, VOTE, PLAIN_REACTION])
def test_each_kind_reads_back_as_it_was_kept(item: Message | Reaction | Vote) -> None:
    assert decode(encode(item)) == item


def test_a_message_kept_by_the_code_before_kinds_still_reads_back() -> None:
    # Format 1, exactly as the ledger held it: the message's fields, no envelope.
    old = (
        '{"room_id": "!room:example.org", "event_id": "$e", "sender": "@owner:example.org",'
        ' "body": "hi", "origin_ts": 5, "was_encrypted": true, "sender_key": "curve",'
        ' "replaces": null, "msgtype": "m.text", "content": null, "reply_to": "$r",'
        ' "thread_root": null}'
    )
    assert decode(old) == MESSAGE


@pytest.mark.parametrize(
    "stored",
    [
        {"format": 3, "kind": "message", "event": {}},
        {"format": 2, "kind": "sticker", "event": {}},
    ],
)
def test_a_form_this_code_does_not_know_is_refused(stored: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="unknown unjudged"):
        decode(json.dumps(stored))


# -- the decisions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "admitted", "private", "expected"),
    [
        (MESSAGE, True, True, AfterVerdict.OBEY),
        (REACTION, True, True, AfterVerdict.OBEY),
        (VOTE, True, False, AfterVerdict.OBEY),
        (MESSAGE, False, True, AfterVerdict.NOTHING),
        (PLAIN_MESSAGE, False, True, AfterVerdict.NOTHING),
        # Element's unencrypted ✅ (or vote) in a private room: the owner learns what works.
        (PLAIN_REACTION, False, True, AfterVerdict.PLAINTEXT_ANSWER),
        (PLAIN_VOTE, False, True, AfterVerdict.PLAINTEXT_ANSWER),
        # Not in a shared room, and not for an encrypted one refused (an unverified session).
        (PLAIN_REACTION, False, False, AfterVerdict.NOTHING),
        (REACTION, False, True, AfterVerdict.NOTHING),
        (VOTE, False, True, AfterVerdict.NOTHING),
    ],
)  # fmt: skip
def test_after_verdict(
    item: Message | Reaction | Vote, admitted: bool, private: bool, expected: AfterVerdict
) -> None:
    assert after_verdict(item, admitted, private) is expected


@pytest.mark.parametrize(
    ("item", "private", "expected"),
    [
        (MESSAGE, True, True),
        (PLAIN_MESSAGE, False, True),
        (REACTION, True, False),
        (PLAIN_REACTION, True, False),
        (VOTE, True, True),
        (VOTE, False, True),
        (PLAIN_VOTE, False, True),
        # The approvals answer it (`after_verdict`): not explained twice.
        (PLAIN_VOTE, True, False),
    ],
)  # fmt: skip
def test_explains_refusal(item: Message | Reaction | Vote, private: bool, expected: bool) -> None:
    assert explains_refusal(item, private) is expected


# -- through the router ----------------------------------------------------------------------


class Recorder:
    """The router's intake, recording what reached it, in one list, in order."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.ballots: list[Ballot] = []

    async def message(self, event_id: str, *args: Any, **kwargs: Any) -> None:
        self.seen.append(f"message {event_id}")

    def goes_ahead(self, room_id: str, body: str, reply_to: str | None) -> bool:
        return body == "!cancel"

    async def reaction(self, target: str, key: str, sender: str) -> None:
        self.seen.append(f"reaction {key} on {target}")

    async def vote(self, room_id: str, ballot: Ballot, sender: str, event_id: str) -> None:
        self.ballots.append(ballot)
        self.seen.append(f"vote {event_id}")

    async def plaintext_answer(self, room_id: str, target: str, event_id: str) -> None:
        self.seen.append(f"plaintext {event_id} on {target}")


def recorder(router: Router) -> Recorder:
    intake = Recorder()
    router._intake = cast(Tasks, intake)
    return intake


def reaction(target: str, key: str = "✅", name: str = "r") -> dict[str, Any]:
    return {
        "type": "m.reaction",
        "sender": OWNER,
        "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}},
        "event_id": f"${name}",
        "origin_server_ts": 2,
    }


def vote(poll: str, answer: str, name: str = "v") -> dict[str, Any]:
    return {
        "type": UNSTABLE_RESPONSE,
        "sender": OWNER,
        "content": {
            "m.relates_to": {"rel_type": "m.reference", "event_id": poll},
            UNSTABLE_RESPONSE: {"answers": [answer]},
        },
        "event_id": f"${name}",
        "origin_server_ts": 2,
    }


def encrypted(*events: dict[str, Any]) -> SyncResponse:
    """A sync whose timeline nio decrypted: the owner's (cross-signed) phone sent each."""
    sync = response(list(events))
    for event in sync.rooms.join[ROOM].timeline.events:
        event.decrypted, event.sender_key = True, "phonecurve"
    return sync


def waiting(db: Database) -> list[str]:
    return [event_id for event_id, _room, _raw in db.unjudged()]


@pytest.mark.parametrize("syncs_held", [1, 3])
async def test_a_reaction_the_gate_cannot_judge_waits_and_is_taken_exactly_once(
    tmp_path: Path, syncs_held: int
) -> None:
    router, db, _gate, _tasks, _told, _nio = build(tmp_path)
    gate, intake = with_gate(router, FailingGate()), recorder(router)
    await router.handle(response(), "since")
    gate.down = True
    await router.handle(response([reaction("$question")]), "since")
    assert intake.seen == [] and waiting(db) == ["$r"], "not dropped: in the ledger"
    for _ in range(syncs_held - 1):
        await router.handle(response(), "since")
    assert intake.seen == [] and waiting(db) == ["$r"]
    gate.down = False
    with capture_logs() as logged:
        for _ in range(3):
            await router.handle(response(), "since")
    assert intake.seen == ["reaction ✅ on $question"], "taken once, as if judged on time"
    assert waiting(db) == [] and gate.judged == ["$r"]
    late = [r for r in logged if r["event"] == "reaction.judged_late"]
    assert [(r["event_id"], r["admitted"]) for r in late] == [("$r", True)]
    db.close()


async def test_one_order_per_room_whatever_the_kind(tmp_path: Path) -> None:
    router, db, _gate, _tasks, _told, _nio = build(tmp_path)
    gate, intake = with_gate(router, FailingGate()), recorder(router)
    await router.handle(response(), "since")
    gate.down = True
    # A vote the gate cannot judge first: the message and the reaction behind it wait.
    await router.handle(
        response([vote("$poll", "once"), text("one"), reaction("$q", name="r1")]), "since"
    )
    assert waiting(db) == ["$v", "$text-one", "$r1"] and gate.judged == []
    # Back: judged in the order they came, before this sync's own events.
    gate.down = False
    await router.handle(response([reaction("$q", "❌", name="r2"), text("two")]), "since")
    assert intake.seen == [
        "vote $v",
        "message $text-one",
        "reaction ✅ on $q",
        "reaction ❌ on $q",
        "message $text-two",
    ]
    assert intake.ballots == [Ballot(EventID("$poll"), ("once",))], "the ballot kept whole"
    assert waiting(db) == []
    db.close()


async def test_a_reaction_behind_a_waiting_message_waits_across_a_restart(
    tmp_path: Path,
) -> None:
    router, db, _gate, _tasks, _told, _nio = build(tmp_path)
    gate = with_gate(router, FailingGate())
    await router.handle(response(), "since")
    gate.down = True
    await router.handle(response([text("!status"), reaction("$q")]), "since")
    db.close()
    router, db, _gate, _tasks, _told, _nio = build(tmp_path)
    intake = recorder(router)
    await router.handle(response(), "since")
    assert intake.seen == ["message $text-!status", "reaction ✅ on $q"]
    db.close()


async def test_a_message_kept_by_the_older_code_is_taken_after_an_upgrade(
    tmp_path: Path,
) -> None:
    db = Database.open(tmp_path / "d.db")
    old = Message(ROOM_ID, EventID("$old"), SENDER, "from before", 1, False, None)
    db.keep_unjudged("$old", ROOM, json.dumps(dataclasses.asdict(old)))
    db.close()
    router, db, _gate, _tasks, _told, _nio = build(tmp_path)
    intake = recorder(router)
    await router.handle(response([reaction("$q")]), "since")
    assert intake.seen == ["message $old", "reaction ✅ on $q"] and waiting(db) == []
    db.close()


async def test_a_row_this_code_cannot_read_is_dropped_once_and_holds_nothing(
    tmp_path: Path,
) -> None:
    """Written by a newer version (a downgrade): it must not stop the room for ever."""
    db = Database.open(tmp_path / "d.db")
    db.keep_unjudged("$new", ROOM, json.dumps({"format": 9, "kind": "?", "event": {}}))
    db.close()
    router, db, _gate, _tasks, _told, _nio = build(tmp_path)
    intake = recorder(router)
    await router.handle(response([text("next")]), "since")
    assert intake.seen == ["message $text-next"] and waiting(db) == []
    db.close()


async def test_an_unencrypted_reaction_behind_a_waiting_message_is_answered_late(
    tmp_path: Path,
) -> None:
    """Refused when judged, as it would have been on time: the owner learns what works."""
    client = KeysClient(owner_keys())
    router, db, _gate, _tasks, _told, _nio = build(tmp_path, client=client)
    real_gate(router, db, client)
    intake = recorder(router)
    await router.handle(response(), "since")
    await router.handle(encrypted(text("one")), "since")
    # Plaintext needs no key query, but it must not overtake the message (which is tried
    # again at this sync: a second failed query).
    await router.handle(response([reaction("$q", name="plain")]), "since")
    assert waiting(db) == ["$text-one", "$plain"] and client.queries == 2
    client.keys_down = False
    await router.handle(response(), "since")
    assert intake.seen == ["message $text-one", "plaintext $plain on $q"]
    db.close()


class ReactionNio(FakeNio):
    """nio whose waiting event, once its room key came, reads as the owner's ✅."""

    def decrypt_event(self, event: MegolmEvent) -> Any:
        self.decrypted.append(event.event_id)
        if not self.readable:
            raise EncryptionError("no session")
        return Event.parse_event(reaction("$q") | {"event_id": event.event_id})


async def test_a_reaction_whose_room_key_came_late_is_judged_and_waits_for_the_gate_too(
    tmp_path: Path,
) -> None:
    """Read late, it is routed as on time: an approval's ✅ is not dropped for being late."""
    client = FakeClient()
    client.client = ReactionNio()
    router, db, _gate, _tasks, _told, nio = build(tmp_path, client=client)
    gate, intake = with_gate(router, FailingGate()), recorder(router)
    await router.handle(response(), "since")
    await router.handle(response([waiting_event("$late")]), "since")
    assert intake.seen == [] and len(db.waiting_undecrypted()) == 1
    # Its key comes while the owner's keys cannot be fetched: it waits for the gate.
    nio.readable, gate.down = True, True
    await router.handle(response(to_device=[ROOM_KEY]), "since")
    assert intake.seen == [] and db.waiting_undecrypted() == [] and waiting(db) == ["$late"]
    gate.down = False
    await router.handle(response(), "since")
    await router.handle(response(), "since")
    assert intake.seen == ["reaction ✅ on $q"], "taken once"
    db.close()


# -- with the real gate and the real approvals ---------------------------------------------


def approvals_bench(
    tmp_path: Path, timeout_s: float
) -> tuple[Router, Database, KeysClient, Worker, FakeRoom]:
    """The router with the real trust gate (the owner's keys down at first) in front of the
    real intake, worker and approvals."""
    client = KeysClient(owner_keys())
    router, db, _gate, _tasks, _told, _nio = build(tmp_path, client=client)
    real_gate(router, db, client)
    room = FakeRoom()
    worker = Worker(db, None, room, approval_timeout_s=timeout_s, outage_first_s=30)  # type: ignore[arg-type]
    router._intake = Intake(db, worker, room, None, 1000)  # type: ignore[arg-type]  # no command here
    return router, db, client, worker, room


def task(db: Database, n: int) -> Task:
    made = db.add_task(EventID(f"$t{n}"), ROOM_ID, SENDER, f"task {n}", n)
    assert made is not None
    return made


def asking(command: str) -> Decision:
    return Decision("ask", "no rule allows it", command, None, ())


async def test_a_check_mark_judged_late_approves_its_open_question(tmp_path: Path) -> None:
    router, db, client, worker, room = approvals_bench(tmp_path, timeout_s=30)
    await router.handle(response(), "since")
    pending = asyncio.create_task(worker.approvals.ask(task(db, 1), asking("touch x")))
    question = await room.wait_message("touch x", timeout=5)
    # The owner taps ✅ while the homeserver fails their key query: kept, not lost.
    await router.handle(encrypted(reaction(question.event_id)), "since")
    await router.handle(response(), "since")
    assert waiting(db) == ["$r"] and not pending.done()
    client.keys_down = False
    await router.handle(response(), "since")
    assert await asyncio.wait_for(pending, 5) is Approval.YES
    assert waiting(db) == []
    worker.mirror.close()
    db.close()


async def test_a_poll_vote_judged_late_approves_its_open_question(tmp_path: Path) -> None:
    router, db, client, worker, room = approvals_bench(tmp_path, timeout_s=30)
    await router.handle(response(), "since")
    pending = asyncio.create_task(worker.approvals.ask(task(db, 1), asking("touch x")))
    await room.wait_message("touch x", timeout=5)
    poll = (await room.wait_for(lambda: room.events[:1], "the poll", 5))[0].event_id
    await router.handle(encrypted(vote(poll, ONCE)), "since")
    assert waiting(db) == ["$v"] and not pending.done()
    client.keys_down = False
    await router.handle(response(), "since")
    assert await asyncio.wait_for(pending, 5) is Approval.YES
    worker.mirror.close()
    db.close()


async def test_a_check_mark_judged_after_its_question_expired_approves_nothing(
    tmp_path: Path,
) -> None:
    router, db, client, worker, room = approvals_bench(tmp_path, timeout_s=0.3)
    await router.handle(response(), "since")
    expiring = asyncio.create_task(worker.approvals.ask(task(db, 1), asking("touch one")))
    question = await room.wait_message("touch one", timeout=5)
    await router.handle(encrypted(reaction(question.event_id)), "since")
    assert waiting(db) == ["$r"]
    assert await asyncio.wait_for(expiring, 5) is Approval.NO, "silence: it expired"
    # Another question is open when the keys come back: the late ✅ is on the first only.
    worker.approvals._timeout_s = 30
    second = asyncio.create_task(worker.approvals.ask(task(db, 2), asking("touch two")))
    await room.wait_message("touch two", timeout=5)
    client.keys_down = False
    await router.handle(response(), "since")
    assert waiting(db) == [], "judged, admitted, and it answered nothing"
    assert not second.done(), "the open question is still open"
    decided = db._conn.execute("SELECT approved, decided_by FROM approvals").fetchall()
    assert [tuple(row) for row in decided] == [(0, "timeout")], "nothing approved late"
    second.cancel()
    worker.mirror.close()
    db.close()


# -- deletions of what waits -----------------------------------------------------------------


class DeletionRecorder(Recorder):
    async def redacted(self, target: str) -> None:
        self.seen.append(f"redacted {target}")


def redaction(target: str, name: str = "del") -> dict[str, Any]:
    return {
        "type": "m.room.redaction",
        "sender": OWNER,
        "redacts": target,
        "content": {},
        "event_id": f"${name}",
        "origin_server_ts": 3,
    }


async def test_a_message_deleted_while_it_waits_is_never_taken(tmp_path: Path) -> None:
    """The owner deletes a message the gate could not judge yet: it must not run once the
    gate is back (a queued task deleted is dropped; one that waits must be too)."""
    router, db, _gate, _tasks, _told, _nio = build(tmp_path)
    gate = with_gate(router, FailingGate())
    intake = DeletionRecorder()
    router._intake = cast(Tasks, intake)
    await router.handle(response(), "since")
    gate.down = True
    await router.handle(response([text("rm -rf build"), reaction("$q")]), "since")
    assert waiting(db) == ["$text-rm -rf build", "$r"]
    await router.handle(
        response([redaction("$text-rm -rf build"), redaction("$r", name="del2")]), "since"
    )
    assert waiting(db) == [], "what was deleted waits no more"
    gate.down = False
    await router.handle(response([text("next")]), "since")
    assert "message $text-rm -rf build" not in intake.seen
    assert "reaction ✅ on $q" not in intake.seen
    assert intake.seen[-1] == "message $text-next"
    assert not router.waiting()
    db.close()


async def test_the_ledger_drops_a_waiting_event_only_for_its_own_room(tmp_path: Path) -> None:
    """A redaction names an event id only: one sent in another room must not drop it."""
    router, db, _gate, _tasks, _told, _nio = build(tmp_path)
    gate = with_gate(router, FailingGate())
    await router.handle(response(), "since")
    gate.down = True
    await router.handle(response([text("one")]), "since")
    assert not db.forget_unjudged("$text-one", "!elsewhere:x")
    assert waiting(db) == ["$text-one"]
    assert db.forget_unjudged("$text-one", ROOM) and waiting(db) == []
    db.close()


class OwnersKeysFailing(FailingGate):
    """As the real gate: only an owner's event needs their keys (a stranger's is refused
    without a look), so only an owner's can fail to be judged."""

    async def admit(self, event: Any, private: bool, *, explain: bool) -> bool:
        if event.sender != OWNER:
            self.judged.append(event.event_id)
            return False
        return await super().admit(event, private, explain=explain)


async def test_a_strangers_messages_behind_a_waiting_one_take_no_room_in_the_ledger(
    tmp_path: Path,
) -> None:
    """Only an owner's event can need the gate's network look; a stranger's is refused
    at once whatever waits (there is no order of theirs to keep), so a stranger in a shared
    room cannot fill the ledger while an owner's message waits."""
    router, db, _gate, _tasks, _told, _nio = build(tmp_path)
    gate, intake = with_gate(router, OwnersKeysFailing()), recorder(router)
    await router.handle(response(), "since")
    gate.down = True
    flood = [{**text(f"spam {n}"), "sender": "@stranger:x"} for n in range(3)]
    await router.handle(response([text("mine"), *flood]), "since")
    assert waiting(db) == ["$text-mine"]
    gate.down = False
    await router.handle(response(), "since")
    assert intake.seen == ["message $text-mine"]
    db.close()
