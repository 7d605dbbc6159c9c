"""Replay protection without a homeserver: the pure decision, the ledger's record across a
reopen, and real Megolm sessions (nio's Olm machine, vodozemac) where a replayed ciphertext
is refused in the same run and after a restart, while nio alone accepts it after one."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import pytest
import vodozemac
from nio import EncryptionError, MegolmEvent
from nio.crypto import Olm
from nio.store import SqliteMemoryStore

from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.inbound import Unreadable
from dispatch_matrix.matrix.late_keys import LateKeys
from dispatch_matrix.matrix.replay import ReplayGuard, ReplayUnguarded, ReplayVerdict, judge_index
from dispatch_matrix.store import Database

ROOM = "!room:example.org"


@pytest.mark.parametrize(
    ("recorded", "event_id", "verdict"),
    [
        (None, "$first", ReplayVerdict.FIRST),
        ("$first", "$first", ReplayVerdict.SAME),
        ("$first", "$replay", ReplayVerdict.REPLAYED),
        (None, "", ReplayVerdict.NO_ID),
        ("$first", "", ReplayVerdict.NO_ID),
    ],
)
def test_judge_index(recorded: str | None, event_id: str, verdict: ReplayVerdict) -> None:
    assert judge_index(recorded, event_id) is verdict
    assert verdict.allowed is (verdict in (ReplayVerdict.FIRST, ReplayVerdict.SAME))


def test_the_ledger_keeps_the_first_event_at_an_index_across_a_reopen(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    assert db.claim_megolm_index("curve", "session", 0, "$a", ROOM) is None
    assert db.claim_megolm_index("curve", "session", 0, "$b", ROOM) == "$a"
    assert db.claim_megolm_index("curve", "session", 1, "$b", ROOM) is None
    assert db.claim_megolm_index("other-curve", "session", 0, "$c", ROOM) is None
    db.close()
    again = Database.open(tmp_path / "d.db")
    assert again.claim_megolm_index("curve", "session", 0, "$z", ROOM) == "$a"
    assert again.claim_megolm_index("curve", "session", 1, "$z", ROOM) == "$b"
    again.close()


class Owner:
    """An owner's device: one outbound Megolm session in the room."""

    def __init__(self) -> None:
        self.olm = Olm("@owner:example.org", "OWNERDEV", SqliteMemoryStore("@o:x", "OWNERDEV"))
        self.olm.create_outbound_group_session(ROOM)
        self.session = self.olm.outbound_group_sessions[ROOM]
        self.session.shared = True
        # The key at index 0, as shared with the bot before the first message.
        self.session_key = self.session.session_key

    def encrypt(self, body: str) -> dict[str, Any]:
        content = {"msgtype": "m.text", "body": body}
        return self.olm.group_encrypt(ROOM, {"type": "m.room.message", "content": content})

    def bot(self) -> Olm:
        """The bot's crypto machine as after a start: the session key from its store, and
        nio's in-memory replay record empty."""
        bot = Olm("@bot:example.org", "BOTDEV", SqliteMemoryStore("@b:x", "BOTDEV"))
        keys = self.olm.account.identity_keys
        bot.create_group_session(
            keys["curve25519"], keys["ed25519"], ROOM, self.session.id, self.session_key
        )
        return bot


def event(content: dict[str, Any], event_id: str, ts: int = 1_700_000_000_000) -> MegolmEvent:
    source = {
        "type": "m.room.encrypted",
        "event_id": event_id,
        "sender": "@owner:example.org",
        "origin_server_ts": ts,
        "room_id": ROOM,
        "content": content,
    }
    parsed = MegolmEvent.from_dict(source)
    assert isinstance(parsed, MegolmEvent)
    return parsed


@pytest.fixture(autouse=True)
def _quiet_nio() -> None:
    logging.getLogger("nio").setLevel(logging.ERROR)


def test_a_replayed_ciphertext_is_refused_in_the_same_run_and_after_a_restart(
    tmp_path: Path,
) -> None:
    owner = Owner()
    first, second = owner.encrypt("run the report"), owner.encrypt("and then stop")
    # The index is in the ciphertext (signed): the replay carries the original's index.
    assert vodozemac.MegolmMessage.from_base64(first["ciphertext"]).message_index() == 0
    assert vodozemac.MegolmMessage.from_base64(second["ciphertext"]).message_index() == 1

    db = Database.open(tmp_path / "d.db")
    bot, guard = owner.bot(), ReplayGuard(db)
    guard.install(bot)
    guard.ensure(bot)
    assert bot.decrypt_megolm_event(event(first, "$first"), ROOM).body == "run the report"
    assert bot.decrypt_megolm_event(event(second, "$second"), ROOM).body == "and then stop"
    # The same event again (a re-read after a crash) is fine; another id is a replay.
    assert bot.decrypt_megolm_event(event(first, "$first"), ROOM).body == "run the report"
    with pytest.raises(EncryptionError):
        bot.decrypt_megolm_event(event(first, "$replay-1", ts=1_800_000_000_000), ROOM)
    replay = guard.refused("$replay-1")
    assert replay is not None and replay.first_event_id == "$first"
    # The router commits a sync's claims before it acts on any of its events.
    guard.flush()
    db.close()

    # A restart: nio alone has forgotten, and decrypts the replay as a new message …
    unguarded = owner.bot()
    assert unguarded.decrypt_megolm_event(event(first, "$replay-2"), ROOM).body == (
        "run the report"
    )
    # … the guard, on the same ledger, refuses it.
    db = Database.open(tmp_path / "d.db")
    bot, guard = owner.bot(), ReplayGuard(db)
    guard.install(bot)
    with pytest.raises(EncryptionError):
        bot.decrypt_megolm_event(event(first, "$replay-3"), ROOM)
    with pytest.raises(EncryptionError):
        bot.decrypt_megolm_event(event(second, "$replay-4"), ROOM)
    assert guard.refused("$replay-3") is not None and guard.refused("$replay-4") is not None
    assert bot.decrypt_megolm_event(event(second, "$second"), ROOM).body == "and then stop"
    fresh = owner.encrypt("a new message")
    assert bot.decrypt_megolm_event(event(fresh, "$third"), ROOM).body == "a new message"
    assert guard.refused("$third") is None
    db.close()


def test_a_machine_the_guard_does_not_watch_fails_closed(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    owner = Owner()
    guard = ReplayGuard(db)
    guard.install(owner.bot())
    guard.ensure(None)
    with pytest.raises(ReplayUnguarded):
        guard.ensure(owner.bot())
    db.close()


def test_a_replayed_encrypted_reaction_is_refused_after_a_restart(tmp_path: Path) -> None:
    owner = Owner()
    relation = {"rel_type": "m.annotation", "event_id": "$question", "key": "✅"}
    reaction = owner.olm.group_encrypt(
        ROOM, {"type": "m.reaction", "content": {"m.relates_to": relation}}
    )
    db = Database.open(tmp_path / "d.db")
    bot, guard = owner.bot(), ReplayGuard(db)
    guard.install(bot)
    assert bot.decrypt_megolm_event(event(reaction, "$yes-reaction"), ROOM).key == "✅"
    guard.flush()
    db.close()
    db = Database.open(tmp_path / "d.db")
    bot, guard = owner.bot(), ReplayGuard(db)
    guard.install(bot)
    with pytest.raises(EncryptionError):
        bot.decrypt_megolm_event(event(reaction, "$replayed-reaction"), ROOM)
    assert guard.refused("$replayed-reaction") is not None
    db.close()


class _Nio:
    def decrypt_event(self, _event: MegolmEvent) -> Any:
        raise EncryptionError("Duplicate message index")

    async def request_room_key(self, _event: MegolmEvent) -> None:
        return None


class _Client:
    client = _Nio()


async def test_a_held_event_refused_as_a_replay_is_let_go_without_a_notice(
    tmp_path: Path,
) -> None:
    db = Database.open(tmp_path / "d.db")
    told: list[str] = []

    async def gave_up(item: Unreadable) -> None:
        told.append(item.event_id)

    async def read(_message: Any) -> None:
        raise AssertionError("nothing is read")

    source = event(Owner().encrypt("old"), "$held").source
    client = cast(MatrixClient, _Client())
    late = LateKeys(client, db, 0.0, read, gave_up, refused=lambda e: e == "$held")
    db.hold_undecrypted("$held", ROOM, "@owner:example.org", source)
    await late.retry(now=10**10)
    assert db.waiting_undecrypted() == [] and told == []
    db.close()


def test_claims_wait_for_the_flush_and_still_refuse_a_replay_meanwhile(tmp_path: Path) -> None:
    owner = Owner()
    message = owner.encrypt("run the report")
    db = Database.open(tmp_path / "d.db")
    bot, guard = owner.bot(), ReplayGuard(db)
    guard.install(bot)
    assert bot.decrypt_megolm_event(event(message, "$first"), ROOM).body == "run the report"
    # Held, not yet committed: a replay in the same sync is refused all the same …
    with pytest.raises(EncryptionError):
        bot.decrypt_megolm_event(event(message, "$replay"), ROOM)
    assert db.megolm_index(*_index_of(owner, message)) is None
    # … and one flush commits every claim at once.
    guard.flush()
    assert db.megolm_index(*_index_of(owner, message)) == "$first"
    db.close()


def _index_of(owner: Owner, message: dict[str, Any]) -> tuple[str, str, int]:
    curve = owner.olm.account.identity_keys["curve25519"]
    return curve, str(message["session_id"]), 0


async def test_an_event_deleted_while_it_waits_for_its_keys_is_never_read(
    tmp_path: Path,
) -> None:
    db = Database.open(tmp_path / "d.db")
    read_ids: list[str] = []

    async def read(message: Any) -> None:
        read_ids.append(message.event_id)

    async def gave_up(item: Unreadable) -> None:
        raise AssertionError("nothing is given up on")

    owner = Owner()
    for event_id in ("$deleted", "$kept"):
        source = event(owner.encrypt(event_id), event_id).source
        db.hold_undecrypted(event_id, ROOM, "@owner:example.org", source)
    late = LateKeys(cast(MatrixClient, _Client()), db, 60.0, read, gave_up)
    late.deleted("$deleted", "!elsewhere:example.org")  # another room's event id: kept
    assert len(db.waiting_undecrypted()) == 2
    late.deleted("$deleted", ROOM)
    assert [source["event_id"] for _room, _sender, source, _seen in db.waiting_undecrypted()] == [
        "$kept"
    ]
    assert late.due_at is not None, "the other one still waits for its keys"
    late.deleted("$kept", ROOM)
    assert db.waiting_undecrypted() == [] and late.due_at is None
    await late.retry(now=10**10)
    assert read_ids == []
    db.close()
