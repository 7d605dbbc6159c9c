"""The daemon's health record: started when, by which pid, connected since, last sync, last
error. The daemon keeps it in the ledger's meta table so `dispatch-matrix status` can read
it without logging in; the lines `status` prints are a pure function of it.

The record is best effort: writing it never blocks or fails the work it describes (a full
disk refuses the write, the daemon logs that once and carries on). Nobody tells it of each
sync: it reads the sync loop's progress when it writes, which is at once after the first
sync, when something changed (an error, say), and before the last sync it shows would look
stale to `status` — about once per idle long poll, fewer when syncs come fast.

That "before" is by the wall clock: a laptop's monotonic clock stops while it is suspended,
so a timer on it would leave the record showing the sync before the suspend for up to a
stale window after the wake, while `status` (which reads the wall clock) says "connected:
no". The writer waits on `walltimer` (which fires across a suspend and on resume) where the
system has it, else in slices of a few seconds, re-reading the wall clock at each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from dispatch_matrix.core import logs, walltimer
from dispatch_matrix.store import Connection

log = logs.get(__name__)

KEY = "daemon_health"
# Warnings that explain why the bot is not connected (to the homeserver, or to the
# Messages API while tasks wait for it) count as errors for `status`.
CONNECTION_EVENTS = frozenset({"sync.failed", "matrix.unreachable", "sync.stalled", "model.outage"})
# Of those, the ones that say the homeserver is not answering: after one, the bot is not
# connected until a sync succeeds again, however recent the last one was.
HOMESERVER_EVENTS = frozenset({"sync.failed", "matrix.unreachable", "sync.stalled"})
_MIN_WRITE_INTERVAL_S = 5.0
# A long poll returns at least once per sync timeout; allow for a slow homeserver and for
# the record being written a little before it would look stale.
_STALE_MARGIN_MS = 30_000
# The record is refreshed this long before the last sync it shows would look stale.
_REFRESH_EARLY_MS = 5_000
# Without a wall-clock timer, the writer re-reads the wall clock this often (a wake from a
# suspend is seen within one slice); a look writes nothing unless something is due.
_LOOK_EVERY_S = 5.0


def stale_after_ms(sync_timeout_ms: int) -> int:
    """How old the last sync may be while the daemon counts as connected."""
    return sync_timeout_ms + _STALE_MARGIN_MS


def refresh_in_ms(
    written_sync_ms: int | None, stale_ms: int, now_ms: int, *, failing: bool = False
) -> int | None:
    """How long until the record must be written again so that the last sync it shows
    does not look stale (pure); None while it shows none (the first sync is written when
    it comes). Never sooner than the writer's pace: once it is stale, the sync loop made
    no progress, and a rewrite would say nothing new. At that pace while the record says
    the homeserver is `failing`: the first sync through is then worth writing at once."""
    if written_sync_ms is None:
        return None
    pace = int(_MIN_WRITE_INTERVAL_S * 1000)
    if failing:
        return pace
    left = written_sync_ms + stale_ms - _REFRESH_EARLY_MS - now_ms
    return max(left, pace)


def shows_failing(health: Health | None) -> bool:
    """Whether the record says the homeserver failed since its last sync (pure)."""
    if health is None or health.failing_since_ms is None:
        return False
    return health.last_sync_ms is None or health.failing_since_ms >= health.last_sync_ms


def sync_due(written: Health | None, last_sync_ms: int | None, stale_ms: int, now_ms: int) -> bool:
    """Whether a look must write the sync loop's progress (pure): a sync came since the one
    on disk, and `status` reading the disk now would say "not connected" or soon will: it
    shows no sync, or a failure since its sync, or a sync about to look stale by the wall
    clock (after a suspend, long since). A newer sync alone is no reason: idle, one comes
    per long poll, and the record would be rewritten that often."""
    shown = None if written is None else written.last_sync_ms
    if last_sync_ms is None or last_sync_ms == shown:
        return False
    if written is None or shown is None or shows_failing(written):
        return True
    return now_ms >= shown + stale_ms - _REFRESH_EARLY_MS


class SyncProgress(Protocol):
    """What the record reads of the sync loop (matrix's `SyncLoop`)."""

    first_sync_done: asyncio.Event
    # When the last sync got through, in ms since the epoch (None: none yet).
    last_sync_ms: int | None


@dataclass(frozen=True)
class Health:
    """What the running (or last) daemon said about itself; times in ms since the epoch."""

    pid: int
    version: str
    started_ms: int
    connected_ms: int | None = None
    last_sync_ms: int | None = None
    last_error: str | None = None
    last_error_ms: int | None = None
    stopped_ms: int | None = None
    # The first homeserver failure since the last sync that succeeded (None: none since).
    failing_since_ms: int | None = None

    def to_json(self) -> str:
        """The record as the meta table keeps it."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Health | None:
        """The record, or None when there is none or it is unreadable."""
        if not text:
            return None
        try:
            fields = json.loads(text)
            return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})
        except (ValueError, TypeError):
            return None


def duration(ms: int) -> str:
    """A duration as a person reads it: 45s, 12m 3s, 5h 2m, 3d 4h."""
    s = max(0, ms // 1000)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def describe(health: Health | None, running: bool, now_ms: int, stale_after_ms: int) -> list[str]:
    """The status lines about the daemon itself (pure).

    Connected means a sync completed within `stale_after_ms` (a long poll returns at least
    once per sync timeout, even when nothing happens) and the homeserver has not failed
    since: a failed sync says the connection is gone before the last good one grows old.
    """
    if health is None:
        return ["connected: unknown (no record yet: the daemon has not run with this version)"]
    lines = []
    if running:
        lines.append(
            f"uptime:    {duration(now_ms - health.started_ms)} (version {health.version})"
        )
        synced = health.last_sync_ms
        failing = health.failing_since_ms
        if failing is not None and (synced is None or failing >= synced):
            last = f"last sync {duration(now_ms - synced)} ago" if synced else "never synced"
            lines.append(f"connected: no, failing for {duration(now_ms - failing)} ({last})")
        elif synced is not None and now_ms - synced <= stale_after_ms:
            lines.append(f"connected: yes, last sync {duration(now_ms - synced)} ago")
        elif synced is None:
            lines.append("connected: no, not yet synced")
        else:
            lines.append(f"connected: no, last sync {duration(now_ms - synced)} ago")
    else:
        ended = health.stopped_ms
        when = f"{duration(now_ms - ended)} ago" if ended else "at an unknown time (crashed?)"
        lines.append(f"connected: no (last run, version {health.version}, ended {when})")
    if health.last_error:
        ago = duration(now_ms - (health.last_error_ms or now_ms))
        lines.append(f"last error: {health.last_error} ({ago} ago)")
    return lines


def error_text(record: logging.LogRecord) -> str | None:
    """A log record as a last-error line, or None if it is not one (pure)."""
    event: dict[str, Any] = record.msg if isinstance(record.msg, dict) else {}
    name = str(event.get("event", "")) if event else ""
    if record.levelno < logging.ERROR and name not in CONNECTION_EVENTS:
        return None
    if not event:
        return logs.REDACTOR.text(record.getMessage())[:300]
    # The structlog processors (the redactor among them) ran before the record got here.
    detail = event.get("error") or event.get("detail") or event.get("reason")
    return f"{name}: {detail}"[:300] if detail else name


class HealthRecorder(logging.Handler):
    """Keeps the health record: in memory at once, in the ledger at most every few seconds.

    It is a logging handler so that any error the daemon logs becomes the last error, from
    whichever thread logs it; the writes happen only in `run`, on the event loop.
    """

    def __init__(
        self,
        db: Connection,
        pid: int,
        version: str,
        now_ms: Callable[[], int] | None = None,
        *,
        stale_ms: int = stale_after_ms(30_000),
        look_every_s: float = _LOOK_EVERY_S,
    ) -> None:
        super().__init__(logging.WARNING)
        self._db = db
        self._now = now_ms or (lambda: int(time.time() * 1000))
        # A timerfd waits for the real wall clock only; a given clock is waited on in slices
        # of `look_every_s`, as the real one is where there is no timerfd.
        self._wall_timer = now_ms is None and walltimer.available()
        self._look_every_s = look_every_s
        self._health = Health(pid=pid, version=version, started_ms=self._now())
        self._lock = threading.Lock()
        self._dirty = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._write_failed = False
        # How old a last sync may be before `status` says "not connected".
        self._stale_ms = stale_ms
        # The sync loop whose progress the record shows (`follow`).
        self._sync: SyncProgress | None = None
        # The record on disk (None: not written yet) and the last sync it shows.
        self._written: Health | None = None
        self._written_sync: int | None = None

    def follow(self, sync: SyncProgress) -> None:
        """Show this sync loop's progress (read when the record is read or written)."""
        self._sync = sync

    def _last_sync(self) -> int | None:
        sync = self._sync
        return None if sync is None else sync.last_sync_ms

    @property
    def health(self) -> Health:
        """The record as it stands in memory, with the sync loop's progress now."""
        with self._lock:
            health = self._health
        return replace(health, last_sync_ms=self._last_sync())

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._health = replace(self._health, **changes)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._dirty.set)

    def started(self) -> None:
        """The daemon holds the lock: write the record now, before connecting."""
        self._loop = asyncio.get_running_loop()
        self.write()

    def connected(self) -> None:
        """Logged in (or restored)."""
        self._update(connected_ms=self._now())

    def emit(self, record: logging.LogRecord) -> None:
        """A logged error becomes the last error."""
        text = error_text(record)
        if text is None:
            return
        now = self._now()
        self._update(last_error=text, last_error_ms=now)
        event = record.msg if isinstance(record.msg, dict) else {}
        if event.get("event") in HOMESERVER_EVENTS:
            synced = self._last_sync()
            with self._lock:
                health = self._health
                since = health.failing_since_ms
                if since is None or (synced or 0) > since:
                    self._health = replace(health, failing_since_ms=now)

    def stopped(self) -> None:
        """The daemon is stopping: say so in the record."""
        self._update(stopped_ms=self._now())
        self.write()

    def write(self) -> None:
        """Write the record; a refused write (a full disk) is logged once, never raised."""
        health = self.health
        try:
            self._db.set_meta(KEY, health.to_json())
            self._written = health
            self._written_sync = health.last_sync_ms
            self._write_failed = False
        except sqlite3.Error as err:
            if not self._write_failed:
                log.warning("health.write_failed", error=str(err))
            self._write_failed = True

    async def run(self, sync: SyncProgress) -> None:
        """Show `sync`'s progress: write the record at once when the first sync is in (so
        `status` never reads "not yet synced" from a daemon that is taking messages), then
        whenever it changed, at most once per few seconds, and before the last sync it
        shows would look stale by the wall clock (so also soon after a wake)."""
        self.follow(sync)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._first_sync(sync))
            while True:
                failing = shows_failing(self._written)
                wait_ms = refresh_in_ms(
                    self._written_sync, self._stale_ms, self._now(), failing=failing
                )
                await self._until(wait_ms)
                # Nothing changed and no sync since the last write (the homeserver is away,
                # the network is down): the disk says what memory says, and a rewrite at the
                # writer's pace would cost a synced write every few seconds of the outage.
                if self._dirty.is_set() or sync_due(
                    self._written, self._last_sync(), self._stale_ms, self._now()
                ):
                    self._dirty.clear()
                    self.write()
                    await asyncio.sleep(_MIN_WRITE_INTERVAL_S)

    async def _until(self, wait_ms: int | None) -> None:
        """Until `wait_ms` from now by the wall clock (None: no time), or until something
        changed. Early is fine (a clock jump, a resume, a slice): the caller looks, and
        writes only what is due."""
        if self._wall_timer and wait_ms is not None:
            # A timer refused (no descriptor left, say) costs this wait a slice, not the
            # record: it is best effort and must not stop the daemon.
            with contextlib.suppress(OSError):
                await walltimer.wait_wall((self._now() + wait_ms) / 1000, self._dirty)
                return
        timeout = None if wait_ms is None else min(wait_ms / 1000, self._look_every_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._dirty.wait(), timeout)

    async def _first_sync(self, sync: SyncProgress) -> None:
        await sync.first_sync_done.wait()
        self.write()
        # The writer sets its next refresh by the sync just written.
        self._dirty.set()


def read(db: Connection) -> Health | None:
    """The record the daemon last wrote."""
    return Health.from_json(db.get_meta(KEY))
