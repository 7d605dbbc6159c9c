"""Messages held while an owner's identity is not trusted: the pure decisions, and the
holding and releasing over a real store with fake keys and sends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.identity.held import (
    MAX_HOLD_S,
    HeldMessages,
    Release,
    fingerprint,
    preview,
    release_action,
)
from dispatch_matrix.identity.tables import IdentityTables
from dispatch_matrix.identity.trust import DeviceTrust, UserKeys
from dispatch_matrix.matrix.inbound import Message
from dispatch_matrix.store import Database

OLD, NEW, OTHER = "old-master-key", "new-master-key-AAAA", "third-master"
OWNER = UserID("@owner:example.org")
ROOM = RoomID("!room:example.org")

T = DeviceTrust


@pytest.mark.parametrize(
    ("device", "allowed", "held", "pinned", "age", "expected"),
    [
        # Still the untrusted identity: wait, for a day at most.
        (T.IDENTITY_CHANGED, False, NEW, OLD, 10, Release.WAIT),
        (T.IDENTITY_CHANGED, False, NEW, OLD, MAX_HOLD_S, Release.WAIT),
        (T.IDENTITY_CHANGED, False, NEW, OLD, MAX_HOLD_S + 1, Release.NAME),
        # Trusted on the computer: the identity it came under is the pinned one.
        (T.CROSS_SIGNED, True, NEW, NEW, 10, Release.RUN),
        (T.CROSS_SIGNED, True, NEW, NEW, MAX_HOLD_S, Release.RUN),
        # Too old by then: named, not run.
        (T.CROSS_SIGNED, True, NEW, NEW, MAX_HOLD_S + 1, Release.NAME),
        # Another identity was trusted (or the old one came back): its device fails now.
        (T.UNSIGNED, False, NEW, OLD, 10, Release.NAME),
        (T.UNKNOWN_DEVICE, False, NEW, NEW, 10, Release.NAME),
        # The gate allows it now, but under an identity other than the one it came under.
        (T.CROSS_SIGNED, True, NEW, OTHER, 10, Release.NAME),
        (T.CROSS_SIGNED, True, None, NEW, 10, Release.NAME),
        # The gate refuses it now for another reason (a stranger joined the room).
        (T.CROSS_SIGNED, False, NEW, NEW, 10, Release.NAME),
        (None, False, NEW, NEW, 10, Release.NAME),
    ],
)
def test_release_action(
    device: DeviceTrust | None,
    allowed: bool,
    held: str | None,
    pinned: str | None,
    age: float,
    expected: Release,
) -> None:
    assert release_action(device, allowed, held, pinned, age) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("delete the backups", "«delete the backups»"),
        ("  two\nlines  ", "«two lines»"),
        ("x" * 41, "«" + "x" * 40 + "…»"),
        ("", "«»"),
    ],
)
def test_preview(text: str, expected: str) -> None:
    assert preview(text) == expected


def test_fingerprint_groups_by_four() -> None:
    assert fingerprint("abcdefghij") == "abcd efgh ij"
    assert fingerprint(None) == "(none published)"


class FakeIdentities:
    """Published keys with one new device under `master`; the pin in a variable."""

    def __init__(self) -> None:
        self.master = NEW
        self.pin: str | None = OLD
        self.standing = T.IDENTITY_CHANGED

    async def keys(self, user_id: str, refresh: bool = False) -> UserKeys:
        devices: dict[str, dict[str, Any]] = {"OLDDEV": {}, "NEWDEV": {}}
        master = {"keys": {f"ed25519:{self.master}": self.master}}
        return UserKeys(user_id, master, None, devices)

    async def judge(self, user_id: str, sender_key: str | None) -> DeviceTrust:
        return self.standing

    def pinned(self, user_id: str) -> str | None:
        return self.pin


class Recorder:
    def __init__(self) -> None:
        self.notices: list[tuple[RoomID, dict[str, Any], dict[str, set[str]]]] = []
        self.posts: list[tuple[RoomID, str]] = []
        self.routed: list[Message] = []
        self.fail_notice = False

    async def send(
        self, room: RoomID, content: dict[str, Any], devices: dict[str, set[str]]
    ) -> None:
        if self.fail_notice:
            raise HomeserverError("send failed: 502")
        self.notices.append((room, content, devices))

    async def post(self, room: RoomID, text: str) -> None:
        self.posts.append((room, text))

    async def route(self, message: Message) -> None:
        self.routed.append(message)


def message(n: int, body: str) -> Message:
    return Message(ROOM, EventID(f"$e{n}"), OWNER, body, 1000 + n, True, "curve-new")


@pytest.fixture
def parts(tmp_path: Path) -> tuple[Database, FakeIdentities, Recorder, list[float], HeldMessages]:
    db = Database.open(tmp_path / "db.sqlite")
    ids = FakeIdentities()
    rec = Recorder()
    now = [1_000_000.0]
    held = HeldMessages(IdentityTables(db), ids, rec.send, rec.post, clock=lambda: now[0])
    return db, ids, rec, now, held


async def test_held_once_told_once_then_run_in_order_after_trust(
    parts: tuple[Database, FakeIdentities, Recorder, list[float], HeldMessages],
) -> None:
    db, ids, rec, now, held = parts
    await held.hold(message(1, "delete the backups"))
    await held.hold(message(2, "and empty the logs"))
    await held.hold(message(1, "delete the backups"))  # the same event again (a gap fill)
    assert len(IdentityTables(db).held_messages()) == 2
    assert len(rec.notices) == 1, "once per identity change per room"
    room, content, devices = rec.notices[0]
    assert room == ROOM and devices == {OWNER: {"OLDDEV", "NEWDEV"}}
    assert content["msgtype"] == "m.notice"
    assert content["m.relates_to"] == {"m.in_reply_to": {"event_id": "$e1"}}
    body = content["body"]
    assert f"dispatch-matrix trust {OWNER}" in body
    assert fingerprint(NEW) in body and "«delete the backups»" in body

    # Not trusted yet: nothing runs, nothing is said.
    await held.release(rec.route, lambda m, d: d is T.CROSS_SIGNED)
    assert rec.routed == [] and rec.posts == [] and len(IdentityTables(db).held_messages()) == 2

    ids.pin, ids.standing = NEW, T.CROSS_SIGNED
    now[0] += 600
    await held.release(rec.route, lambda m, d: d is T.CROSS_SIGNED)
    assert [m.event_id for m in rec.routed] == ["$e1", "$e2"]
    assert rec.routed[0] == message(1, "delete the backups")
    assert rec.posts == [] and IdentityTables(db).held_messages() == []
    await held.release(rec.route, lambda m, d: True)
    assert len(rec.routed) == 2, "each held message runs once"


async def test_held_messages_are_named_in_one_message_when_they_cannot_run(
    parts: tuple[Database, FakeIdentities, Recorder, list[float], HeldMessages],
) -> None:
    db, ids, rec, _now, held = parts
    await held.hold(message(1, "delete the backups"))
    await held.hold(message(2, "and empty the logs"))
    # The operator re-pinned a third identity: the held messages' device fails now.
    ids.pin, ids.standing = OTHER, T.UNSIGNED
    await held.release(rec.route, lambda m, d: False)
    assert rec.routed == []
    assert len(rec.posts) == 1
    room, text = rec.posts[0]
    assert room == ROOM
    assert "«delete the backups», «and empty the logs»" in text
    assert "send again" in text
    assert IdentityTables(db).held_messages() == []


async def test_a_notice_that_could_not_be_sent_is_tried_again_at_the_next_message(
    parts: tuple[Database, FakeIdentities, Recorder, list[float], HeldMessages],
) -> None:
    db, _ids, rec, _now, held = parts
    rec.fail_notice = True
    await held.hold(message(1, "first"))
    assert rec.notices == [] and len(IdentityTables(db).held_messages()) == 1
    rec.fail_notice = False
    await held.hold(message(2, "second"))
    assert len(rec.notices) == 1
    assert "«second»" in rec.notices[0][1]["body"]


async def test_release_that_cannot_fetch_keys_keeps_the_messages_and_the_sync_going(
    parts: tuple[Database, FakeIdentities, Recorder, list[float], HeldMessages],
) -> None:
    db, ids, rec, _now, held = parts
    await held.hold(message(1, "first"))

    async def down(user_id: str, sender_key: str | None) -> DeviceTrust:
        raise HomeserverError("keys/query failed: 502")

    ids.judge = down  # type: ignore[method-assign]
    await held.release(rec.route, lambda m, d: True)
    assert rec.routed == [] and len(IdentityTables(db).held_messages()) == 1
