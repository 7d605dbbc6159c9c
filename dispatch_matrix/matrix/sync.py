"""The sync loop: long-poll forever, back off when the homeserver is away, never lose place.

The sync token is saved only after the router has written the events it covers to the
ledger, so a crash re-reads rather than loses; event-id de-duplication (of tasks, and of
commands and approvals' answers) makes the re-read harmless. A watchdog notices a loop
that stopped making progress (the process then exits non-zero, so the service manager
restarts it) and a clock jump (sleep/wake: the wall clock moved while the monotonic clock
did not), after which the long poll restarts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from nio import SyncResponse

from dispatch_matrix.core import logs, walltimer
from dispatch_matrix.core.backoff import Backoff
from dispatch_matrix.core.errors import DispatchError, HomeserverError
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.failures import TokenRejected
from dispatch_matrix.store import Connection

log = logs.get(__name__)

# A refused /sync costs the homeserver less than the long poll a healthy bot keeps open all
# the time, so the retries need not thin out past this: the bot is back within seconds of
# the homeserver, not up to a minute later.
_MAX_BACKOFF_S = 10.0
_WATCH_EVERY_S = 5.0
_CLOCK_JUMP_S = 30.0
# The token of a sync that brought nothing to act on (most bring only the bot's own
# events back) rides with the next write; it is committed on its own at least this often.
# One that brought commands or messages is committed at once: read again after a crash,
# they would only be found in the ledger (tasks and commands are de-duplicated by event id),
# but a crash then re-reads less.
_TOKEN_SYNCED_EVERY_S = 60.0
# While an owner's event waits for the gate (its keys could not be fetched), a sync returns
# within this long: the wait is judged again at each sync, and an approval's ✅ should not
# sit out a whole long poll after the homeserver mends.
_WAITING_POLL_MS = 5_000


class SyncStalled(DispatchError):
    """The sync loop made no progress for too long; restarting the process is the cure."""

    exit_code = 70


class SyncLoop:
    """Runs /sync until cancelled, handing each response to `handle`."""

    def __init__(
        self,
        client: MatrixClient,
        db: Connection,
        handle: Callable[[SyncResponse, str | None], Awaitable[bool | None]],
        timeout_ms: int,
        watch_every_s: float | None = None,
        stall_margin_s: float = 120.0,
        recovered: Callable[[], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        waiting: Callable[[], bool] = lambda: False,
    ) -> None:
        # Whether something waits to be judged again at the next sync (then polls are short).
        self._waiting = waiting
        # Told when a sync gets through after failures (the outbox then sends what waits).
        self._recovered = recovered
        self._sleep = sleep
        self._watch_every_s = watch_every_s
        self._stall_margin_s = stall_margin_s
        self._client = client
        self._db = db
        self._handle = handle
        self._timeout_ms = timeout_ms
        self.first_sync_done = asyncio.Event()
        self.first_sync_seconds: float | None = None
        self.last_progress = time.monotonic()
        # When the last sync got through (ms since the epoch): the health record reads it
        # when it writes, so no one is told of each sync.
        self.last_sync_ms: int | None = None
        self._inflight: asyncio.Task[SyncResponse] | None = None
        self._kicked = False

    @property
    def stall_limit_s(self) -> float:
        """No progress for this long means the loop is stuck (a request never returned)."""
        return self._timeout_ms / 1000 + self._stall_margin_s

    def _poll_ms(self, quick: bool) -> int:
        """How long the next sync may be held open by the homeserver."""
        return poll_ms(quick, not quick and self._waiting(), self._timeout_ms)

    def kick(self) -> None:
        """Abandon the current long poll and sync again now (after a sleep/wake)."""
        if self._inflight is not None and not self._inflight.done():
            self._kicked = True
            self._inflight.cancel()

    async def run(self) -> None:
        """Sync until cancelled; raises TokenRejected if the login is revoked."""
        token = self._db.sync_token()
        started = time.monotonic()
        backoff = Backoff(1.0, _MAX_BACKOFF_S)
        token_synced = time.monotonic()
        woke = False
        while True:
            first = not self.first_sync_done.is_set()
            # After a start, a wake or a failure, the sync returns at once rather than hold a
            # long poll: until one gets through, the health record (and `status`) says the
            # bot is not connected, and answers that wait for the homeserver stay queued.
            quick = first or woke or backoff.failing
            woke = False
            try:
                # The first sync after a start asks for the rooms' full state: nio keeps rooms
                # only in memory, and needs members and encryption state to send safely.
                self._inflight = asyncio.create_task(
                    self._client.sync(token, self._poll_ms(quick), full_state=first)
                )
                try:
                    response = await self._inflight
                except asyncio.CancelledError:
                    if not self._kicked:
                        raise
                    self._kicked = False
                    log.info("sync.restarted", reason="clock jump")
                    self.last_progress = time.monotonic()
                    woke = True
                    continue
                acted = await self._handle(response, token)
                # A task this sync queued starts first: the token's save and the key
                # housekeeping below are not on the way to its answer.
                await asyncio.sleep(0)
                self._db.save_sync_token(response.next_batch, staged=not acted)
                if time.monotonic() - token_synced > _TOKEN_SYNCED_EVERY_S:
                    self._db.flush_staged()
                if not self._db.staged:
                    token_synced = time.monotonic()
                token = response.next_batch
                await self._client.after_sync()
            except asyncio.CancelledError:
                raise
            except TokenRejected:
                raise
            except HomeserverError as err:
                self.last_progress = time.monotonic()
                wait = backoff.next()
                log.warning("sync.failed", error=err.message, retry_in=wait)
                await self._sleep(wait)
                continue
            self.last_progress = time.monotonic()
            self.last_sync_ms = int(time.time() * 1000)
            if backoff.failing:
                log.info("sync.recovered")
                if self._recovered is not None:
                    self._recovered()
            backoff.reset()
            if first:
                self.first_sync_seconds = time.monotonic() - started
                self.first_sync_done.set()
                log.info("sync.ready", seconds=round(self.first_sync_seconds, 3))

    async def _until_next_look(self) -> None:
        """Until the loop could have stalled, or the wall clock jumped, where the system
        reports jumps (idle, the watchdog then wakes once per stall limit, not every few
        seconds); else, or at a set interval (tests), a fixed look every few seconds."""
        if self._watch_every_s is None and walltimer.available():
            left = self.last_progress + self.stall_limit_s - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(walltimer.wait_wall(None), max(left, 0.0) + 0.5)
            return
        await asyncio.sleep(self._watch_every_s or _WATCH_EVERY_S)

    async def watch(self) -> None:
        """Raise SyncStalled if the loop stops progressing; kick it after a clock jump."""
        wall, mono = time.time(), time.monotonic()
        while True:
            await self._until_next_look()
            now_wall, now_mono = time.time(), time.monotonic()
            jump = (now_wall - wall) - (now_mono - mono)
            wall, mono = now_wall, now_mono
            if abs(jump) > _CLOCK_JUMP_S:
                log.warning("sync.clock_jump", seconds=round(jump, 1))
                self.kick()
                continue
            idle = now_mono - self.last_progress
            if idle > self.stall_limit_s:
                log.error("sync.stalled", idle_s=round(idle, 1), limit_s=self.stall_limit_s)
                with contextlib.suppress(Exception):
                    self.kick()
                raise SyncStalled(
                    f"the sync loop made no progress for {idle:.0f}s",
                    fix="the service manager restarts dispatch-matrix; see the log if it repeats",
                )


def poll_ms(quick: bool, waiting: bool, timeout_ms: int) -> int:
    """The sync's long-poll timeout (pure): none after a start, a wake or a failure; short
    while an event waits to be judged again; else the configured long poll."""
    if quick:
        return 0
    if waiting:
        return min(timeout_ms, _WAITING_POLL_MS)
    return timeout_ms
