"""An owner's file the homeserver's media repository fails for a while (a proxy's 502, no
answer, a 429) is not refused: it waits in its room's order, is fetched again on a schedule,
and becomes one task once the repository mends; only what no retry can mend (404, too
large, a bad key) is refused. The classification and the schedule are tables; the rest runs
the real router, ledger and inbox against a stand-in media repository, with a clock the
test moves."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from nio import DownloadError, RoomMessage
from test_incoming_unit import DATA, DAY, content, encrypted
from test_sync_news_unit import (
    OWNER,
    ROOM,
    FakeNio,
    FakeOutbox,
    FakeTasks,
    build,
    response,
    text,
)
from test_unjudged_unit import FailingGate, with_gate

from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.matrix import attachments, unjudged
from dispatch_matrix.matrix.attachments import AttachmentError, receive_file
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.failures import Unreachable
from dispatch_matrix.matrix.fetching import (
    GIVE_UP_AFTER_S,
    FetchFailed,
    Next,
    Outcome,
    after_failure,
    failure_outcome,
    outcome,
)
from dispatch_matrix.matrix.handlers import Tasks
from dispatch_matrix.matrix.incoming import IncomingFiles
from dispatch_matrix.matrix.outbox import Outbox
from dispatch_matrix.matrix.unjudged import FileWait, decode_row
from dispatch_matrix.store import Database

# -- the classification ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "errcode", "expected"),
    [
        # No answer at all: no connection, a connection dropped mid-file, a timeout.
        (None, None, Outcome.RETRY),
        # A reverse proxy whose upstream failed, or the homeserver itself failing.
        (502, None, Outcome.RETRY),
        (503, None, Outcome.RETRY),
        (504, None, Outcome.RETRY),
        (500, "M_UNKNOWN", Outcome.RETRY),
        # Rate limited, with or without the code; a request timeout.
        (429, "M_LIMIT_EXCEEDED", Outcome.RETRY),
        (429, None, Outcome.RETRY),
        (408, None, Outcome.RETRY),
        # An asynchronous upload not finished yet (Synapse answers it with 504).
        (504, "M_NOT_YET_UPLOADED", Outcome.RETRY),
        # The bot's login is in trouble, not the file: the sync loop deals with that.
        (401, "M_UNKNOWN_TOKEN", Outcome.RETRY),
        # The media is not there, not for us, or too large: the same answer would come.
        (404, "M_NOT_FOUND", Outcome.REFUSE),
        (404, None, Outcome.REFUSE),
        (403, "M_FORBIDDEN", Outcome.REFUSE),
        (413, "M_TOO_LARGE", Outcome.REFUSE),
        (400, "M_BAD_JSON", Outcome.REFUSE),
        (400, None, Outcome.REFUSE),
        # The code decides before the status: a 502 that says not found is not found.
        (502, "M_NOT_FOUND", Outcome.REFUSE),
    ],
)
def test_outcome(status: int | None, errcode: str | None, expected: Outcome) -> None:
    assert outcome(status, errcode) is expected


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (FetchFailed("502", status=502), Outcome.RETRY),
        (FetchFailed("no answer", status=None), Outcome.RETRY),
        (FetchFailed("gone", status=404, errcode="M_NOT_FOUND"), Outcome.REFUSE),
        # A failure the fetch did not sort: a refusal that was not one would lose the file.
        (Unreachable("cannot reach"), Outcome.RETRY),
        (HomeserverError("something else"), Outcome.RETRY),
    ],
)
def test_failure_outcome(err: HomeserverError, expected: Outcome) -> None:
    assert failure_outcome(err) is expected


DAY_S = GIVE_UP_AFTER_S


@pytest.mark.parametrize(
    ("tries", "failing_for_s", "told", "retry_after_s", "expected", "wait_s"),
    [
        # Doubling from 5 s, capped at 30 s.
        (1, 0.0, False, None, Next.WAIT, 5.0),
        (2, 5.0, False, None, Next.WAIT, 10.0),
        (3, 15.0, False, None, Next.WAIT, 20.0),
        (4, 35.0, False, None, Next.WAIT, 30.0),
        (40, 50.0, False, None, Next.WAIT, 30.0),
        # A 429's own wait, when longer, is honoured.
        (1, 0.0, False, 12.0, Next.WAIT, 12.0),
        (4, 35.0, False, 1.0, Next.WAIT, 30.0),
        # A minute of failures: the owner is told, once.
        (5, 65.0, False, None, Next.WAIT_AND_TELL, 30.0),
        (6, 95.0, True, None, Next.WAIT, 30.0),
        # An hour down, a night down: still waiting.
        (120, 3600.0, True, None, Next.WAIT, 30.0),
        (900, 8 * 3600.0, True, None, Next.WAIT, 30.0),
        # A day of failures: given up.
        (3000, DAY_S, True, None, Next.GIVE_UP, 0.0),
        # A laptop asleep over a weekend: the first tries after the wake decide, not the
        # clock (a restart counts the tries of its own run).
        (1, 3 * DAY_S, True, None, Next.WAIT, 5.0),
        (2, 3 * DAY_S, True, None, Next.WAIT, 10.0),
        (3, 3 * DAY_S, True, None, Next.GIVE_UP, 0.0),
        # Never told before it is given up on? Then the give-up notice is the one told.
        (3, 3 * DAY_S, False, None, Next.GIVE_UP, 0.0),
    ],
)
def test_after_failure(
    tries: int,
    failing_for_s: float,
    told: bool,
    retry_after_s: float | None,
    expected: Next,
    wait_s: float,
) -> None:
    decision = after_failure(tries, failing_for_s, told, retry_after_s)
    assert (decision.next, decision.wait_s) == (expected, wait_s)


# -- the download: what the media repository answers, sorted ---------------------------------


class Transport:
    def __init__(self, status: int) -> None:
        self.status = status


class Answer:
    """What nio hands back for a download: a body, with the HTTP answer it came in."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.body = body
        self.transport_response = Transport(status)


def not_found() -> DownloadError:
    err = DownloadError("Not found", "M_NOT_FOUND")
    err.transport_response = Transport(404)  # type: ignore[assignment]
    return err


def limited() -> DownloadError:
    err = DownloadError("Too many requests", "M_LIMIT_EXCEEDED", 20_000)
    err.transport_response = Transport(429)  # type: ignore[assignment]
    return err


BAD_GATEWAY = Answer(b"Bad Gateway", 502)


class MediaNio(FakeNio):
    """The sync stand-in's nio with a media repository: each download takes the next
    scripted answer (an `Answer`, a `DownloadError`, an exception to raise, or "hang"),
    then the file itself once the script is used up."""

    def __init__(self, script: list[Any] | None = None) -> None:
        super().__init__()
        self.script = list(script or [])
        self.always: Any = None
        self.downloads = 0

    async def download(self, mxc: str) -> Any:
        self.downloads += 1
        step = self.script.pop(0) if self.script else self.always
        if step == "hang":
            await asyncio.Event().wait()
        if isinstance(step, BaseException):
            raise step
        return step if step is not None else Answer(encrypted()[0])


class MediaClient:
    def __init__(self, nio: MediaNio) -> None:
        self.client = nio
        self.user_id = "@bot:example.org"


async def fetch(nio: MediaNio, tmp_path: Path, file: dict[str, Any] | None = None) -> Path:
    target = tmp_path / "inbox" / "figures.csv"
    client = cast(MatrixClient, MediaClient(nio))
    received = await receive_file(client, file or content(), target, 1 << 20, tmp_path)
    return received.path


@pytest.mark.parametrize(
    ("answer", "status", "errcode"),
    [
        # nio hands a proxy's error page (not JSON) over as if it were the file.
        (BAD_GATEWAY, 502, None),
        (Answer(b"<html>Service Unavailable</html>", 503), 503, None),
        (not_found(), 404, "M_NOT_FOUND"),
        (limited(), 429, "M_LIMIT_EXCEEDED"),
        (aiohttp.ClientConnectionError("Connection reset by peer"), None, None),
        (aiohttp.ClientPayloadError("Response payload is not completed"), None, None),
        (ConnectionResetError(104, "Connection reset by peer"), None, None),
    ],
)
async def test_a_failed_download_is_sorted_by_what_the_homeserver_answered(
    tmp_path: Path, answer: Any, status: int | None, errcode: str | None
) -> None:
    with pytest.raises(FetchFailed) as failed:
        await fetch(MediaNio([answer]), tmp_path)
    assert (failed.value.status, failed.value.errcode) == (status, errcode)
    assert not (tmp_path / "inbox").exists() or list((tmp_path / "inbox").iterdir()) == []


async def test_bytes_that_are_not_the_file_are_refused_not_lost(tmp_path: Path) -> None:
    # A 200 whose bytes do not match the event's hash (nio raises its EncryptionError, which
    # escaped as a crash of the event's handling): a bad file, refused with a notice.
    with pytest.raises(AttachmentError, match="could not be decrypted.*SHA-256"):
        await fetch(MediaNio([Answer(b"not the file")]), tmp_path)


async def test_a_429_carries_the_wait_it_asked_for(tmp_path: Path) -> None:
    with pytest.raises(FetchFailed) as failed:
        await fetch(MediaNio([limited()]), tmp_path)
    assert failed.value.retry_after_s == 20.0


async def test_a_plain_file_answered_with_an_error_page_is_not_saved_as_the_file(
    tmp_path: Path,
) -> None:
    plain = {k: v for k, v in content().items() if k != "file"} | {"url": "mxc://x/plain"}
    with pytest.raises(FetchFailed, match="502"):
        await fetch(MediaNio([BAD_GATEWAY]), tmp_path, plain)
    assert not (tmp_path / "inbox" / "figures.csv").exists()
    # Once the repository mends, the file itself is saved.
    path = await fetch(MediaNio([Answer(DATA)]), tmp_path, plain)
    assert path.read_bytes() == DATA


async def test_a_download_that_hangs_is_given_up_as_no_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attachments, "DOWNLOAD_TIMEOUT_S", 0.05)
    with pytest.raises(FetchFailed, match="timed out") as failed:
        await asyncio.wait_for(fetch(MediaNio(["hang"]), tmp_path), 30)
    assert failed.value.status is None


# -- the router: the file waits in its room's order --------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def file_event(event_id: str = "$file", name: str = "figures.csv") -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "sender": OWNER,
        "content": content(name),
        "event_id": event_id,
        "origin_server_ts": 1,
    }


class Bench:
    """The router with its real ledger and inbox, a media repository that fails as told,
    and a clock the test moves."""

    def __init__(
        self, tmp_path: Path, nio: MediaNio, intake: Callable[[Database], Tasks] | None = None
    ) -> None:
        self.tmp_path, self.nio = tmp_path, nio
        self.clock = Clock()
        self.inbox = tmp_path / "work" / "inbox"
        self.router, self.db, _gate, self.tasks, _told, _nio = build(
            tmp_path,
            client=cast(Any, MediaClient(nio)),
            inbox=self.inbox,
            max_file_bytes=1 << 20,
            today=lambda: DAY,
            intake=intake,
        )
        self.router._unjudged._clock = self.clock

    async def sync(self, *events: dict[str, Any], after_s: float = 0.0) -> None:
        self.clock.now += after_s
        sync = response([event for event in events if event["event_id"] != "$file"])
        # An encrypted file's content is valid only in a decrypted event.
        timeline = sync.rooms.join[ROOM].timeline.events
        for at, event in enumerate(events):
            if event["event_id"] == "$file":
                timeline.insert(at, RoomMessage.parse_decrypted_event(event))
        await self.router.handle(sync, "since")

    def posts(self) -> list[str]:
        return [body for _room, body in cast(FakeOutbox, self.router._outbox).posts]

    def waiting(self) -> list[tuple[str, str]]:
        """Each waiting row: its event id and what it waits for."""
        rows = []
        for event_id, _room, raw in self.db.unjudged():
            kind = "file" if isinstance(decode_row(raw), FileWait) else "gate"
            rows.append((event_id, kind))
        return rows

    def saved(self) -> list[str]:
        return sorted(str(p.relative_to(self.inbox)) for p in self.inbox.rglob("*") if p.is_file())


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    made = Bench(tmp_path, MediaNio())
    yield made
    made.db.close()


async def test_a_file_the_media_repository_fails_waits_then_runs_once_before_what_came_after(
    bench: Bench,
) -> None:
    await bench.sync()
    bench.nio.script = [BAD_GATEWAY, BAD_GATEWAY]
    await bench.sync(file_event(), text("after"))
    assert bench.tasks.messages == [], "neither refused nor overtaken"
    assert bench.waiting() == [("$file", "file"), ("$text-after", "gate")]
    assert bench.router.waiting(), "the syncs are short while it waits"
    # Not due yet (5 s after the first failure): no download.
    await bench.sync(after_s=1)
    assert bench.nio.downloads == 1 and bench.tasks.messages == []
    await bench.sync(after_s=5)
    assert bench.nio.downloads == 2 and bench.tasks.messages == []
    # The second failure waits 10 s; the repository mended meanwhile.
    await bench.sync(after_s=10)
    assert bench.tasks.messages == ["$file", "$text-after"]
    assert bench.waiting() == [] and not bench.router.waiting()
    assert bench.saved() == [f"{DAY}/figures.csv"] and bench.nio.downloads == 3
    assert (bench.inbox / DAY / "figures.csv").read_bytes() == DATA
    assert bench.posts() == [], "a blip of seconds is not worth a message"
    # Read again (a crash before the sync token's save): the file saved whole is kept, not
    # fetched again (the intake's event-id records then make it one task).
    await bench.sync(file_event(), after_s=60)
    assert bench.nio.downloads == 3 and bench.saved() == [f"{DAY}/figures.csv"]


async def test_a_file_the_homeserver_does_not_have_is_refused_at_once(bench: Bench) -> None:
    await bench.sync()
    bench.nio.script = [not_found()]
    await bench.sync(file_event(), text("after"))
    assert bench.tasks.messages == ["$text-after"] and bench.waiting() == []
    [refused] = bench.posts()
    assert refused.startswith("📎 I could not take that file") and "M_NOT_FOUND" in refused


async def test_the_owner_is_told_once_and_a_file_failed_for_a_day_is_given_up_by_name(
    bench: Bench,
) -> None:
    await bench.sync()
    bench.nio.always = BAD_GATEWAY
    await bench.sync(file_event(), text("after"))
    for _ in range(3):
        await bench.sync(after_s=30)
    [told] = bench.posts()
    assert "cannot fetch figures.csv" in told and "502" in told and "Delete it" in told
    # An hour down: still waiting, not told again.
    for _ in range(120):
        await bench.sync(after_s=30)
    assert bench.posts() == [told] and bench.tasks.messages == []
    assert bench.waiting() == [("$file", "file"), ("$text-after", "gate")]
    await bench.sync(after_s=GIVE_UP_AFTER_S)
    assert bench.posts()[1:] == [
        "📎 I gave up fetching figures.csv: the homeserver failed it for over 24 hours "
        "(the homeserver answered HTTP 502). Send it again."
    ]
    assert bench.tasks.messages == ["$text-after"], "what came after goes ahead"
    assert bench.waiting() == []


async def test_a_waiting_file_survives_a_restart_and_is_tried_at_the_first_sync(
    tmp_path: Path,
) -> None:
    first = Bench(tmp_path, MediaNio())
    await first.sync()
    first.nio.always = BAD_GATEWAY
    await first.sync(file_event(), text("after"))
    await first.sync(after_s=65)
    assert len(first.posts()) == 1, "told"
    first.db.close()
    # A new run, the repository mended: its first sync takes the file, then the text.
    again = Bench(tmp_path, MediaNio())
    assert again.router.waiting()
    await again.sync()
    assert again.tasks.messages == ["$file", "$text-after"] and again.waiting() == []
    assert again.posts() == [] and again.nio.downloads == 1
    again.db.close()


async def test_a_file_judged_late_whose_download_fails_keeps_its_place(bench: Bench) -> None:
    gate = with_gate(bench.router, FailingGate())
    await bench.sync()
    gate.down = True
    await bench.sync(file_event(), text("after"))
    assert bench.waiting() == [("$file", "gate"), ("$text-after", "gate")]
    # The gate mends, the media repository fails once: the file keeps its place.
    gate.down = False
    bench.nio.script = [BAD_GATEWAY]
    await bench.sync(after_s=1)
    assert bench.waiting() == [("$file", "file"), ("$text-after", "gate")]
    assert bench.tasks.messages == [] and gate.judged == ["$file"]
    await bench.sync(after_s=5)
    assert bench.tasks.messages == ["$file", "$text-after"] and bench.waiting() == []


async def test_deleting_a_waiting_file_lets_what_came_after_go_ahead(bench: Bench) -> None:
    await bench.sync()
    bench.nio.always = BAD_GATEWAY
    await bench.sync(file_event(), text("after"))
    redaction = {
        "type": "m.room.redaction",
        "sender": OWNER,
        "redacts": "$file",
        "content": {},
        "event_id": "$gone",
        "origin_server_ts": 2,
    }
    await bench.sync(redaction, after_s=1)
    await bench.sync(after_s=1)
    assert bench.tasks.messages == ["$text-after"] and bench.waiting() == []


# -- the inbox moved between a crash and a restart ---------------------------------------------


async def test_a_file_claimed_in_an_old_inbox_is_fetched_into_the_current_one(
    tmp_path: Path,
) -> None:
    db = Database.open(tmp_path / "ledger.db")
    nio = MediaNio()
    old, new = tmp_path / "old-work" / "inbox", tmp_path / "new-work" / "inbox"
    # A crash mid-download under the old workdir: claimed, nothing saved.
    db.claim_file("$cut", old / DAY, "figures.csv")
    # Saved whole under the old workdir, then a crash before the task was recorded.
    whole = db.claim_file("$whole", old / DAY, "report.csv")
    whole.path.parent.mkdir(parents=True)
    whole.path.write_bytes(DATA)
    db.file_saved("$whole", len(DATA))
    files = IncomingFiles(
        cast(MatrixClient, MediaClient(nio)),
        db,
        new,
        1 << 20,
        lambda: DAY,
        outbox=cast(Outbox, FakeOutbox()),
        intake=cast(Tasks, FakeTasks()),
    )
    cut = await files.take("$cut", content())
    kept = await files.take("$whole", content("report.csv"))
    assert cut is not None and kept is not None
    assert cut.path == new / DAY / "figures.csv" and cut.path.read_bytes() == DATA
    assert kept.path == new / DAY / "report.csv" and kept.path.read_bytes() == DATA
    assert nio.downloads == 2
    claim = db.file_claim("$cut")
    assert claim is not None and claim.path == cut.path and claim.size == len(DATA)
    # Read again: the new claim holds, nothing is fetched twice.
    again = await files.take("$cut", content())
    assert again is not None and again.path == cut.path and nio.downloads == 2
    db.close()


# -- a try that hangs does not hold the sync's handling ----------------------------------------

OTHER_ROOM = "!other:example.org"


def with_other_room(sync: Any, *events: dict[str, Any]) -> Any:
    from nio.events import Event
    from nio.responses import RoomInfo, Timeline

    parsed = [Event.parse_event(e) for e in events]
    sync.rooms.join[OTHER_ROOM] = RoomInfo(Timeline(parsed, False, None), [], [], [])
    return sync


async def test_a_waiting_file_whose_try_hangs_holds_no_other_room(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Review 3: a waiting file's try ran inside the sync's handling: a download that hung
    # held every room's messages, answers and approvals until its timeout (90 s), at every
    # try, for up to a day.
    monkeypatch.setattr(attachments, "DOWNLOAD_TIMEOUT_S", 1.0)
    monkeypatch.setattr(unjudged, "TRY_INLINE_S", 0.05)
    await bench.sync()
    bench.nio.script = [BAD_GATEWAY]
    await bench.sync(file_event(), text("after"))
    bench.nio.always = "hang"
    bench.clock.now += 5
    other = dict(text("elsewhere"), event_id="$elsewhere")
    sync = with_other_room(response(), other)
    await asyncio.wait_for(bench.router.handle(sync, "since"), 10)
    # The handling ended while the download still hung...
    [trying] = bench.router._unjudged._trying.values()
    assert not trying.done()
    # ...and took the other room's message.
    assert bench.tasks.messages == ["$elsewhere"]
    assert bench.nio.downloads == 2 and bench.waiting() == [
        ("$file", "file"),
        ("$text-after", "gate"),
    ]
    # The try goes on beside the syncs; while it does, the room keeps waiting.
    await asyncio.wait_for(bench.sync(after_s=30), 10)
    assert bench.nio.downloads == 2 and bench.tasks.messages == ["$elsewhere"]
    await asyncio.wait({trying}, timeout=10)
    # Its timeout is a failure as before: the next try is due 10 s later.
    await bench.sync()
    bench.nio.always = None
    await bench.sync(after_s=9)
    assert bench.nio.downloads == 2
    await bench.sync(after_s=1)
    assert bench.tasks.messages == ["$elsewhere", "$file", "$text-after"]
    assert bench.waiting() == [] and not bench.router._unjudged._trying


async def test_a_file_deleted_while_its_try_hangs_is_dropped(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(unjudged, "TRY_INLINE_S", 0.05)
    await bench.sync()
    bench.nio.script = [BAD_GATEWAY]
    await bench.sync(file_event(), text("after"))
    bench.nio.always = "hang"
    await asyncio.wait_for(bench.sync(after_s=5), 10)
    [trying] = bench.router._unjudged._trying.values()
    redaction = {
        "type": "m.room.redaction",
        "sender": OWNER,
        "redacts": "$file",
        "content": {},
        "event_id": "$gone",
        "origin_server_ts": 2,
    }
    await asyncio.wait_for(bench.sync(redaction, after_s=1), 10)
    await asyncio.wait({trying}, timeout=10)
    assert trying.cancelled()
    await bench.sync(after_s=1)
    assert bench.tasks.messages == ["$text-after"] and bench.waiting() == []


async def test_the_owner_is_told_once_across_restarts(tmp_path: Path) -> None:
    # Review 3 asked: told, then restarted while the repository still fails, the owner is
    # not told again (the ledger keeps `told`); the give-up still comes, once, by name.
    first = Bench(tmp_path, MediaNio())
    await first.sync()
    first.nio.always = BAD_GATEWAY
    await first.sync(file_event())
    await first.sync(after_s=65)
    [told] = first.posts()
    first.db.close()
    again = Bench(tmp_path, MediaNio())
    again.nio.always = BAD_GATEWAY
    for _ in range(5):
        await again.sync(after_s=30)
    assert again.posts() == [] and again.nio.downloads == 5
    again.clock.now += GIVE_UP_AFTER_S
    await again.sync()
    [gave_up] = again.posts()
    assert gave_up.startswith("📎 I gave up fetching figures.csv") and told != gave_up
    again.db.close()


async def test_a_first_try_that_hangs_holds_no_other_room(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Review 3 left open: a new file's first try ran inside the sync's handling, so a
    # download that hung held every room's messages, answers and approvals for the
    # download's timeout (90 s), once per new file. Now the first try runs beside it too.
    monkeypatch.setattr(attachments, "DOWNLOAD_TIMEOUT_S", 1.0)
    monkeypatch.setattr(unjudged, "TRY_INLINE_S", 0.05)
    await bench.sync()
    bench.nio.always = "hang"
    sync = response([text("after")])
    sync.rooms.join[ROOM].timeline.events.insert(0, RoomMessage.parse_decrypted_event(file_event()))
    with_other_room(sync, dict(text("elsewhere"), event_id="$elsewhere"))
    await asyncio.wait_for(bench.router.handle(sync, "since"), 10)
    # The handling ended while the download still hung, and took the other room's message;
    # the file waits in its room's order, the text sent after it behind it.
    [trying] = bench.router._unjudged._trying.values()
    assert not trying.done() and bench.nio.downloads == 1
    assert bench.tasks.messages == ["$elsewhere"]
    assert bench.waiting() == [("$file", "file"), ("$text-after", "gate")]
    assert bench.router.waiting(), "the syncs are short while it waits"
    # While the try goes on, a sync keeps the room waiting and starts no second download.
    await asyncio.wait_for(bench.sync(after_s=1), 10)
    assert bench.nio.downloads == 1 and bench.tasks.messages == ["$elsewhere"]
    # Its timeout is a failure like a 502: the next try is due 5 s later, and takes it.
    await asyncio.wait({trying}, timeout=10)
    bench.nio.always = None
    await bench.sync()
    assert bench.nio.downloads == 1
    await bench.sync(after_s=5)
    assert bench.tasks.messages == ["$elsewhere", "$file", "$text-after"]
    assert bench.waiting() == [] and not bench.router._unjudged._trying
    assert bench.saved() == [f"{DAY}/figures.csv"]


async def test_a_first_try_within_the_wait_is_taken_in_the_same_sync(bench: Bench) -> None:
    # The usual case costs nothing: a download that ends within the wait is a task at once,
    # and the text after it follows in the same sync.
    await bench.sync()
    await bench.sync(file_event(), text("after"))
    assert bench.tasks.messages == ["$file", "$text-after"]
    assert bench.waiting() == [] and not bench.router._unjudged._trying
