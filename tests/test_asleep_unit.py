"""The asleep notice's decisions without a homeserver: what a refused restart means, how
the posted notice is found again, how delays read, and a homeserver without delayed events
(logged once, the bot goes on, nothing raised)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from dispatch_matrix.core.ids import RoomID
from dispatch_matrix.matrix import texts
from dispatch_matrix.matrix.asleep import (
    SUPPORT_META,
    AsleepNotice,
    Scheduled,
    doctor_line,
    find_posted,
    fired,
    minutes,
)
from dispatch_matrix.matrix.failures import RequestRefused
from dispatch_matrix.matrix.sender import Budget, Sender
from dispatch_matrix.store import Database


@pytest.mark.parametrize(
    "status, errcode, gone",
    [
        (200, "", False),
        (404, "M_NOT_FOUND", True),
        (404, "", True),
        (400, "M_NOT_FOUND", True),
        (429, "M_LIMIT_EXCEEDED", False),
        (502, "", False),
    ],
)
def test_a_refused_restart_means_it_went_out(status: int, errcode: str, gone: bool) -> None:
    assert fired(status, errcode) is gone


BOT = "@bot:hs"


def event(sender: str, kind: str, ciphertext: str | None, event_id: str) -> dict[str, Any]:
    content = {} if ciphertext is None else {"ciphertext": ciphertext}
    return {"sender": sender, "type": kind, "content": content, "event_id": event_id}


@pytest.mark.parametrize(
    "events, mark, found",
    [
        ([event(BOT, "m.room.encrypted", "AAAAxyz", "$n")], "xyz", "$n"),
        ([event(BOT, "m.room.encrypted", "AAAAxyz", "$n")], "abc", None),
        # Someone else's event with the same tail: not ours.
        ([event("@owner:hs", "m.room.encrypted", "AAAAxyz", "$o")], "xyz", None),
        ([event(BOT, "m.room.message", "AAAAxyz", "$p")], "xyz", None),
        ([event(BOT, "m.room.encrypted", None, "$r")], "xyz", None),
        # No mark (a room that was not encrypted): nothing is taken for it.
        ([event(BOT, "m.room.encrypted", "AAAA", "$n")], "", None),
        (
            [event(BOT, "m.room.encrypted", "1", "$a"), event(BOT, "m.room.encrypted", "2", "$b")],
            "2",
            "$b",
        ),
    ],
)
def test_the_posted_notice_is_found_by_its_ciphertext(
    events: list[dict[str, Any]], mark: str, found: str | None
) -> None:
    assert find_posted(events, BOT, mark) == found


@pytest.mark.parametrize(
    "seconds, says",
    [
        (10, "10 s"),
        (59.9, "59 s"),
        (60, "1 min"),
        (300, "5 min"),
        (3600, "1 h"),
        (5400, "1 h 30 min"),
    ],
)
def test_minutes(seconds: float, says: str) -> None:
    assert minutes(seconds) == says


@pytest.mark.parametrize(
    "queued, says",
    [(0, "nothing is queued"), (1, "1 task is queued"), (3, "3 tasks are queued")],
)
def test_the_back_notice(queued: int, says: str) -> None:
    assert (
        texts.back("2 h 10 min", queued) == f"☀️ The computer is back after 2 h 10 min away; {says}."
    )


def test_a_record_reads_back_and_a_broken_one_is_none() -> None:
    record = Scheduled("syd_abc", "tail", 1_700_000_000_000)
    assert Scheduled.from_json(record.to_json()) == record
    assert Scheduled.from_json("") is None
    assert Scheduled.from_json('{"delay_id": "x"}') is None
    assert Scheduled.from_json("not json") is None


class NoDelayedEvents:
    """A homeserver that does not know delayed events."""

    user_id = BOT

    def __init__(self) -> None:
        self.tries = 0

    async def send_delayed(self, *_: Any) -> tuple[str, dict[str, Any]]:
        self.tries += 1
        raise RequestRefused(
            "delayed send to !r failed: M_UNRECOGNIZED Unrecognized", "M_UNRECOGNIZED"
        )

    async def update_delayed(self, *_: Any) -> tuple[int, str]:
        raise AssertionError("nothing was scheduled")


class SenderOnly:
    """The outbox as the notice uses it: its sender."""

    def __init__(self) -> None:
        self.sender = Sender(Budget(0, 10))


async def test_a_homeserver_without_delayed_events_is_logged_once_and_the_bot_goes_on(
    tmp_path: Path,
) -> None:
    db = Database.open(tmp_path / "d.db")
    client = NoDelayedEvents()
    outbox = SenderOnly()
    notice = AsleepNotice(
        client,  # type: ignore[arg-type]
        db,
        outbox,  # type: ignore[arg-type]
        lambda: [RoomID("!a"), RoomID("!b")],
        delay_s=3,
    )
    ready = asyncio.Event()
    ready.set()
    sending = asyncio.create_task(outbox.sender.run())
    with capture_logs() as logged:
        # It ends by itself (no error), having tried once.
        await asyncio.wait_for(notice.run(ready), 10)
        await notice.stop()
    sending.cancel()
    assert client.tries == 1
    assert [e["event"] for e in logged if e["event"].startswith("asleep.")] == [
        "asleep.unsupported"
    ]
    assert (db.get_meta(SUPPORT_META) or "").startswith("no: ")
    assert notice.unsupported is not None


@pytest.mark.parametrize(
    "enabled, support, ok, says",
    [
        (True, "yes", True, "schedules delayed events"),
        (True, "no: M_UNRECOGNIZED Unrecognized", False, "refused delayed events (M_UNRECOGNIZED"),
        (True, None, True, "not tried yet"),
        (False, "no: x", True, "off"),
    ],
)
def test_doctor_says_whether_the_homeserver_takes_delayed_events(
    enabled: bool, support: str | None, ok: bool, says: str
) -> None:
    passed, what, fix = doctor_line(enabled, support)
    assert passed is ok and says in what
    assert ("max_event_delay_duration" in fix) is not ok


class Homeserver:
    """Delayed events as Synapse keeps them: scheduled, pushed back, cancelled, or `fire`d
    (sent by the server; its restart and cancel then answer 404)."""

    user_id = BOT

    def __init__(self) -> None:
        self.scheduled: dict[str, str] = {}  # delay id -> ciphertext
        self.posted: list[dict[str, Any]] = []
        self.sent: list[tuple[str, str]] = []
        self.actions: list[tuple[str, str]] = []

    async def send_delayed(
        self, room_id: str, event_type: str, content: dict[str, Any], txn: str, delay_ms: int
    ) -> tuple[str, dict[str, Any]]:
        delay_id = f"syd_{len(self.scheduled) + len(self.posted)}"
        ciphertext = f"CIPHER-{delay_id}-{content['body'][:10]}"
        self.scheduled[delay_id] = ciphertext
        return delay_id, {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": ciphertext}

    def fire(self, delay_id: str) -> None:
        self.posted.append(
            event(BOT, "m.room.encrypted", self.scheduled.pop(delay_id), f"$posted_{delay_id}")
        )

    async def update_delayed(self, delay_id: str, action: str) -> tuple[int, str]:
        self.actions.append((delay_id, action))
        if delay_id not in self.scheduled:
            return 404, "M_NOT_FOUND"
        if action == "cancel":
            del self.scheduled[delay_id]
        return 200, ""

    async def api(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        return 200, {"chunk": list(reversed(self.posted))}

    async def send(self, room_id: str, event_type: str, content: dict[str, Any], txn: str) -> str:
        self.sent.append((room_id, content["body"]))
        return "$stopped"


class Outbox:
    def __init__(self) -> None:
        self.sender = Sender(Budget(0, 10))
        self.posts: list[str] = []
        self.redacted: list[str] = []

    async def post(self, room_id: RoomID, markdown: str, **_: Any) -> str:
        self.posts.append(markdown)
        return "$back"

    async def redact(self, room_id: RoomID, event_id: str, *, key: str) -> bool:
        self.redacted.append(event_id)
        return True


async def test_a_paused_process_that_wakes_says_it_is_back_once_and_redacts_the_notice(
    tmp_path: Path,
) -> None:
    db = Database.open(tmp_path / "d.db")
    server, outbox = Homeserver(), Outbox()
    clock = [1_000_000]
    notice = AsleepNotice(
        server,  # type: ignore[arg-type]
        db,
        outbox,  # type: ignore[arg-type]
        lambda: [RoomID("!r")],
        delay_s=0.03,
        now_ms=lambda: clock[0],
    )
    ready = asyncio.Event()
    ready.set()
    sending = asyncio.create_task(outbox.sender.run())
    running = asyncio.create_task(notice.run(ready))
    await until(lambda: bool(server.scheduled))
    first = next(iter(server.scheduled))
    await until(lambda: (first, "restart") in server.actions)
    assert outbox.posts == [], "alive: nothing said"
    # The computer sleeps 2 h: the server posts the notice; at wake the restart is refused.
    clock[0] += 2 * 3600 * 1000
    server.fire(first)
    await until(lambda: bool(outbox.redacted) and len(server.scheduled) == 1)
    assert outbox.posts == ["☀️ The computer is back after 2 h away; nothing is queued."]
    assert outbox.redacted == [f"$posted_{first}"]
    assert first not in server.scheduled, "a new one is scheduled in its place"
    # A clean stop: the new one cancelled, "stopped" said, nothing left to fire.
    running.cancel()
    await notice.stop()
    sending.cancel()
    assert server.scheduled == {}
    assert server.sent == [("!r", texts.STOPPED)]
    assert len(outbox.posts) == 1


async def until(check: Any) -> None:
    async with asyncio.timeout(5):
        while not check():
            await asyncio.sleep(0.001)


async def test_a_room_that_is_no_longer_private_has_its_notice_cancelled(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    server, outbox = Homeserver(), Outbox()
    rooms = [RoomID("!a"), RoomID("!b")]
    notice = AsleepNotice(
        server,  # type: ignore[arg-type]
        db,
        outbox,  # type: ignore[arg-type]
        lambda: list(rooms),
        delay_s=0.03,
    )
    ready = asyncio.Event()
    ready.set()
    sending = asyncio.create_task(outbox.sender.run())
    running = asyncio.create_task(notice.run(ready))
    await until(lambda: len(server.scheduled) == 2)
    first_b = list(server.scheduled)[1]
    rooms.remove(RoomID("!b"))
    await until(lambda: (first_b, "cancel") in server.actions)
    running.cancel()
    sending.cancel()
    assert len(server.scheduled) == 1 and first_b not in server.scheduled
    assert outbox.posts == [] and server.sent == []


class SlowHomeserver(Homeserver):
    """Holds each scheduling request until `go` is set: the stop comes while one is in
    flight."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()
        self.go = asyncio.Event()

    async def send_delayed(
        self, room_id: str, event_type: str, content: dict[str, Any], txn: str, delay_ms: int
    ) -> tuple[str, dict[str, Any]]:
        self.asked.set()
        await self.go.wait()
        return await super().send_delayed(room_id, event_type, content, txn, delay_ms)


async def test_a_notice_scheduled_as_the_daemon_stops_is_cancelled_not_left_to_fire(
    tmp_path: Path,
) -> None:
    """The run is cancelled while the sender's request to schedule is on its way; the
    homeserver accepts it after. The stop must still find and cancel it: a notice left
    behind would tell the owner the computer is asleep while it is only stopped."""
    db = Database.open(tmp_path / "d.db")
    server, outbox = SlowHomeserver(), Outbox()
    notice = AsleepNotice(
        server,  # type: ignore[arg-type]
        db,
        outbox,  # type: ignore[arg-type]
        lambda: [RoomID("!r")],
        delay_s=60,
    )
    ready = asyncio.Event()
    ready.set()
    sending = asyncio.create_task(outbox.sender.run())
    running = asyncio.create_task(notice.run(ready))
    await asyncio.wait_for(server.asked.wait(), 5)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    stopping = asyncio.create_task(notice.stop())
    await asyncio.sleep(0)
    server.go.set()
    await asyncio.wait_for(stopping, 5)
    sending.cancel()
    assert server.scheduled == {}, "the notice accepted during the stop is cancelled"
    assert server.sent == [("!r", texts.STOPPED)]
