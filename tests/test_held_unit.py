"""Messages held while an owner's identity is not trusted: the pure decisions, and the
holding and releasing over a real store with fake keys and sends."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.identity.gate import DeviceTrust, UserKeys
from dispatch_matrix.identity.held import (
    MAX_HOLD_S,
    HeldMessages,
    Release,
    fingerprint,
    preview,
    release_action,
    release_due,
)
from dispatch_matrix.identity.tables import IdentityTables
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
    ("first", "devices", "fetched", "pins", "age", "due"),
    [
        # Nothing that could change a verdict: the held messages are not read again.
        (False, False, False, False, 10, False),
        (False, False, False, False, MAX_HOLD_S, False),
        # A run's first look (a restart after `dispatch-matrix trust`).
        (True, False, False, False, 10, True),
        # A device list or cross-signing change; keys fetched afresh.
        (False, True, False, False, 10, True),
        (False, False, True, False, 10, True),
        # A held sender's pin changed (trust or pairing, in another process).
        (False, False, False, True, 10, True),
        # The oldest outgrew its day: it is named now.
        (False, False, False, False, MAX_HOLD_S + 1, True),
    ],
)
def test_release_due(
    first: bool, devices: bool, fetched: bool, pins: bool, age: float, due: bool
) -> None:
    assert (
        release_due(
            first_look=first,
            devices_changed=devices,
            keys_fetched=fetched,
            pins_changed=pins,
            oldest_age_s=age,
        )
        is due
    )


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
    # The store stamps what it holds with the real clock: the fake one starts there.
    now = [time.time()]
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


def queries(db: Database) -> list[str]:
    """Every statement the store runs from now on."""
    seen: list[str] = []
    db._conn.set_trace_callback(seen.append)
    return seen


async def test_with_nothing_held_a_release_reads_nothing(
    parts: tuple[Database, FakeIdentities, Recorder, list[float], HeldMessages],
) -> None:
    db, _ids, rec, _now, held = parts
    seen = queries(db)
    await held.release(rec.route, lambda m, d: True, devices_changed=True, keys_fetched=True)
    assert seen == [] and held.count == 0


async def test_held_messages_are_judged_again_only_when_something_could_free_them(
    parts: tuple[Database, FakeIdentities, Recorder, list[float], HeldMessages],
) -> None:
    db, ids, rec, now, held = parts
    await held.hold(message(1, "delete the backups"))
    assert held.count == 1
    judged: list[str] = []

    def judge(m: Message, d: DeviceTrust | None) -> bool:
        judged.append(m.event_id)
        return d is T.CROSS_SIGNED

    await held.release(rec.route, judge)  # the run's first look: still untrusted
    assert judged == ["$e1"] and rec.routed == []
    # The device's standing would pass now, but nothing that could tell happened.
    ids.standing = T.CROSS_SIGNED
    await held.release(rec.route, judge)
    assert judged == ["$e1"] and rec.routed == [] and held.count == 1
    # A device-list change is one such thing (the pin is still the old one: named).
    await held.release(rec.route, judge, devices_changed=True)
    assert judged == ["$e1", "$e1"] and held.count == 0
    assert rec.routed == [] and len(rec.posts) == 1


async def test_a_pin_changed_elsewhere_or_a_day_passing_frees_held_messages(
    parts: tuple[Database, FakeIdentities, Recorder, list[float], HeldMessages],
) -> None:
    db, ids, rec, now, held = parts
    await held.hold(message(1, "delete the backups"))
    await held.release(rec.route, lambda m, d: d is T.CROSS_SIGNED)
    # `dispatch-matrix trust` in another process: the pin is read while one is held.
    ids.pin, ids.standing = NEW, T.CROSS_SIGNED
    await held.release(rec.route, lambda m, d: d is T.CROSS_SIGNED)
    assert [m.event_id for m in rec.routed] == ["$e1"] and held.count == 0

    await held.hold(message(2, "and empty the logs"))
    ids.standing = T.IDENTITY_CHANGED
    await held.release(rec.route, lambda m, d: False)
    assert held.count == 1
    now[0] += MAX_HOLD_S + 1
    await held.release(rec.route, lambda m, d: False)
    assert held.count == 0 and "«and empty the logs»" in rec.posts[-1][1]


async def test_the_count_of_held_messages_survives_a_restart(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "db.sqlite")
    rec = Recorder()
    first = HeldMessages(IdentityTables(db), FakeIdentities(), rec.send, rec.post)
    await first.hold(message(1, "delete the backups"))
    again = HeldMessages(IdentityTables(db), FakeIdentities(), rec.send, rec.post)
    assert again.count == 1
