"""How things leave for the homeserver: room events by urgency within its limits (the
durable lane, `Sender`), and beside them typing, read receipts and presence (the best-effort
lane, `Ephemeral`).

The durable lane. Every homeserver rate-limits a bot nobody exempted (Synapse's stock
`rc_message`: a burst of 10 events, then one every 5 s). So the sender keeps a model of that
budget and sends:
- answers, questions and notices (`Urgency.ANSWER`) at once, in the order they were decided;
- status-message edits (`Urgency.PROGRESS`) and reactions and redactions (`Urgency.DECORATION`)
  only while the budget keeps a reserve for the next answer; a newer one in the same slot
  replaces an older one not yet sent, and a caller that stops waiting withdraws its own.

A 429 holds back only what it refused: that event waits out `retry_after`, the budget
counts as spent until then, and everything else keeps its place.

Answers keep their order within a room, not across rooms: an answer that waits (a room
whose send failed and is retried) never holds back another room's. A refusal no retry can
fix (the bot was removed from the room, the room is gone) ends that send at once; the job's
`on_undeliverable` learns why, so the owner can be told elsewhere.

While an answer is about to be decided (`hold`: the worker took a task a moment ago),
decorations wait too: through a backlog of quick tasks each ✅ would otherwise take the
homeserver's time between two answers, and the answers go out at half the pace. A step's
status still goes: it says which command runs.

The best-effort lane. Typing, receipts and presence are not room events: none is ever
waited for on the way to an answer, and each keeps only its latest wish (a typing "on" then
"off" not yet sent sends only "off"). Typing and receipts are not rate-limited by Synapse;
presence is (once per 10 s by default, and every /sync spends from the same allowance), so
presence is coalesced to one update per `presence_every_s`, and one the homeserver refuses
waits for the next slot unless a newer wish replaced it (skipping it left "working on #19"
shown for good after the task ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from dispatch_matrix.core import logs
from dispatch_matrix.core.backoff import Backoff
from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.core.ids import EventID, RoomID
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.failures import (
    CannotSend,
    RateLimited,
    RequestRefused,
    TokenRejected,
    Unreachable,
    is_final,
)

log = logs.get(__name__)

# Tokens kept for answers: decorations never take the budget below half the burst (at
# least two), so a burst of answers (five tasks sent at once) finds room.
MIN_RESERVE = 2.0
_MAX_BACKOFF_S = 60.0
_MAX_REFUSALS = 6
# A decoration that has waited this long behind answers goes unsent: while answers keep
# coming (a long backlog) every ✅ waits, and without a bound the waiting ones grew without
# end (about 5 KiB each: 6,000 of them after 7,000 back-to-back turns). Each answer is a
# reply to its message, which says as much.
DECORATION_STALE_S = 120.0


class Urgency(enum.IntEnum):
    """What an event is to the owner, which decides when it may go."""

    ANSWER = 0
    PROGRESS = 1
    DECORATION = 2


class Budget:
    """A token bucket modelling the homeserver's limit on our events (`rate_per_s` = 0: none)."""

    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._blocked_until = 0.0

    @property
    def limited(self) -> bool:
        return self._rate > 0

    @property
    def reserve(self) -> float:
        """Tokens decorations leave for answers."""
        return max(MIN_RESERVE, self._burst // 2)

    def available(self) -> float:
        """Tokens now (0 while a 429's retry_after runs)."""
        now = self._clock()
        if now < self._blocked_until:
            return 0.0
        if not self.limited:
            return float("inf")
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        return self._tokens

    def spend(self) -> None:
        """One event went out."""
        if self.limited:
            self._tokens = max(0.0, self.available() - 1.0)

    def refused(self, retry_after_s: float) -> None:
        """The server said 429: nothing goes until retry_after, and the bucket is empty."""
        self._blocked_until = max(self._blocked_until, self._clock() + retry_after_s)
        self._tokens = 0.0
        self._at = self._blocked_until

    def seconds_until(self, tokens: float) -> float:
        """How long until `tokens` are available (0 if they are)."""
        have = self.available()
        now = self._clock()
        blocked = max(0.0, self._blocked_until - now)
        if have >= tokens:
            return 0.0
        if not self.limited:
            return blocked
        return blocked + (tokens - have) / self._rate


@dataclass(eq=False)
class Job:
    """One event waiting to be sent."""

    kind: Urgency
    perform: Callable[[], Awaitable[EventID]]
    done: asyncio.Future[EventID]
    label: str
    # Jobs in the same slot supersede each other (the newest is the one that counts).
    slot: str | None = None
    on_dropped: Callable[[], None] | None = None
    # The room it goes to: answers keep their order per room (None: one lane of its own).
    room: str | None = None
    # Told why, when the homeserver refused the event for good (or past the retries).
    on_undeliverable: Callable[[HomeserverError], None] | None = None
    not_before: float = 0.0
    refusals: int = 0
    # Held back because the homeserver could not be reached (not by a 429's retry_after).
    unreachable: bool = False
    backoff: Backoff = field(default_factory=lambda: Backoff(1.0, _MAX_BACKOFF_S))
    seq: int = 0
    queued_at: float = 0.0


class Sender:
    """The one loop that sends room events, by kind and within the budget."""

    def __init__(
        self,
        budget: Budget,
        clock: Callable[[], float] = time.monotonic,
        on_rate_limited: Callable[[int], None] | None = None,
        hold: Callable[[], float] | None = None,
    ) -> None:
        self._budget = budget
        self._on_rate_limited = on_rate_limited
        # Seconds for which an answer is expected (the rest waits meanwhile); 0: none is.
        self._hold = hold
        self._clock = clock
        self._jobs: list[Job] = []
        self._wake = asyncio.Event()
        self._seq = itertools.count()
        self._current: Job | None = None
        # 429s met, for `doctor` and the log (an operator can exempt the bot).
        self.rate_limited = 0

    def enqueue(self, job: Job) -> asyncio.Future[EventID]:
        """Queue a job, its place fixed now; its event id ("" when it was dropped) arrives
        in the future returned, which nobody need wait for."""
        job.seq = next(self._seq)
        job.queued_at = self._clock()
        if job.slot is not None:
            for old in [j for j in self._jobs if j.slot == job.slot]:
                if old is not self._current:
                    self._drop(old, "superseded")
        self._jobs.append(job)
        self._wake.set()
        return job.done

    async def submit(self, job: Job) -> EventID:
        """Queue a job and wait for its event id ("" when it was dropped)."""
        self.enqueue(job)
        try:
            return await asyncio.shield(job.done)
        except asyncio.CancelledError:
            # A decoration nobody waits for is not worth sending; an answer stays recorded
            # and goes at the next start (the outbox re-sends what it did not confirm).
            if job in self._jobs and job is not self._current:
                self._jobs.remove(job)
                if job.kind is not Urgency.ANSWER:
                    self._finish_dropped(job, "withdrawn")
            raise

    def retry_now(self) -> None:
        """The homeserver answers again (a sync got through): what waits out an outage's
        backoff goes now, instead of up to a minute later. A 429's wait is kept."""
        held = [j for j in self._jobs if j.unreachable]
        for job in held:
            job.not_before, job.unreachable = 0.0, False
        if held:
            log.info("outbox.retry_now", jobs=len(held))
            self._wake.set()

    def pending(self, kind: Urgency | None = None) -> int:
        """Jobs waiting (of one kind)."""
        return sum(1 for j in self._jobs if kind is None or j.kind is kind)

    async def run(self) -> None:
        """Send until cancelled."""
        while True:
            job, wait = self._next()
            if job is None:
                self._wake.clear()
                if wait is None:
                    await self._wake.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
                continue
            self._current = job
            try:
                await self._send(job)
            finally:
                self._current = None

    def _next(self) -> tuple[Job | None, float | None]:
        """The job to send now, else how long until one may go (None: until woken)."""
        now = self._clock()
        answers = [j for j in self._jobs if j.kind is Urgency.ANSWER]
        answer_wait: float | None = None
        if answers:
            self._drop_stale(now)
            # Answers keep their order within a room: each room's first one waits, the rest
            # of that room wait behind it; another room's go meanwhile.
            heads: dict[str | None, Job] = {}
            for job in sorted(answers, key=lambda j: j.seq):
                heads.setdefault(job.room, job)
            ready = [j for j in heads.values() if j.not_before <= now]
            if ready:
                return min(ready, key=lambda j: j.seq), None
            answer_wait = min(j.not_before for j in heads.values()) - now
        other, wait = self._next_decoration(now, waiting_answers=bool(answers))
        if other is not None:
            return other, None
        if answer_wait is None:
            return None, wait
        return None, answer_wait if wait is None else min(wait, answer_wait)

    def _next_decoration(
        self, now: float, *, waiting_answers: bool
    ) -> tuple[Job | None, float | None]:
        """The progress edit or decoration to send now, else how long until one may go."""
        others = sorted(
            (j for j in self._jobs if j.kind is not Urgency.ANSWER),
            key=lambda j: (j.kind, j.seq),
        )
        if not others:
            return None, None
        if waiting_answers:
            # Answers that wait out a retry keep the budget's reserve, and the first claim
            # on it once they may go: only what an outage or a room's failure does not hold
            # (a step's status) goes meanwhile, within the reserve.
            others = [j for j in others if j.kind is Urgency.PROGRESS]
            if not others:
                return None, None
        held = self._hold() if self._hold is not None else 0.0
        if held > 0:
            # A step's status (the command now running) is the owner's view of what the
            # agent does, worth its event in a quick task too; reactions and redactions wait.
            others = [j for j in others if j.kind is Urgency.PROGRESS]
            if not others:
                return None, held
        ready = [j for j in others if j.not_before <= now]
        need = self._budget.reserve + 1.0
        if ready:
            wait = self._budget.seconds_until(need)
            if wait <= 0:
                return ready[0], None
            return None, wait
        until = min(j.not_before for j in others) - now
        return None, min(until, held) if held > 0 else until

    def _drop_stale(self, now: float) -> None:
        """Decorations that answers have kept waiting past DECORATION_STALE_S (not those an
        outage holds: they go once the homeserver is back)."""
        stale = [
            j
            for j in self._jobs
            if j.kind is Urgency.DECORATION
            and not j.unreachable
            and j is not self._current
            and now - j.queued_at > DECORATION_STALE_S
        ]
        for job in stale:
            self._drop(job, "stale")
        if stale:
            log.info("outbox.decorations_dropped", count=len(stale), waited_s=DECORATION_STALE_S)

    async def _send(self, job: Job) -> None:
        try:
            event_id = await job.perform()
        except TokenRejected as err:
            self._discard(job)
            if not job.done.done():
                job.done.set_exception(err)
            raise
        except RateLimited as err:
            self.rate_limited += 1
            if self._on_rate_limited is not None:
                self._on_rate_limited(self.rate_limited)
            self._budget.refused(err.retry_after_s)
            job.not_before, job.unreachable = self._clock() + err.retry_after_s, False
            log.warning("outbox.rate_limited", job=job.label, retry_in=round(err.retry_after_s, 2))
            return
        except RequestRefused as err:
            if err.code == "M_DUPLICATE_ANNOTATION":
                # An earlier attempt (perhaps from a device since replaced) got through.
                self._succeed(job, EventID(""))
                return
            self._refused(job, err)
            return
        except CannotSend as err:
            self._refused(job, err)
            return
        except HomeserverError as err:
            wait = job.backoff.next()
            job.not_before, job.unreachable = self._clock() + wait, True
            log.warning("outbox.retry", job=job.label, error=err.message, retry_in=wait)
            return
        self._budget.spend()
        self._succeed(job, event_id)

    def _refused(self, job: Job, err: HomeserverError) -> None:
        # Some refusals do not heal at all (the bot was removed from the room): that send
        # ends now. Others may (a room nio does not know yet appears with the next sync),
        # so they are retried a few times, holding back only their own room meanwhile.
        job.refusals += 1
        if is_final(err) or job.refusals > _MAX_REFUSALS:
            if job.kind is Urgency.ANSWER:
                log.error("outbox.undeliverable", job=job.label, room=job.room, error=err.message)
            else:
                log.info("outbox.not_sent", job=job.label, room=job.room, error=err.message)
            self._drop(job, "refused")
            if job.on_undeliverable is not None:
                job.on_undeliverable(err)
            return
        wait = job.backoff.next()
        job.not_before, job.unreachable = self._clock() + wait, False
        log.warning("outbox.refused", job=job.label, error=err.message, retry_in=wait)

    def _discard(self, job: Job) -> None:
        if job in self._jobs:
            self._jobs.remove(job)

    def _succeed(self, job: Job, event_id: EventID) -> None:
        self._discard(job)
        if not job.done.done():
            job.done.set_result(event_id)

    def _drop(self, job: Job, why: str) -> None:
        self._discard(job)
        self._finish_dropped(job, why)

    def _finish_dropped(self, job: Job, why: str) -> None:
        log.debug("outbox.not_sent", job=job.label, why=why)
        if job.on_dropped is not None:
            job.on_dropped()
        if not job.done.done():
            job.done.set_result(EventID(""))


class Ephemeral:
    """Typing, receipts and presence, sent by one background loop."""

    def __init__(self, client: MatrixClient, presence_every_s: float) -> None:
        self._client = client
        self._presence_every_s = presence_every_s
        self._typing: dict[RoomID, bool] = {}
        # Per room: the event to mark read, and its thread ("main": the main timeline).
        self._receipts: dict[RoomID, tuple[str, str]] = {}
        self._presence: str | None = None
        self._presence_sent: str | None = None
        self._presence_at = -presence_every_s
        self._wake = asyncio.Event()

    def typing(self, room_id: RoomID, on: bool) -> None:
        self._typing[room_id] = on
        self._wake.set()

    def read_receipt(self, room_id: RoomID, event_id: str, thread_id: str = "main") -> None:
        self._receipts[room_id] = (event_id, thread_id)
        self._wake.set()

    def presence(self, status: str) -> None:
        self._presence = status
        self._wake.set()

    async def run(self) -> None:
        """Send the latest wishes until cancelled."""
        while True:
            await self._drain()
            wait = self._presence_due_in()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _drain(self) -> None:
        while self._receipts:
            room_id, (event_id, thread_id) = self._receipts.popitem()
            await self._quietly("receipt", self._client.read_receipt(room_id, event_id, thread_id))
        while self._typing:
            room_id, on = self._typing.popitem()
            await self._quietly("typing", self._client.typing(room_id, on))
        if self._presence is not None and self._presence_due_in() is None:
            status, self._presence = self._presence, None
            if status != self._presence_sent:
                self._presence_at = time.monotonic()
                try:
                    await self._client.set_presence("online", status)
                    self._presence_sent = status
                except (RateLimited, Unreachable) as err:
                    log.debug("outbox.presence_later", error=err.message)
                    if self._presence is None:
                        self._presence = status
                except HomeserverError as err:
                    log.info("outbox.ephemeral_failed", what="presence", error=err.message)

    def _presence_due_in(self) -> float | None:
        """Seconds until a waiting presence update may go; None if it may go now or there
        is none (then only a new wish wakes the loop)."""
        if self._presence is None:
            return None
        left = self._presence_at + self._presence_every_s - time.monotonic()
        return left if left > 0 else None

    async def _quietly(self, what: str, call: Awaitable[None]) -> bool:
        try:
            await call
        except RateLimited:
            log.debug("outbox.skipped", what=what, reason="rate limited")
            return False
        except HomeserverError as err:
            log.info("outbox.ephemeral_failed", what=what, error=err.message)
            return False
        return True
