"""The daemon's health record and the lines `status` makes of it, without a homeserver."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from dispatch_matrix.app import health as health_module
from dispatch_matrix.app.health import (
    Health,
    HealthRecorder,
    describe,
    duration,
    error_text,
    read,
    refresh_in_ms,
    shows_failing,
    stale_after_ms,
    sync_due,
)
from dispatch_matrix.core import logs, walltimer
from dispatch_matrix.core.faults import disk_full
from dispatch_matrix.store import Database

MIN = 60_000
STALE = 90_000


@pytest.mark.parametrize(
    "ms, text",
    [
        (0, "0s"),
        (45_000, "45s"),
        (12 * MIN + 3_000, "12m 3s"),
        (302 * MIN, "5h 2m"),
        (76 * 60 * MIN, "3d 4h"),
        (-5, "0s"),
    ],
)
def test_duration(ms: int, text: str) -> None:
    assert duration(ms) == text


NOW = 1_000_000_000
UP = Health(pid=7, version="0.9", started_ms=NOW - 5 * MIN, connected_ms=NOW - 5 * MIN)


@pytest.mark.parametrize(
    "health, running, expected",
    [
        (None, True, ["connected: unknown"]),
        (Health(7, "0.9", NOW - 1_000), True, ["uptime:    1s", "connected: no, not yet synced"]),
        (
            Health(7, "0.9", NOW - 5 * MIN, last_sync_ms=NOW - 2_000),
            True,
            ["uptime:    5m 0s (version 0.9)", "connected: yes, last sync 2s ago"],
        ),
        (
            Health(7, "0.9", NOW - 5 * MIN, last_sync_ms=NOW - 3 * MIN),
            True,
            ["uptime:    5m 0s", "connected: no, last sync 3m 0s ago"],
        ),
        (
            Health(7, "0.9", NOW - 9 * MIN, last_sync_ms=NOW - 3 * MIN, stopped_ms=NOW - 2 * MIN),
            False,
            ["connected: no (last run, version 0.9, ended 2m 0s ago)"],
        ),
        (
            Health(7, "0.9", NOW - 9 * MIN, last_sync_ms=NOW - 3 * MIN),
            False,
            ["connected: no (last run, version 0.9, ended at an unknown time (crashed?))"],
        ),
        (
            Health(
                7,
                "0.9",
                NOW - MIN,
                last_sync_ms=NOW,
                last_error="sync.failed: refused",
                last_error_ms=NOW - 30_000,
            ),
            True,
            ["uptime:    1m 0s", "connected: yes", "last error: sync.failed: refused (30s ago)"],
        ),
        # The homeserver went away after a recent sync: not connected, whatever its age.
        (
            Health(
                7,
                "0.9",
                NOW - MIN,
                last_sync_ms=NOW - 32_000,
                last_error="sync.failed: cannot reach it (connection refused)",
                last_error_ms=NOW - 2_000,
                failing_since_ms=NOW - 20_000,
            ),
            True,
            [
                "uptime:    1m 0s",
                "connected: no, failing for 20s (last sync 32s ago)",
                "last error: sync.failed: cannot reach it (connection refused) (2s ago)",
            ],
        ),
        (
            Health(7, "0.9", NOW - MIN, failing_since_ms=NOW - 50_000),
            True,
            ["uptime:    1m 0s", "connected: no, failing for 50s (never synced)"],
        ),
        # A sync got through after the failure: connected again.
        (
            Health(7, "0.9", NOW - MIN, last_sync_ms=NOW - 1_000, failing_since_ms=NOW - 9_000),
            True,
            ["uptime:    1m 0s", "connected: yes, last sync 1s ago"],
        ),
    ],
)
def test_describe(health: Health | None, running: bool, expected: list[str]) -> None:
    lines = describe(health, running, NOW, STALE)
    assert len(lines) == len(expected)
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(start), (line, start)


def record(level: int, msg: object) -> logging.LogRecord:
    return logging.LogRecord("x", level, __file__, 1, msg, None, None)


@pytest.mark.parametrize(
    "level, msg, expected",
    [
        (logging.INFO, {"event": "task.started"}, None),
        (logging.WARNING, {"event": "sandbox.off", "detail": "no bwrap"}, None),
        (logging.WARNING, {"event": "sync.failed", "error": "refused"}, "sync.failed: refused"),
        (
            logging.WARNING,
            {"event": "model.outage", "error": "the Messages API could not be reached"},
            "model.outage: the Messages API could not be reached",
        ),
        (logging.WARNING, {"event": "model.stream_broken", "error": "cut"}, None),
        (logging.ERROR, {"event": "worker.crashed"}, "worker.crashed"),
        (logging.ERROR, "nio said password=hunter2secret", "nio said password=«redacted»"),
    ],
)
def test_error_text(level: int, msg: object, expected: str | None) -> None:
    assert error_text(record(level, msg)) == expected


def test_record_round_trips_and_ignores_what_it_cannot_read() -> None:
    assert Health.from_json(UP.to_json()) == UP
    assert Health.from_json("not json") is None
    assert Health.from_json('{"pid": 1}') is None
    assert Health.from_json(None) is None


class Progress:
    """The sync loop as the record reads it."""

    def __init__(self) -> None:
        self.first_sync_done = asyncio.Event()
        self.last_sync_ms: int | None = None

    def synced(self, ms: int) -> None:
        self.last_sync_ms = ms
        self.first_sync_done.set()


@contextlib.asynccontextmanager
async def writing(recorder: HealthRecorder) -> AsyncIterator[Progress]:
    """The recorder started and its writer running on a fresh `Progress`; stopped after,
    and found still running then (nothing a test does may kill the writer)."""
    progress = Progress()
    recorder.started()
    writer = asyncio.create_task(recorder.run(progress))
    try:
        yield progress
        assert not writer.done(), writer
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer


async def test_recorder_writes_start_sync_error_and_stop(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    clock = iter(range(1_000, 100_000, 1_000))
    recorder = HealthRecorder(db, 42, "1.2", now_ms=lambda: next(clock))
    progress = Progress()
    recorder.follow(progress)
    recorder.started()
    first = read(db)
    assert first is not None and first.pid == 42 and first.last_sync_ms is None
    recorder.connected()
    progress.synced(next(clock))
    try:
        logs.setup("info")
        logs.get_root().addHandler(recorder)
        logs.get("t").error("store.broken", error="disk I/O error")
    finally:
        logs.get_root().removeHandler(recorder)
        logs.setup("error")
    recorder.stopped()
    last = read(db)
    assert last is not None
    assert last.connected_ms is not None and last.last_sync_ms is not None
    assert last.last_error == "store.broken: disk I/O error"
    assert last.stopped_ms is not None and last.stopped_ms > last.started_ms
    db.close()


async def test_a_homeserver_failure_after_a_sync_marks_it_failing_until_the_next_sync(
    tmp_path: Path,
) -> None:
    db = Database.open(tmp_path / "d.db")
    clock = iter(range(1_000, 100_000, 1_000))
    recorder = HealthRecorder(db, 42, "1.2", now_ms=lambda: next(clock))
    progress = Progress()
    recorder.follow(progress)
    recorder.started()
    progress.synced(next(clock))
    try:
        logs.setup("info")
        logs.get_root().addHandler(recorder)
        logs.get("t").warning("model.outage", error="the API is away")
        assert recorder.health.failing_since_ms is None, "the API is not the homeserver"
        logs.get("t").warning("sync.failed", error="connection refused")
        first = recorder.health.failing_since_ms
        logs.get("t").warning("sync.failed", error="connection refused")
        assert first is not None and recorder.health.failing_since_ms == first, "the first"
        progress.synced(next(clock))
        logs.get("t").warning("sync.failed", error="connection refused")
    finally:
        logs.get_root().removeHandler(recorder)
        logs.setup("error")
    health = recorder.health
    assert health.last_sync_ms is not None and health.failing_since_ms is not None
    assert health.failing_since_ms > health.last_sync_ms > first, "a new outage, from its start"
    db.close()


async def test_recorder_survives_a_refused_write(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    recorder = HealthRecorder(db, 1, "1")
    db.close()  # a closed connection refuses every write, as a full disk does
    recorder.started()
    recorder.stopped()


def sqlite_error(message: str, name: str) -> sqlite3.OperationalError:
    """An error as SQLite raises it, with its code's name."""
    error = sqlite3.OperationalError(message)
    error.sqlite_errorname = name
    return error


@pytest.mark.parametrize(
    "error, full",
    [
        (sqlite3.OperationalError("database or disk is full"), True),
        # Opening a WAL database on a full disk: the shared-memory file cannot grow.
        (sqlite_error("disk I/O error", "SQLITE_IOERR_SHMSIZE"), True),
        (sqlite_error("database or disk is full", "SQLITE_FULL"), True),
        # Another I/O fault reads the same, and is not a full disk.
        (sqlite_error("disk I/O error", "SQLITE_IOERR_READ"), False),
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (OSError(errno.EACCES, "Permission denied"), False),
        (sqlite3.OperationalError("database is locked"), False),
        (ValueError("disk is full"), False),
        (
            ExceptionGroup(
                "g", [ValueError("x"), ExceptionGroup("h", [OSError(errno.ENOSPC, "")])]
            ),
            True,
        ),
        (ExceptionGroup("g", [ValueError("x")]), False),
    ],
)
def test_disk_full_is_told_apart_from_bugs(error: BaseException, full: bool) -> None:
    found = disk_full(error, Path("/state"))
    assert (found is not None) == full
    if found is not None:
        assert found.exit_code == 3 and "/state" in found.message


@pytest.mark.parametrize(
    "error, said",
    [
        # No file named (SQLite): the state folder, whose ledger it is.
        (
            sqlite3.OperationalError("database or disk is full"),
            "the disk holding the state folder /state is full",
        ),
        # A file inside the state folder: still the state folder.
        (
            OSError(errno.ENOSPC, "No space left on device", "/state/logs/x"),
            "the disk holding the state folder /state is full",
        ),
        # A file elsewhere (a temporary folder filled up): that folder, not the state folder.
        (
            OSError(errno.ENOSPC, "No space left on device", "/tmp/dm/part"),
            "the disk holding /tmp/dm is full",
        ),
        # The disk has room; the user's share of it does not.
        (
            OSError(errno.EDQUOT, "Disk quota exceeded"),
            "your disk quota is used up for the state folder /state",
        ),
    ],
)
def test_a_full_disk_is_named_where_it_struck(error: BaseException, said: str) -> None:
    found = disk_full(error, Path("/state"))
    assert found is not None and found.message.startswith(said), found


class _FullDisk:
    """A log file's stream on a disk with no room left."""

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self) -> None:
        self.flush()


def test_a_full_disk_under_the_log_file_is_one_line_not_a_traceback_per_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The daemon on a full disk printed '--- Logging error ---' and a traceback for every
    record the JSON log could not take, burying the one line that says what to do."""
    console = io.StringIO()
    logs.setup("info", tmp_path, stream=console)
    try:
        [handler] = [h for h in logging.getLogger().handlers if h.stream is not console]
        assert isinstance(handler, logging.FileHandler)
        handler.stream = _FullDisk()
        log = logs.get("test")
        log.info("test.first")
        log.info("test.second")
        told = capsys.readouterr().err
        # Room again: the next record reopens the file and is written.
        log.info("test.room_again")
        written = (tmp_path / "dispatch.jsonl").read_text(encoding="utf-8")
    finally:
        logs.setup("error")
    assert "Logging error" not in told and "Traceback" not in told, told
    assert told.count("\n") == 1 and "the disk is full" in told, told
    assert "test.first" in console.getvalue() and "test.second" in console.getvalue()
    assert "test.room_again" in written and "test.first" not in written


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (by yielding to the writer task) until `condition` holds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_the_first_sync_is_on_disk_at_once_later_ones_when_it_would_look_stale(
    tmp_path: Path,
) -> None:
    db = Database.open(tmp_path / "d.db")
    now = [100_000]
    recorder = HealthRecorder(db, 42, "1.2", now_ms=lambda: now[0], stale_ms=STALE)
    async with writing(recorder) as progress:
        progress.synced(now[0])
        await until(lambda: (read(db) or UP).last_sync_ms == 100_000)
        # Nobody tells the record of later syncs: on disk it keeps the first until the
        # writer's refresh, in memory it shows the latest.
        progress.synced(now[0] + 1_000)
        assert recorder.health.last_sync_ms == 101_000
        assert (read(db) or UP).last_sync_ms == 100_000
    db.close()


@pytest.mark.parametrize(
    "written, now, expected",
    [
        # Nothing shown yet: the first sync is written when it comes, no timer meanwhile.
        (None, NOW, None),
        # Written just now: refreshed 5 s before it would look stale.
        (NOW, NOW, STALE - 5_000),
        (NOW - 60_000, NOW, STALE - 65_000),
        # About to look stale, or stale already (no progress since): at the writer's pace,
        # never a busy loop.
        (NOW - STALE + 6_000, NOW, 5_000),
        (NOW - 10 * STALE, NOW, 5_000),
    ],
)
def test_refresh_in_ms(written: int | None, now: int, expected: int | None) -> None:
    assert refresh_in_ms(written, STALE, now) == expected


@pytest.mark.parametrize(
    "written, now, expected",
    [
        (None, NOW, None),
        # While the record says failing, the writer looks at its pace however recent the
        # sync it shows: the homeserver's return is on disk a look after the first sync.
        (NOW, NOW, 5_000),
        (NOW - 10 * STALE, NOW, 5_000),
    ],
)
def test_refresh_in_ms_while_failing(written: int | None, now: int, expected: int | None) -> None:
    assert refresh_in_ms(written, STALE, now, failing=True) == expected


@pytest.mark.parametrize(
    "record, failing",
    [
        (None, False),
        (Health(7, "0.9", NOW, last_sync_ms=NOW), False),
        (Health(7, "0.9", NOW, last_sync_ms=NOW, failing_since_ms=NOW - 1), False),
        (Health(7, "0.9", NOW, last_sync_ms=NOW, failing_since_ms=NOW), True),
        (Health(7, "0.9", NOW, failing_since_ms=NOW), True),
    ],
)
def test_shows_failing(record: Health | None, failing: bool) -> None:
    assert shows_failing(record) is failing


def shown(sync: int | None, failing: int | None = None) -> Health:
    """The record on disk, as far as a look reads it."""
    return Health(7, "0.9", NOW - 9 * MIN, last_sync_ms=sync, failing_since_ms=failing)


@pytest.mark.parametrize(
    "written, synced, now, due",
    [
        # No sync yet, or none since the one on disk: nothing to write.
        (None, None, NOW, False),
        (shown(None), None, NOW, False),
        (shown(NOW - 10 * STALE), NOW - 10 * STALE, NOW, False),
        (shown(NOW - 3_000, failing=NOW - 1_000), NOW - 3_000, NOW, False),
        # The first sync: at once.
        (shown(None), NOW, NOW, True),
        (shown(None, failing=NOW - 50_000), NOW, NOW, True),
        # A newer sync while the one on disk still looks recent: not yet (idle, one comes
        # per long poll).
        (shown(NOW - 30_000), NOW, NOW, False),
        (shown(NOW - STALE + 5_001), NOW, NOW, False),
        # A failure written before that sync is no reason either: the disk says connected.
        (shown(NOW - 30_000, failing=NOW - 40_000), NOW, NOW, False),
        # About to look stale, or long stale (the wall clock ran through a suspend).
        (shown(NOW - STALE + 5_000), NOW, NOW, True),
        (shown(NOW - 3_600_000), NOW - 1_000, NOW, True),
        # The disk says failing, and a sync got through since: at once, however recent.
        (shown(NOW - 10_000, failing=NOW - 8_000), NOW, NOW, True),
    ],
)
def test_sync_due(written: Health | None, synced: int | None, now: int, due: bool) -> None:
    assert sync_due(written, synced, STALE, now) is due


def test_status_counts_a_sync_as_recent_for_a_long_poll_and_a_margin() -> None:
    assert stale_after_ms(30_000) == 60_000


async def test_while_the_homeserver_is_away_the_record_is_not_rewritten_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The writer's pace and the staleness, shortened so that its looks come quickly here
    # (every written sync looks stale at once: the writer looks at its pace).
    monkeypatch.setattr(health_module, "_MIN_WRITE_INTERVAL_S", 0.001)
    db = Database.open(tmp_path / "d.db")
    now, looks = [100_000], [0]

    def clock() -> int:
        looks[0] += 1
        return now[0]

    recorder = HealthRecorder(db, 42, "1.2", now_ms=clock, stale_ms=5_000)
    writes: list[str] = []
    async with writing(recorder) as progress:
        progress.synced(now[0])
        await until(lambda: (read(db) or UP).last_sync_ms == 100_000)
        db._conn.set_trace_callback(
            lambda sql: writes.append(sql) if "INSERT OR REPLACE INTO meta" in sql else None
        )
        # An hour without a sync (no network, the homeserver down): the writer keeps
        # looking, but what it would write is what the disk already says.
        now[0] += 3_600_000
        seen = looks[0]
        await until(lambda: looks[0] >= seen + 20)
        assert writes == [], "no write while nothing changed"
        # The sync gets through again: written at the writer's next look.
        progress.synced(now[0])
        await until(lambda: (read(db) or UP).last_sync_ms == now[0])
        assert len(writes) == 1
    db.close()


async def test_after_a_suspend_the_first_sync_is_on_disk_within_a_look_not_a_stale_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The writer's pace shortened as above; its looks (slices of the clock it is given, as
    # where there is no timerfd) every 10 ms instead of 5 s.
    monkeypatch.setattr(health_module, "_MIN_WRITE_INTERVAL_S", 0.001)
    db = Database.open(tmp_path / "d.db")
    now = [100_000]
    recorder = HealthRecorder(
        db, 42, "1.2", now_ms=lambda: now[0], stale_ms=STALE, look_every_s=0.01
    )
    async with writing(recorder) as progress:
        progress.synced(now[0])
        await until(lambda: (read(db) or UP).last_sync_ms == 100_000)
        # Suspended for an hour: the wall clock moved on, a monotonic timer did not (the
        # writer's next refresh, by its own reckoning, is most of a stale window away).
        now[0] += 3_600_000
        # The sync loop gets through again a few seconds after the wake.
        now[0] += 3_000
        progress.synced(now[0])
        await until(lambda: (read(db) or UP).last_sync_ms == now[0], timeout=2)
        shown = describe(read(db), True, now[0] + 1_000, STALE)
        assert shown[1].startswith("connected: yes"), shown
    db.close()


async def test_idle_the_record_is_written_about_once_per_stale_window_and_never_looks_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health_module, "_MIN_WRITE_INTERVAL_S", 0.001)
    db = Database.open(tmp_path / "d.db")
    now, looks = [100_000], [0]

    def clock() -> int:
        looks[0] += 1
        return now[0]

    recorder = HealthRecorder(db, 42, "1.2", now_ms=clock, stale_ms=STALE, look_every_s=0.001)
    writes: list[str] = []
    async with writing(recorder) as progress:
        progress.synced(now[0])
        await until(lambda: (read(db) or UP).last_sync_ms == 100_000)
        db._conn.set_trace_callback(
            lambda sql: writes.append(sql) if "INSERT OR REPLACE INTO meta" in sql else None
        )
        # Ten minutes of idle long polls, one every 30 s; the writer looks after each.
        for _ in range(20):
            now[0] += 30_000
            progress.synced(now[0])
            await until(lambda seen=looks[0]: looks[0] >= seen + 3)
            on_disk = (read(db) or UP).last_sync_ms
            assert on_disk is not None and now[0] - on_disk < STALE
        # One write per 90 s of syncs (the one due before 85 s is the third after a write):
        # 600 s / 90 s, where a write at each sync would be 20 and at each look hundreds.
        assert 6 <= len(writes) <= 7, len(writes)
    db.close()


async def test_with_the_real_clock_the_writer_waits_on_the_wall_clock_timer_where_there_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not walltimer.available():
        pytest.skip("no timerfd here: the writer looks in slices")
    asked: list[float | None] = []

    async def wait_wall(at: float | None, wake: asyncio.Event | None = None) -> walltimer.Woke:
        asked.append(at)
        assert wake is not None
        await wake.wait()
        return walltimer.Woke.WOKEN

    monkeypatch.setattr(walltimer, "wait_wall", wait_wall)
    monkeypatch.setattr(health_module, "_MIN_WRITE_INTERVAL_S", 0.001)
    db = Database.open(tmp_path / "d.db")
    recorder = HealthRecorder(db, 42, "1.2", stale_ms=STALE)
    async with writing(recorder) as progress:
        progress.synced(int(time.time() * 1000))
        await until(lambda: bool(asked))
        # Armed at the wall time the written sync needs refreshing, not a duration.
        written = (read(db) or UP).last_sync_ms
        assert written is not None and asked[0] is not None
        assert asked[0] * 1000 == pytest.approx(written + STALE - 5_000, abs=1)
    db.close()


async def test_after_a_short_outage_the_first_sync_through_is_on_disk_within_a_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health_module, "_MIN_WRITE_INTERVAL_S", 0.001)
    db = Database.open(tmp_path / "d.db")
    now = [100_000]
    recorder = HealthRecorder(
        db, 42, "1.2", now_ms=lambda: now[0], stale_ms=STALE, look_every_s=0.01
    )
    progress = Progress()
    recorder.started()
    writer = asyncio.create_task(recorder.run(progress))
    try:
        logs.setup("info")
        logs.get_root().addHandler(recorder)
        progress.synced(now[0])
        await until(lambda: (read(db) or UP).last_sync_ms == 100_000)
        now[0] += 3_000
        logs.get("t").warning("sync.failed", error="connection refused")
        await until(lambda: (read(db) or UP).failing_since_ms == 103_000)
        # The homeserver is back 4 s later, long before the sync on disk would look stale.
        now[0] += 4_000
        progress.synced(now[0])
        await until(lambda: (read(db) or UP).last_sync_ms == now[0], timeout=2)
        shown = describe(read(db), True, now[0] + 1_000, STALE)
        assert shown[1].startswith("connected: yes"), shown
    finally:
        logs.get_root().removeHandler(recorder)
        logs.setup("error")
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
    db.close()


async def test_a_refused_wall_timer_costs_the_writer_a_slice_not_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refused(at: float | None, wake: asyncio.Event | None = None) -> walltimer.Woke:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(walltimer, "available", lambda: True)
    monkeypatch.setattr(walltimer, "wait_wall", refused)
    monkeypatch.setattr(health_module, "_MIN_WRITE_INTERVAL_S", 0.001)
    db = Database.open(tmp_path / "d.db")
    recorder = HealthRecorder(db, 42, "1.2", stale_ms=STALE, look_every_s=0.01)
    async with writing(recorder) as progress:
        progress.synced(int(time.time() * 1000))
        await until(lambda: (read(db) or UP).last_sync_ms is not None)
        recorder.connected()
        # The writer survives the refusal: `writing` finds it still running.
        await until(lambda: (read(db) or UP).connected_ms is not None)
    db.close()
