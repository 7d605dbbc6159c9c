"""Owners' events the trust gate could not judge yet: kept, judged again, in room order.

To judge an encrypted event the gate needs the sender's published keys; when the homeserver
fails that query (away, a 5xx) there is no verdict, only a `HomeserverError`. The event (a
message, a reaction or a poll vote: a ✅ or a vote may be the answer to an approval
question) is then neither dropped (the product's first promise: lose nothing) nor taken
unjudged: it is written to the ledger before its sync token is saved, and judged again at
each later sync until the gate can judge it, then settled like any event judged on time.

Room order is kept, one order per room whatever the kind: while an event of a room waits,
each later one of that room waits behind it without being judged, so none overtakes it (a
`!cancel` behind a waiting task means that task; a ✅ behind a waiting "!status" comes after
it). At each sync they are judged again in the order they came; a room whose oldest still
cannot be judged keeps all of its events waiting. The ledger keeps them across a restart;
what waits is also kept in memory (the rooms, loaded at start), so that while nothing waits
a sync costs nothing here.

An approval answered late is decided by the approvals as any answer: it counts only while its
question is still open (an expired question approves nothing).

An owner's file message the gate admitted whose file the homeserver could not hand over
for now (a 502, no answer: `fetching.py` sorts the failures) waits here too, in the same
room order, as a `FileWait`: it is fetched again at a later sync when its next try is due
(every try, the first included, runs beside the sync's handling, waited for
`fetching.TRY_INLINE_S` at most: one that hangs to the download's timeout holds only its own
room, and a first try still under way makes its file wait here like a failed one)
(the schedule is `fetching.after_failure`'s), the owner told once when it takes long, and
given up on, by name, only after a day. What acts on the task running now goes ahead of a
waiting file (an approval's answer, a stop command: the router's `_goes_ahead`), as the
download may fail for hours; behind an event waiting for the gate the order is kept. When
each next try is due is kept in memory only:
after a restart the first sync tries at once; when it began failing, and whether the owner
was told, are kept in the ledger.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.core.ids import EventID
from dispatch_matrix.matrix.fetching import (
    TRY_INLINE_S,
    FetchFailed,
    FileNotFetched,
    Next,
    after_failure,
)
from dispatch_matrix.matrix.inbound import Message, Reaction, Vote
from dispatch_matrix.matrix.polls import Ballot
from dispatch_matrix.store.matrix_tables import UnjudgedQueries

log = logs.get(__name__)

# What may wait for the gate: an owner's event whose verdict needs their keys.
Waiting = Message | Reaction | Vote

# The stored form: {"format": FORMAT, "kind": …, "event": the event's fields}. Format 1 (no
# envelope: a `Message`'s fields) is what was written while only messages could wait.
FORMAT = 2
_KINDS: dict[type[Waiting], str] = {Message: "message", Reaction: "reaction", Vote: "vote"}


@dataclass(frozen=True)
class FileWait:
    """An owner's file message the gate admitted, waiting for its file: `since`, when the
    homeserver first failed it (seconds since the epoch); `told`, whether the owner was
    told it is still being fetched."""

    message: Message
    since: float
    told: bool = False


def kind_of(item: Waiting) -> str:
    """The kind a waiting event is stored and logged as (`reaction.unjudged`, as the gate
    logs `reaction.ignored`)."""
    return _KINDS[type(item)]


def encode(item: Waiting) -> str:
    """An event as the ledger keeps it."""
    return json.dumps({"format": FORMAT, "kind": kind_of(item), "event": dataclasses.asdict(item)})


def encode_file(wait: FileWait) -> str:
    """A file message waiting for its file, as the ledger keeps it."""
    return json.dumps(
        {
            "format": FORMAT,
            "kind": "file",
            "event": dataclasses.asdict(wait.message),
            "since": wait.since,
            "told": wait.told,
        }
    )


def decode(raw: str) -> Waiting:
    """An event waiting for the gate as `encode` (or, for a message, format 1) kept it;
    ValueError for anything else (a file waiting, a form written by a newer version)."""
    item = decode_row(raw)
    if isinstance(item, FileWait):
        raise ValueError("a file waiting, not an event waiting for the gate")
    return item


def decode_row(raw: str) -> Waiting | FileWait:
    """What a row of the ledger holds (`encode`, `encode_file`); ValueError for a form this
    code does not know (written by a newer one)."""
    stored: dict[str, Any] = json.loads(raw)
    if "format" not in stored:
        # Format 1: a message's fields alone (a `Message` has no field named "format").
        return Message(**stored)
    if stored["format"] != FORMAT:
        raise ValueError(f"unknown unjudged format {stored['format']!r}")
    kind, fields = stored["kind"], dict(stored["event"])
    if kind == "file":
        return FileWait(Message(**fields), float(stored["since"]), bool(stored["told"]))
    if kind == "message":
        return Message(**fields)
    if kind == "reaction":
        return Reaction(**fields)
    if kind == "vote":
        ballot = fields.pop("ballot")
        return Vote(**fields, ballot=Ballot(EventID(ballot["poll"]), tuple(ballot["answers"])))
    raise ValueError(f"unknown unjudged kind {kind!r}")


class Unjudged:
    """The events waiting for the gate, and their next judgement."""

    def __init__(
        self,
        db: UnjudgedQueries,
        judge: Callable[[Waiting], Awaitable[bool]],
        settle: Callable[[Waiting, bool], Awaitable[None]],
        *,
        fetch: Callable[[Message], Coroutine[Any, Any, None]],
        tell: Callable[[FileWait, Next, HomeserverError], Awaitable[None]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        # The gate's verdict (raises HomeserverError while it cannot give one).
        self._judge = judge
        # What a judged event does, given its verdict (the router's, as if judged on time);
        # raises FileNotFetched for a file message whose file must wait.
        self._settle = settle
        # Takes an admitted file message's file again (`IncomingFiles.fetch`; raises
        # FileNotFetched while it still cannot), and tells its owner it still waits or was
        # given up on (`IncomingFiles.tell`).
        self._fetch = fetch
        self._tell = tell
        self._clock = clock
        # Files waiting: the tries of this run, and when the next one is due (in memory:
        # after a restart the first sync tries at once).
        self._tries: dict[str, int] = {}
        self._due: dict[str, float] = {}
        # Tries still under way, past the wait a sync's handling gives them (each file's
        # room keeps waiting until its try ends).
        self._trying: dict[str, asyncio.Task[None]] = {}
        # The rooms with an event waiting.
        self.rooms: set[str] = db.unjudged_rooms()

    def waits(self, room_id: str) -> bool:
        """Whether an event of this room waits (a later one must wait behind it)."""
        return room_id in self.rooms

    def file_first(self, room_id: str) -> bool:
        """Whether the oldest event waiting in this room is a file waiting for its download
        (not an event waiting for the gate)."""
        if room_id not in self.rooms:
            return False
        for _event_id, room, raw in self._db.unjudged():
            if room == room_id:
                try:
                    return isinstance(decode_row(raw), FileWait)
                except (ValueError, TypeError, KeyError):
                    return False
        return False

    def keep(self, item: Waiting, why: str) -> None:
        """Keep an event to judge at the next sync (committed before this returns)."""
        self._db.keep_unjudged(item.event_id, item.room_id, encode(item))
        self.rooms.add(item.room_id)
        log.warning(
            f"{kind_of(item)}.unjudged",
            room=item.room_id,
            event_id=item.event_id,
            why=why,
        )

    async def first_try(self, message: Message) -> None:
        """An admitted file message's first try, beside the sync's handling like every later
        one: waited for `TRY_INLINE_S` at most. One still under way then makes the file wait
        here, in its room's order, the try going on (a download that hangs holds no other
        room's answers, approvals or stop commands for its timeout). Raises
        `FileNotFetched` as `fetch` does when the try failed within the wait."""
        trying = asyncio.create_task(self._fetch(message), name=f"file-{message.event_id}")
        await asyncio.wait({trying}, timeout=TRY_INLINE_S)
        if trying.done():
            trying.result()
            return
        wait = FileWait(message, self._clock())
        self._db.keep_unjudged(message.event_id, message.room_id, encode_file(wait), replace=True)
        self.rooms.add(message.room_id)
        self._trying[message.event_id] = trying
        log.info("attachment.fetching_apart", room=message.room_id, event_id=message.event_id)

    def trying(self, event_id: str) -> bool:
        """Whether a try at this event's file is under way beside the syncs."""
        return event_id in self._trying

    async def wait_for_file(self, message: Message, err: HomeserverError) -> None:
        """An admitted file message whose file the homeserver failed for now: it waits, in
        its room's order (in its place, if it waited for the gate already), committed
        before this returns; later events of its room wait behind it."""
        wait = FileWait(message, self._clock())
        self._db.keep_unjudged(message.event_id, message.room_id, encode_file(wait), replace=True)
        self.rooms.add(message.room_id)
        log.warning(
            "attachment.waiting", room=message.room_id, event_id=message.event_id, error=err.message
        )
        if await self._failed(wait, err):
            self._db.judged(message.event_id)
            self.rooms = self._db.unjudged_rooms()

    async def _failed(self, wait: FileWait, err: HomeserverError) -> bool:
        """A try at a waiting file failed: when the next is due, and the owner told once when
        it takes long; whether it was given up on (then it waits no more)."""
        event_id = wait.message.event_id
        tries = self._tries.get(event_id, 0) + 1
        self._tries[event_id] = tries
        now = self._clock()
        retry_after = err.retry_after_s if isinstance(err, FetchFailed) else None
        decision = after_failure(tries, now - wait.since, wait.told, retry_after)
        if decision.next is Next.GIVE_UP:
            log.warning("attachment.given_up", event_id=event_id, tries=tries, error=err.message)
            self._forget_tries(event_id)
            await self._tell(wait, decision.next, err)
            return True
        if decision.next is Next.WAIT_AND_TELL:
            told = dataclasses.replace(wait, told=True)
            # Marked told first: a crash in between says nothing rather than twice.
            self._db.keep_unjudged(event_id, wait.message.room_id, encode_file(told), replace=True)
            await self._tell(wait, decision.next, err)
        self._due[event_id] = now + decision.wait_s
        log.info("attachment.retry_due", event_id=event_id, tries=tries, wait_s=decision.wait_s)
        return False

    def _forget_tries(self, event_id: str) -> None:
        self._tries.pop(event_id, None)
        self._due.pop(event_id, None)
        # A try under way for a file deleted meanwhile: its result is not wanted.
        trying = self._trying.pop(event_id, None)
        if trying is not None and not trying.done():
            trying.cancel()

    async def _file_again(self, wait: FileWait) -> bool:
        """Try a waiting file again when its try is due; whether it waits no more (taken,
        refused for good, or given up on)."""
        event_id = wait.message.event_id
        trying = self._trying.get(event_id)
        if trying is None:
            if self._due.get(event_id, 0.0) > self._clock():
                return False
            trying = asyncio.create_task(self._fetch(wait.message))
            self._trying[event_id] = trying
        # Not awaited whole: a download that hangs must not hold the sync's handling (every
        # other room's answers and approvals) until its timeout. Not cancelled either.
        await asyncio.wait({trying}, timeout=TRY_INLINE_S)
        if not trying.done():
            return False
        del self._trying[event_id]
        try:
            trying.result()
        except FileNotFetched as still:
            return await self._failed(wait, still.error)
        except Exception:
            # A bug, not the homeserver: tried again it would fail every sync, and hold
            # its room's later events for ever.
            log.exception("attachment.take_failed", event_id=event_id)
        else:
            log.info(
                "attachment.fetched_late", event_id=event_id, waited_s=self._clock() - wait.since
            )
        self._forget_tries(event_id)
        return True

    def deleted(self, event_id: str, room_id: str) -> None:
        """Its sender deleted an event: if it waits, it is dropped, never judged nor taken
        (as a deleted queued task is dropped)."""
        if room_id not in self.rooms or not self._db.forget_unjudged(event_id, room_id):
            return
        self.rooms = self._db.unjudged_rooms()
        self._forget_tries(event_id)
        log.info("unjudged.deleted", room=room_id, event_id=event_id)

    async def retry(self) -> None:
        """Judge the waiting events again, oldest first; a room whose event still cannot be
        judged keeps it and every later one of that room waiting."""
        stuck: set[str] = set()
        for event_id, room_id, raw in self._db.unjudged():
            if room_id in stuck:
                continue
            try:
                item = decode_row(raw)
            except (ValueError, TypeError, KeyError):
                # Written by a newer version (a downgrade): never judgeable here, and it
                # must not hold its room's later events for ever.
                log.exception("unjudged.undecodable", event_id=event_id)
                self._db.judged(event_id)
                continue
            if isinstance(item, FileWait):
                if await self._file_again(item):
                    self._db.judged(event_id)
                else:
                    stuck.add(room_id)
                continue
            try:
                admitted = await self._judge(item)
            except HomeserverError as err:
                stuck.add(room_id)
                log.info(
                    f"{kind_of(item)}.still_unjudged", event_id=item.event_id, error=err.message
                )
                continue
            except Exception:
                # A bug, not the homeserver: judged again it would fail every sync.
                log.exception(f"{kind_of(item)}.judge_failed", event_id=item.event_id)
                admitted = False
            try:
                # Settled before it stops waiting: a crash in between settles it again,
                # which the intake's event-id records and the approvals' single use make
                # harmless.
                await self._settle(item, admitted)
            except FileNotFetched as waits:
                # Judged, admitted, but its file must wait: it keeps its place.
                if isinstance(item, Message):
                    await self.wait_for_file(item, waits.error)
                    stuck.add(room_id)
                    continue
            except Exception:
                # As for any event (router): a bug in handling one must not stop the bot
                # hearing every later one.
                log.exception(f"{kind_of(item)}.take_failed", event_id=item.event_id)
            if item.event_id in self._trying:
                # Judged, admitted, its file's first try still under way: it keeps its
                # place until that try ends.
                stuck.add(room_id)
                continue
            self._db.judged(item.event_id)
            log.info(
                f"{kind_of(item)}.judged_late",
                event_id=item.event_id,
                admitted=admitted,
            )
        self.rooms = stuck
