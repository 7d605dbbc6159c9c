"""An owner's message the trust gate cannot judge (the homeserver failed the owner's key
query) is neither lost nor run unjudged: it waits in the ledger, is judged again at the next
sync, keeps its place in the room's order, and survives a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from test_sync_news_unit import FakeGate, build, response, text

from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.matrix.handlers import Gate
from dispatch_matrix.matrix.router import Router
from dispatch_matrix.matrix.unjudged import decode
from dispatch_matrix.store import Database


class FailingGate(FakeGate):
    """A gate whose key query fails `failures` more times (the homeserver away), or
    always while `down`; it records each event it judged."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.failures = failures
        self.down = False
        self.judged: list[str] = []

    async def admit(self, event: Any, private: bool, *, explain: bool) -> bool:
        if self.down or self.failures:
            self.failures = max(self.failures - 1, 0)
            raise HomeserverError("/keys/query failed: 502")
        self.judged.append(event.event_id)
        return await super().admit(event, private, explain=explain)


def with_gate(router: Router, gate: FailingGate) -> FailingGate:
    router._gate = cast(Gate, gate)
    return gate


def waiting(db: Database) -> list[str]:
    return [decode(raw).event_id for _room, raw in db.unjudged()]


async def test_a_message_the_gate_cannot_judge_waits_and_runs_once_it_can(
    tmp_path: Path,
) -> None:
    router, db, _gate, tasks, _told, _nio = build(tmp_path)
    gate = with_gate(router, FailingGate())
    await router.handle(response(), "since")
    gate.down = True
    await router.handle(response([text("one")]), "since")
    assert tasks.messages == [], "not run unjudged"
    assert waiting(db) == ["$text-one"], "not dropped: in the ledger before the token's save"
    # Every sync while the homeserver still fails the query looks again, and goes on.
    await router.handle(response(), "since")
    assert tasks.messages == [] and waiting(db) == ["$text-one"]
    gate.down = False
    await router.handle(response(), "since")
    assert tasks.messages == ["$text-one"] and waiting(db) == []
    await router.handle(response(), "since")
    assert tasks.messages == ["$text-one"], "taken once"
    db.close()


async def test_a_later_message_waits_behind_the_one_the_gate_could_not_judge(
    tmp_path: Path,
) -> None:
    router, db, _gate, tasks, _told, _nio = build(tmp_path)
    # One failed query: the homeserver is back for the very next message.
    gate = with_gate(router, FailingGate(failures=1))
    await router.handle(response(), "since")
    await router.handle(response([text("one"), text("!cancel")]), "since")
    assert tasks.messages == [] and gate.judged == [], "the later one is not judged first"
    assert waiting(db) == ["$text-one", "$text-!cancel"]
    # The next sync judges them in the order they came, then what it brought.
    await router.handle(response([text("three")]), "since")
    assert tasks.messages == ["$text-one", "$text-!cancel", "$text-three"]
    assert waiting(db) == []
    db.close()


async def test_a_room_whose_first_waiting_message_still_fails_keeps_the_rest_waiting(
    tmp_path: Path,
) -> None:
    router, db, _gate, tasks, _told, _nio = build(tmp_path)
    gate = with_gate(router, FailingGate())
    await router.handle(response(), "since")
    gate.down = True
    await router.handle(response([text("one"), text("two")]), "since")
    # The query fails once more at the retry (one attempt for the room), then works for
    # this sync's own message, which still must not overtake the two.
    gate.down, gate.failures = False, 1
    await router.handle(response([text("three")]), "since")
    assert tasks.messages == [] and gate.judged == []
    assert waiting(db) == ["$text-one", "$text-two", "$text-three"]
    await router.handle(response(), "since")
    assert tasks.messages == ["$text-one", "$text-two", "$text-three"]
    db.close()


async def test_a_message_waiting_for_the_gate_survives_a_restart(tmp_path: Path) -> None:
    router, db, _gate, tasks, _told, _nio = build(tmp_path)
    gate = with_gate(router, FailingGate())
    await router.handle(response(), "since")
    gate.down = True
    await router.handle(response([text("one")]), "since")
    db.close()
    # A new run: its first sync judges it (the homeserver is back).
    router, db, _gate, tasks, _told, _nio = build(tmp_path)
    assert tasks.messages == []
    await router.handle(response([text("two")]), "since")
    assert tasks.messages == ["$text-one", "$text-two"] and waiting(db) == []
    db.close()


async def test_a_refused_message_stops_waiting_without_being_taken(tmp_path: Path) -> None:
    router, db, _gate, tasks, _told, _nio = build(tmp_path)

    class Refusing(FailingGate):
        async def admit(self, event: Any, private: bool, *, explain: bool) -> bool:
            await super().admit(event, private, explain=explain)
            return False

    gate = with_gate(router, Refusing(failures=1))
    await router.handle(response(), "since")
    await router.handle(response([text("one")]), "since")
    assert waiting(db) == ["$text-one"]
    await router.handle(response(), "since")
    assert gate.judged == ["$text-one"] and tasks.messages == [] and waiting(db) == []
    db.close()
