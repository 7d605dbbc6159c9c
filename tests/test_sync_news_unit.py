"""What a sync brought, and that each part runs only when it brought something for it: an
idle sync (or one with a single owner message) costs the housekeeping no call and the store
no query; room keys retry the events waiting for them; a change of members is watched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from nio import MegolmEvent, RoomKeyEvent, SyncResponse
from nio.responses import (
    DeviceList,
    DeviceOneTimeKeyCount,
    RoomInfo,
    Rooms,
    Timeline,
)

from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.handlers import Gate, Tasks
from dispatch_matrix.matrix.inbound import SyncNews, news_of
from dispatch_matrix.matrix.incoming import IncomingFiles
from dispatch_matrix.matrix.outbox import Outbox
from dispatch_matrix.matrix.replay import ReplayGuard
from dispatch_matrix.matrix.router import Router
from dispatch_matrix.matrix.unjudged import decode
from dispatch_matrix.store import Database

BOT, OWNER = "@bot:example.org", "@owner:example.org"
ROOM = "!room:example.org"


def member(user: str, membership: str = "join") -> dict[str, Any]:
    return {
        "type": "m.room.member",
        "state_key": user,
        "sender": user,
        "content": {"membership": membership},
        "event_id": f"$member-{user}-{membership}",
        "origin_server_ts": 1,
    }


def text(body: str) -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "sender": OWNER,
        "content": {"msgtype": "m.text", "body": body},
        "event_id": f"$text-{body}",
        "origin_server_ts": 1,
    }


def response(
    timeline: list[dict[str, Any]] | None = None,
    state: list[dict[str, Any]] | None = None,
    *,
    limited: bool = False,
    changed: list[str] | None = None,
    to_device: list[Any] | None = None,
    rooms: bool = True,
) -> SyncResponse:
    """A sync response as nio makes it (events parsed)."""
    from nio.events import Event

    info = RoomInfo(
        Timeline(
            [Event.parse_event(e) for e in timeline or []], limited, "prev" if limited else None
        ),
        [Event.parse_event(e) for e in state or []],
        [],
        [],
    )
    return SyncResponse(
        "next",
        Rooms({}, {ROOM: info} if rooms else {}, {}),
        DeviceOneTimeKeyCount(50, 50),
        DeviceList(changed or [], []),
        to_device or [],
        [],
    )


ROOM_KEY = RoomKeyEvent({}, OWNER, "curve", ROOM, "session", "m.megolm.v1.aes-sha2")


@pytest.mark.parametrize(
    ("sync", "first", "expected"),
    [
        # An idle long poll, with the bot's room in it or not.
        (response(rooms=False), False, SyncNews()),
        (response(), False, SyncNews()),
        # One owner message: nothing for the housekeeping.
        (response([text("hello")]), False, SyncNews()),
        # The first sync of a run carries every room's full state.
        (response(), True, SyncNews(rooms_changed=(ROOM,))),
        # Members in the timeline or the state: the room changed.
        (response([member(OWNER)]), False, SyncNews(rooms_changed=(ROOM,))),
        (response(state=[member("@stranger:example.org", "invite")]), False,
         SyncNews(rooms_changed=(ROOM,))),
        # A gap, a device-list change, room keys.
        (response(limited=True), False, SyncNews(gapped={ROOM: "prev"})),
        (response(changed=[OWNER]), False, SyncNews(devices_changed=(OWNER,))),
        (response(to_device=[ROOM_KEY]), False, SyncNews(room_keys=True)),
    ],
)  # fmt: skip
def test_news_of(sync: SyncResponse, first: bool, expected: SyncNews) -> None:
    assert news_of(sync, first=first) == expected


class FakeRoom:
    def __init__(self, users: list[str]) -> None:
        self.users = dict.fromkeys(users)
        self.invited_users: dict[str, None] = {}
        self.encrypted = True


class FakeNio:
    def __init__(self) -> None:
        self.user_id = BOT
        self.olm = None
        self.rooms = {ROOM: FakeRoom([BOT, OWNER])}
        self.decrypted: list[str] = []
        self.readable = False

    def decrypt_event(self, event: MegolmEvent) -> Any:
        from nio import EncryptionError

        self.decrypted.append(event.event_id)
        if not self.readable:
            raise EncryptionError("no session")
        return MegolmEvent.parse_event(text("late") | {"event_id": event.event_id})

    async def request_room_key(self, _event: MegolmEvent) -> None:
        return None


class FakeClient:
    def __init__(self) -> None:
        self.client = FakeNio()
        self.user_id = BOT
        # What filling a gap meets: None, or the failure (the homeserver went away).
        self.backfill_fails: HomeserverError | None = None

    async def backfill(self, room_id: str, start: str, until: str) -> list[Any]:
        if self.backfill_fails is not None:
            raise self.backfill_fails
        return []


class FakeGate:
    """Counts what the router asks of the gate."""

    def __init__(self) -> None:
        self.holding = 0
        self.calls: list[str] = []

    def devices_changed(self, users: list[str]) -> None:
        self.calls.append("devices_changed")

    def invite_refusal(self, invite: Any) -> str | None:
        return None

    async def admit(self, event: Any, private: bool, *, explain: bool) -> bool:
        self.calls.append("admit")
        return True

    async def release_held(self, route: Any, private: Any, *, devices_changed: bool) -> None:
        self.calls.append(f"release_held(devices_changed={devices_changed})")


class FakeTasks:
    def __init__(self) -> None:
        self.messages: list[str] = []

    async def message(self, event_id: str, *args: Any, **kwargs: Any) -> None:
        self.messages.append(event_id)

    def goes_ahead(self, room_id: str, body: str, reply_to: str | None) -> bool:
        # Only what the real intake would pass ahead of a waiting file: a stop command.
        return body == "!cancel"


class FakeOutbox:
    def __init__(self) -> None:
        self.posts: list[tuple[str, str]] = []

    async def post(self, room_id: str, text: str, **kwargs: Any) -> str:
        self.posts.append((room_id, text))
        return "$posted"


def router_posts(router: Router) -> list[tuple[str, str]]:
    return cast(FakeOutbox, router._outbox).posts


def build(
    tmp_path: Path,
    grace_s: float = 60.0,
    client: FakeClient | None = None,
    *,
    inbox: Path | None = None,
    max_file_bytes: int = 1,
    today: Callable[[], str] | None = None,
    intake: Callable[[Database], Tasks] | None = None,
) -> tuple[Router, Database, FakeGate, FakeTasks, list[str], FakeNio]:
    """A router over a real ledger and stand-ins; its files go to `inbox` (by default
    `tmp_path`, where a 1-byte limit refuses every file), dated by `today` if given.
    `intake` makes the real intake instead of the stand-in (which then sees nothing)."""
    db = Database.open(tmp_path / "d.db")
    gate, tasks, told = FakeGate(), FakeTasks(), []
    taken = cast(Tasks, tasks) if intake is None else intake(db)
    client = client or FakeClient()
    outbox = FakeOutbox()
    dated = {} if today is None else {"today": today}
    files = IncomingFiles(
        cast(MatrixClient, client),
        db,
        inbox or tmp_path,
        max_file_bytes,
        outbox=cast(Outbox, outbox),
        intake=taken,
        **dated,
    )
    router = Router(
        cast(MatrixClient, client),
        db,
        taken,
        cast(Gate, gate),
        cast(Outbox, outbox),
        owners=frozenset({OWNER}),
        shared_rooms=frozenset(),
        undecryptable_grace_s=grace_s,
        not_before_ms=0,
        files=files,
        replays=ReplayGuard(db),
        rooms_changed=(lambda: told.append("rooms_changed"),),
    )
    return router, db, gate, tasks, told, client.client


def queries(db: Database) -> list[str]:
    """Every statement the store runs from now on."""
    seen: list[str] = []
    db._conn.set_trace_callback(seen.append)
    return seen


async def test_an_idle_sync_calls_no_housekeeping_and_reads_nothing(tmp_path: Path) -> None:
    router, db, gate, _tasks, told, _nio = build(tmp_path)
    await router.handle(response(), "since")  # the run's first: rooms are looked at once
    assert told == ["rooms_changed"]
    seen = queries(db)
    for _ in range(3):
        assert await router.handle(response(), "since") is False
    assert seen == [], "an idle sync costs the store nothing"
    assert gate.calls == [] and told == ["rooms_changed"]
    db.close()


async def test_an_owner_message_runs_only_what_a_message_needs(tmp_path: Path) -> None:
    router, db, gate, tasks, told, _nio = build(tmp_path)
    await router.handle(response(), "since")
    seen = queries(db)
    assert await router.handle(response([text("hello")]), "since") is True
    assert tasks.messages == ["$text-hello"] and gate.calls == ["admit"]
    assert told == ["rooms_changed"], "no room changed"
    # Nothing was decrypted (plaintext here), so no claim to commit: no statement at all.
    assert seen == []
    db.close()


async def test_a_change_of_members_is_watched_and_told(tmp_path: Path) -> None:
    router, db, _gate, _tasks, told, _nio = build(tmp_path)
    await router.handle(response(), "since")
    assert db.get_meta(f"room_private:{ROOM}") == "1"
    await router.handle(response([member(OWNER)]), "since")
    assert told == ["rooms_changed", "rooms_changed"]
    db.close()


async def test_held_messages_are_offered_for_release_only_while_some_are_held(
    tmp_path: Path,
) -> None:
    router, db, gate, _tasks, _told, _nio = build(tmp_path)
    await router.handle(response(changed=[OWNER]), "since")
    assert gate.calls == ["devices_changed"]
    gate.holding = 1
    await router.handle(response(), "since")
    await router.handle(response(changed=[OWNER]), "since")
    assert gate.calls[1:] == [
        "release_held(devices_changed=False)",
        "devices_changed",
        "release_held(devices_changed=True)",
    ]
    db.close()


def waiting_event(event_id: str) -> dict[str, Any]:
    return {
        "type": "m.room.encrypted",
        "sender": OWNER,
        "event_id": event_id,
        "origin_server_ts": 1,
        "content": {
            "algorithm": "m.megolm.v1.aes-sha2",
            "ciphertext": "AwgA",
            "device_id": "DEV",
            "sender_key": "curve",
            "session_id": "session",
        },
    }


async def test_a_sync_without_room_keys_does_not_retry_late_keys(tmp_path: Path) -> None:
    router, db, _gate, tasks, _told, nio = build(tmp_path)
    await router.handle(response([waiting_event("$late")]), "since")
    assert [row[2]["event_id"] for row in db.waiting_undecrypted()] == ["$late"]
    nio.decrypted.clear()
    seen = queries(db)
    await router.handle(response(), "since")
    assert nio.decrypted == [] and seen == [], "no keys, within the grace: no retry"
    # Keys arrive: the waiting event is read and routed.
    nio.readable = True
    await router.handle(response(to_device=[ROOM_KEY]), "since")
    assert nio.decrypted == ["$late"] and tasks.messages == ["$late"]
    assert db.waiting_undecrypted() == []
    db.close()


async def test_the_end_of_the_grace_period_is_a_reason_to_look_again(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    db.hold_undecrypted("$old", ROOM, OWNER, waiting_event("$old"))
    db.close()
    # A restart finds it waiting (loaded at start); with no grace left, the next sync
    # looks, without any key, and tells the owner it could not be read.
    router, db, _gate, _tasks, _told, nio = build(tmp_path, grace_s=0.0)
    await router.handle(response(), "since")
    assert nio.decrypted == ["$old"] and db.waiting_undecrypted() == []
    assert len(router_posts(router)) == 1
    nio.decrypted.clear()
    await router.handle(response(to_device=[ROOM_KEY]), "since")
    assert nio.decrypted == [], "nothing waits any more: keys change nothing"
    db.close()


async def test_room_keys_of_a_sync_that_failed_still_retry_at_the_next(tmp_path: Path) -> None:
    client = FakeClient()
    router, db, _gate, tasks, _told, nio = build(tmp_path, client=client)
    await router.handle(response(), "since")
    await router.handle(response([waiting_event("$late")]), "since")
    # The key arrives; nio stores it while it receives the sync, but the sync fails before
    # the retry (a gap the homeserver cannot fill now), so it is read again.
    nio.readable = True
    client.backfill_fails = HomeserverError("the homeserver went away")
    with pytest.raises(HomeserverError):
        await router.handle(response(to_device=[ROOM_KEY], limited=True), "since")
    assert tasks.messages == []
    # Read again, the sync brings no room key: nio decrypts an Olm message once only, so the
    # key's to-device event stays encrypted. The stored key is still a reason to look.
    client.backfill_fails = None
    await router.handle(response(limited=True), "since")
    assert tasks.messages == ["$late"], "read at the sync after, not when the grace ends"
    assert db.waiting_undecrypted() == []
    nio.decrypted.clear()
    await router.handle(response(), "since")
    assert nio.decrypted == [], "one retry per arrival of keys"
    db.close()


async def test_a_restart_looks_at_waiting_events_at_its_first_sync(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    db.hold_undecrypted("$waits", ROOM, OWNER, waiting_event("$waits"))
    db.close()
    # The last run died after nio stored the key and before it retried: the to-device
    # event read again at this start cannot be decrypted twice, so brings no room key.
    router, db, _gate, tasks, _told, nio = build(tmp_path, grace_s=60.0)
    nio.readable = True
    await router.handle(response(), "since")
    assert tasks.messages == ["$waits"], "read at the first sync, not when the grace ends"
    db.close()


class FlakyGate(FakeGate):
    """A gate whose key fetch fails while `down` (the homeserver went away)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def admit(self, event: Any, private: bool, *, explain: bool) -> bool:
        if self.down:
            raise HomeserverError("keys could not be fetched")
        return await super().admit(event, private, explain=explain)


async def test_a_late_event_the_gate_cannot_judge_now_waits_for_the_next_retry(
    tmp_path: Path,
) -> None:
    router, db, gate, tasks, _told, nio = build(tmp_path)
    flaky = FlakyGate()
    router._gate = cast(Gate, flaky)
    await router.handle(response(), "since")
    await router.handle(response([waiting_event("$late")]), "since")
    # Its key comes while the owner's keys cannot be fetched (a new session of theirs
    # changed their device list): it is not lost, and the sync goes on.
    nio.readable, flaky.down = True, True
    assert await router.handle(response(to_device=[ROOM_KEY]), "since") is False
    assert tasks.messages == []
    # Read, it waits no more for its key but for the gate, as any message it cannot judge.
    assert db.waiting_undecrypted() == []
    assert [decode(raw).event_id for _event, _room, raw in db.unjudged()] == ["$late"], "not lost"
    # While the homeserver still fails it, every sync looks again and goes on.
    nio.decrypted.clear()
    await router.handle(response(), "since")
    assert tasks.messages == [] and len(db.unjudged()) == 1
    assert nio.decrypted == [], "decrypted once: the gate is what it waits for"
    # At the first sync once the keys can be fetched, well within its grace period.
    flaky.down = False
    await router.handle(response(), "since")
    assert tasks.messages == ["$late"] and db.unjudged() == []
    nio.decrypted.clear()
    await router.handle(response(), "since")
    assert nio.decrypted == [], "read: no more looks"
    db.close()
