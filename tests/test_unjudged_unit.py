"""An owner's message the trust gate cannot judge (the homeserver failed the owner's key
query) is neither lost nor run unjudged: it waits in the ledger, is judged again at the next
sync, keeps its place in the room's order, and survives a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from nio import SyncResponse
from test_sync_news_unit import OWNER, ROOM, FakeClient, FakeGate, build, response, text

from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.identity.gate import Identities, TrustGate
from dispatch_matrix.identity.held import HeldMessages
from dispatch_matrix.identity.signing import CrossSigningKeys
from dispatch_matrix.identity.tables import IdentityTables
from dispatch_matrix.matrix.client import MatrixClient
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
    return [decode(raw).event_id for _event, _room, raw in db.unjudged()]


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


# -- with the real trust gate: the owner's key query fails, then works ----------------------


class KeysClient(FakeClient):
    """The homeserver for the gate: the owner's published keys, or a failed query."""

    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__()
        self.reply = reply
        self.keys_down = True
        self.queries = 0

    async def query_keys(self, user_ids: list[str]) -> dict[str, Any]:
        self.queries += 1
        if self.keys_down:
            raise HomeserverError("POST /keys/query: 502 Bad Gateway")
        return self.reply


def owner_keys() -> dict[str, Any]:
    """A /keys/query reply: the owner's identity and one phone it cross-signed."""
    keys = CrossSigningKeys.generate()
    phone = {
        "user_id": OWNER,
        "device_id": "PHONE",
        "algorithms": ["m.megolm.v1.aes-sha2"],
        "keys": {"curve25519:PHONE": "phonecurve", "ed25519:PHONE": "phoneed"},
    }
    body = keys.upload_body(OWNER)
    return {
        "master_keys": {OWNER: body["master_key"]},
        "self_signing_keys": {OWNER: body["self_signing_key"]},
        "device_keys": {OWNER: {"PHONE": keys.self_signing.sign(phone, OWNER)}},
    }


def encrypted_sync(*bodies: str) -> SyncResponse:
    """A sync whose timeline nio decrypted: the owner's phone wrote each of `bodies`."""
    sync = response([text(body) for body in bodies])
    for event in sync.rooms.join[ROOM].timeline.events:
        event.decrypted, event.sender_key = True, "phonecurve"
    return sync


def real_gate(router: Router, db: Database, client: KeysClient) -> None:
    tables = IdentityTables(db)
    owners = frozenset({OWNER})
    identities = Identities(cast(MatrixClient, client), tables, owners)
    outbox = router._outbox
    held = HeldMessages.in_room(cast(MatrixClient, client), outbox, tables, identities)
    router._gate = TrustGate(
        tables,
        identities,
        held,
        outbox,
        owners=owners,
        require_cross_signed=True,
    )


async def test_with_the_real_gate_a_failed_key_query_loses_no_message_and_runs_none_unjudged(
    tmp_path: Path,
) -> None:
    client = KeysClient(owner_keys())
    router, db, _gate, tasks, _told, _nio = build(tmp_path, client=client)
    real_gate(router, db, client)
    await router.handle(response(), "since")
    await router.handle(encrypted_sync("one", "!status"), "since")
    assert tasks.messages == [] and waiting(db) == ["$text-one", "$text-!status"]
    assert client.queries == 1, "one failed query: the later message is not judged"
    db.close()
    # A restart while the homeserver still fails the query: still waiting, not lost.
    router, db, _gate, tasks, _told, _nio = build(tmp_path, client=client)
    real_gate(router, db, client)
    await router.handle(response(), "since")
    assert tasks.messages == [] and len(waiting(db)) == 2
    # The query works again: judged against the keys (the phone is cross-signed), in order.
    client.keys_down = False
    await router.handle(encrypted_sync("three"), "since")
    assert tasks.messages == ["$text-one", "$text-!status", "$text-three"]
    assert waiting(db) == [] and IdentityTables(db).pinned_identity(OWNER) is not None
    db.close()


async def test_a_gate_that_fails_by_a_bug_on_a_waiting_message_drops_it_once_logged(
    tmp_path: Path,
) -> None:
    """Not the homeserver: judged again it would fail every sync, and fail the sync."""
    router, db, _gate, tasks, _told, _nio = build(tmp_path)

    class Buggy(FailingGate):
        async def admit(self, event: Any, private: bool, *, explain: bool) -> bool:
            if not self.failures:
                raise KeyError("a bug")
            return await super().admit(event, private, explain=explain)

    with_gate(router, Buggy(failures=1))
    await router.handle(response(), "since")
    await router.handle(response([text("one")]), "since")
    assert waiting(db) == ["$text-one"]
    await router.handle(response([text("two")]), "since")
    assert waiting(db) == [] and tasks.messages == []
    db.close()
