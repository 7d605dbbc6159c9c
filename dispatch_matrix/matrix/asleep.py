"""The phone knows when the computer is asleep or gone: a dead man's switch on the
homeserver (MSC4140 delayed events).

While the bot runs it keeps, in each owner's DM, one notice scheduled on the homeserver,
encrypted when scheduled, and pushes its timer back well inside the delay. If the computer
sleeps, crashes or loses the network, nobody pushes it back and the homeserver posts it by
itself. A clean stop cancels it and says "stopped" instead. When the bot finds that the
notice went out (at the next start, or when a paused process wakes and the restart is
refused), it says it is back, for how long it was away and how much is queued, and redacts
the asleep notice, so the timeline does not fill with pairs.

Costs: scheduling is one request under the homeserver's message limit (once per room per
run, and again after it fired); a restart is no room event and has its own limit
(Synapse: 1/s, burst 5). A homeserver without delayed events (or with them off) is found at
the first try: logged once, and the bot goes on without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.core.ids import EventID, RoomID
from dispatch_matrix.matrix import texts
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.failures import CannotSend, RateLimited, RequestRefused, Unreachable
from dispatch_matrix.matrix.outbox import Outbox, text_content
from dispatch_matrix.matrix.sender import Job, Urgency
from dispatch_matrix.store import LedgerQueries, TaskState

log = logs.get(__name__)

# The ledger's record of each room's scheduled notice: present while one is scheduled and
# the bot has not stopped cleanly.
_RECORD = "asleep:"
# Whether the homeserver took delayed events at the last try: "yes" or "no: <why>"
# (`doctor` reads it).
SUPPORT_META = "asleep_support"
# How far back the fired notice is looked for in the room.
_LOOK_BACK = 100


@dataclass(frozen=True)
class Scheduled:
    """One room's scheduled notice."""

    delay_id: str
    # The end of its ciphertext: how the posted event is found again (nothing else in the
    # room has it), without decrypting our own messages.
    mark: str
    # When its timer was last pushed back (epoch ms): the computer was alive then.
    alive_ms: int

    def to_json(self) -> str:
        """The ledger's form."""
        return json.dumps({"delay_id": self.delay_id, "mark": self.mark, "alive_ms": self.alive_ms})

    @classmethod
    def from_json(cls, text: str | None) -> Scheduled | None:
        """The record back from the ledger; None when there is none (or it is unreadable)."""
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(str(data["delay_id"]), str(data["mark"]), int(data["alive_ms"]))
        except (ValueError, KeyError, TypeError):
            return None


def fired(status: int, errcode: str) -> bool:
    """Whether a restart or cancel answer means the notice is no longer scheduled (it went
    out, or the homeserver lost it) (pure)."""
    return status == 404 or errcode == "M_NOT_FOUND"


def find_posted(events: list[dict[str, Any]], sender: str, mark: str) -> EventID | None:
    """The posted notice among a room's events: ours, encrypted, with its ciphertext (pure)."""
    if not mark:
        return None
    for event in events:
        content = event.get("content") or {}
        ciphertext = content.get("ciphertext")
        if (
            event.get("sender") == sender
            and event.get("type") == "m.room.encrypted"
            and isinstance(ciphertext, str)
            and ciphertext.endswith(mark)
        ):
            return EventID(str(event.get("event_id", "")))
    return None


def minutes(seconds: float) -> str:
    """5 min, 1 h 30 min, 10 s: a delay as the notice says it."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    hours, rest = divmod(seconds // 60, 60)
    return f"{hours} h {rest} min" if hours and rest else f"{hours} h" if hours else f"{rest} min"


def doctor_line(enabled: bool, support: str | None) -> tuple[bool, str, str]:
    """`doctor`'s line from what the daemon found at its last run: (ok, what, fix) (pure)."""
    if not enabled:
        return (True, "asleep notice: off (matrix.asleep_notice = false)", "")
    if not support:
        return (
            True,
            "asleep notice: not tried yet (the bot tries delayed events when it runs)",
            "",
        )
    if support == "yes":
        return (True, "asleep notice: the homeserver schedules delayed events (MSC4140)", "")
    return (
        False,
        "asleep notice: the homeserver refused delayed events "
        f"({support.removeprefix('no: ')}); the phone is not told when the computer sleeps",
        "on Synapse, set `max_event_delay_duration: 24h` in homeserver.yaml and restart it; "
        "or set [matrix] asleep_notice = false",
    )


# How long a clean stop waits for a notice being scheduled (one request) before cancelling.
_IN_FLIGHT_WAIT_S = 3.0


class AsleepNotice:
    """Keeps each owner room's asleep notice scheduled; says "back" and "stopped"."""

    def __init__(
        self,
        client: MatrixClient,
        db: LedgerQueries,
        outbox: Outbox,
        rooms: Callable[[], list[RoomID]],
        *,
        delay_s: float,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._client = client
        self._db = db
        self._outbox = outbox
        self._rooms = rooms
        self._delay_ms = int(delay_s * 1000)
        # Well inside the delay: two restarts may fail before the notice goes out wrongly.
        self._every_s = delay_s / 3
        self._now_ms = now_ms
        self._armed: dict[RoomID, Scheduled] = {}
        # Schedules the sender is performing: a stop waits for them, so a notice the
        # homeserver accepted just as the daemon stopped is cancelled too, not left to fire.
        self._in_flight: set[asyncio.Future[None]] = set()
        self.unsupported: str | None = None

    async def run(self, ready: asyncio.Event) -> None:
        """Schedule, then push back, until cancelled (after `ready`: the first sync)."""
        await ready.wait()
        while self.unsupported is None:
            rooms = self._rooms()
            for room_id in [r for r in self._armed if r not in rooms]:
                # No longer a room the bot works in (someone joined, the bot left): its
                # notice would tell them, or nobody, so it is cancelled.
                await self._forget(room_id)
            for room_id in rooms:
                if self.unsupported is not None:
                    break
                try:
                    if room_id in self._armed:
                        await self._restart(room_id)
                    else:
                        await self._arm(room_id)
                except (HomeserverError, OSError) as err:
                    # The homeserver away a moment: the next round tries again.
                    log.warning("asleep.retry", room=room_id, error=str(err))
            await asyncio.sleep(self._every_s)

    async def stop(self) -> None:
        """A clean stop: cancel each scheduled notice and say "stopped" instead."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=_IN_FLIGHT_WAIT_S)
        for room_id, scheduled in list(self._armed.items()):
            with contextlib.suppress(HomeserverError, OSError):
                status, code = await self._client.update_delayed(scheduled.delay_id, "cancel")
                if status == 200 or fired(status, code):
                    self._db.set_meta(_RECORD + room_id, "")
                    if status == 200:
                        txn = f"dm-{self._db.instance_id()}-stopped.{scheduled.delay_id}"
                        await self._client.send(
                            room_id,
                            "m.room.message",
                            text_content(texts.STOPPED, notice=True),
                            txn,
                        )
                log.info("asleep.cancelled", room=room_id, status=status)
        self._armed.clear()

    async def _forget(self, room_id: RoomID) -> None:
        scheduled = self._armed.pop(room_id)
        try:
            status, _code = await self._client.update_delayed(scheduled.delay_id, "cancel")
        except (HomeserverError, OSError) as err:
            log.warning("asleep.cancel_failed", room=room_id, error=str(err))
            return
        self._db.set_meta(_RECORD + room_id, "")
        log.info("asleep.cancelled", room=room_id, status=status, why="room left")

    async def _arm(self, room_id: RoomID) -> None:
        left = Scheduled.from_json(self._db.get_meta(_RECORD + room_id))
        if left is not None:
            # A run that did not stop cleanly: its notice is still scheduled, or went out.
            status, code = await self._client.update_delayed(left.delay_id, "cancel")
            if fired(status, code):
                await self._back(room_id, left)
            elif status == 200:
                # Back within the delay: nothing was posted, nothing to say.
                self._db.set_meta(_RECORD + room_id, "")
            else:
                log.warning("asleep.cancel_refused", room=room_id, status=status, code=code)
                return
        content = text_content(texts.asleep(minutes(self._delay_ms / 1000)), notice=True)
        outcome = await self._schedule(room_id, content)
        if outcome is None:
            return
        if isinstance(outcome, HomeserverError):
            # No such endpoint, or delayed events off: said once; the bot goes on without.
            err = outcome
            code = err.code if isinstance(err, RequestRefused) else ""
            self.unsupported = err.message
            self._db.set_meta(SUPPORT_META, "no: " + err.message)
            log.warning("asleep.unsupported", error=err.message, code=code)
            return
        # Recorded by `_armed_now` in the sender's task, the moment the homeserver took it.

    def _armed_now(self, room_id: RoomID, delay_id: str, sent: dict[str, Any]) -> None:
        """The homeserver scheduled the notice: recorded at once, in the sender's task, so
        that a stop (or a crash) that came while `_arm` waited for it still finds it."""
        mark = str(sent.get("ciphertext", ""))[-32:]
        scheduled = Scheduled(delay_id, mark, self._now_ms())
        self._armed[room_id] = scheduled
        self._db.set_meta(_RECORD + room_id, scheduled.to_json())
        self._db.set_meta(SUPPORT_META, "yes")
        log.info("asleep.scheduled", room=room_id, delay_ms=self._delay_ms)

    async def _schedule(
        self, room_id: RoomID, content: dict[str, Any]
    ) -> tuple[str, dict[str, Any]] | HomeserverError | None:
        """Schedule the notice as a decoration: it costs a request under the homeserver's
        message limit, so it goes only while the budget leaves room for the next answer.
        Returns (delay id, content sent), the refusal that means "not supported", or None
        (not sent this time: the next round tries again)."""
        outcome: list[tuple[str, dict[str, Any]] | HomeserverError] = []
        txn = f"dm-{self._db.instance_id()}-asleep.{self._now_ms()}"

        loop = asyncio.get_running_loop()
        settled: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not settled.done():
                settled.set_result(None)
            self._in_flight.discard(settled)

        async def perform() -> EventID:
            try:
                scheduled = await self._client.send_delayed(
                    room_id, "m.room.message", content, txn, self._delay_ms
                )
                self._armed_now(room_id, *scheduled)
                outcome.append(scheduled)
            except (RateLimited, Unreachable, CannotSend):
                raise
            except HomeserverError as err:
                outcome.append(err)
            finally:
                settle()
            return EventID("")

        job = Job(
            Urgency.DECORATION,
            perform,
            loop.create_future(),
            f"asleep notice {room_id}",
            room=room_id,
            on_dropped=settle,
        )
        self._in_flight.add(settled)
        try:
            await self._outbox.sender.submit(job)
        finally:
            if job.done.done() and not settled.done():
                settle()
        return outcome[0] if outcome else None

    async def _restart(self, room_id: RoomID) -> None:
        scheduled = self._armed[room_id]
        status, code = await self._client.update_delayed(scheduled.delay_id, "restart")
        if status == 200:
            alive = Scheduled(scheduled.delay_id, scheduled.mark, self._now_ms())
            self._armed[room_id] = alive
            self._db.set_meta(_RECORD + room_id, alive.to_json())
        elif fired(status, code):
            # The process was paused (a sleeping laptop, SIGSTOP) past the delay: the
            # notice went out; say we are back and schedule a new one.
            del self._armed[room_id]
            await self._arm(room_id)
        else:
            log.warning("asleep.restart_refused", room=room_id, status=status, code=code)

    async def _back(self, room_id: RoomID, left: Scheduled) -> None:
        """The notice went out: say we are back, and redact it."""
        self._db.set_meta(_RECORD + room_id, "")
        away = max(0, self._now_ms() - left.alive_ms) / 1000
        queued = len(self._db.tasks_in(TaskState.QUEUED, TaskState.INTERRUPTED, limit=100_000))
        await self._outbox.post(
            room_id,
            texts.back(minutes(away), queued),
            notice=True,
            key=f"back.{left.delay_id}",
        )
        posted = await self._find(room_id, left.mark)
        if posted is not None:
            await self._outbox.redact(room_id, posted, key=f"asleep-gone.{left.delay_id}")
        log.info("asleep.back", room=room_id, away_s=int(away), found=posted is not None)

    async def _find(self, room_id: RoomID, mark: str) -> EventID | None:
        path = (
            "/_matrix/client/v3/rooms/"
            + urllib.parse.quote(room_id, safe="")
            + f"/messages?dir=b&limit={_LOOK_BACK}"
        )
        status, reply = await self._client.api("GET", path)
        if status != 200:
            return None
        chunk = reply.get("chunk")
        return find_posted(chunk if isinstance(chunk, list) else [], self._client.user_id, mark)
