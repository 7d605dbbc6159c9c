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
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import Any

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.core.ids import EventID
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


def kind_of(item: Waiting) -> str:
    """The kind a waiting event is stored and logged as (`reaction.unjudged`, as the gate
    logs `reaction.ignored`)."""
    return _KINDS[type(item)]


def encode(item: Waiting) -> str:
    """An event as the ledger keeps it."""
    return json.dumps({"format": FORMAT, "kind": kind_of(item), "event": dataclasses.asdict(item)})


def decode(raw: str) -> Waiting:
    """An event as `encode` (or, for a message, format 1) kept it; ValueError for a form
    this code does not know (written by a newer one)."""
    stored: dict[str, Any] = json.loads(raw)
    if "format" not in stored:
        # Format 1: a message's fields alone (a `Message` has no field named "format").
        return Message(**stored)
    if stored["format"] != FORMAT:
        raise ValueError(f"unknown unjudged format {stored['format']!r}")
    kind, fields = stored["kind"], dict(stored["event"])
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
    ) -> None:
        self._db = db
        # The gate's verdict (raises HomeserverError while it cannot give one).
        self._judge = judge
        # What a judged event does, given its verdict (the router's, as if judged on time).
        self._settle = settle
        # The rooms with an event waiting.
        self.rooms: set[str] = db.unjudged_rooms()

    def waits(self, room_id: str) -> bool:
        """Whether an event of this room waits (a later one must wait behind it)."""
        return room_id in self.rooms

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

    def deleted(self, event_id: str, room_id: str) -> None:
        """Its sender deleted an event: if it waits, it is dropped, never judged nor taken
        (as a deleted queued task is dropped)."""
        if room_id not in self.rooms or not self._db.forget_unjudged(event_id, room_id):
            return
        self.rooms = self._db.unjudged_rooms()
        log.info("unjudged.deleted", room=room_id, event_id=event_id)

    async def retry(self) -> None:
        """Judge the waiting events again, oldest first; a room whose event still cannot be
        judged keeps it and every later one of that room waiting."""
        stuck: set[str] = set()
        for event_id, room_id, raw in self._db.unjudged():
            if room_id in stuck:
                continue
            try:
                item = decode(raw)
            except (ValueError, TypeError, KeyError):
                # Written by a newer version (a downgrade): never judgeable here, and it
                # must not hold its room's later events for ever.
                log.exception("unjudged.undecodable", event_id=event_id)
                self._db.judged(event_id)
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
            except Exception:
                # As for any event (router): a bug in handling one must not stop the bot
                # hearing every later one.
                log.exception(f"{kind_of(item)}.take_failed", event_id=item.event_id)
            self._db.judged(item.event_id)
            log.info(
                f"{kind_of(item)}.judged_late",
                event_id=item.event_id,
                admitted=admitted,
            )
        self.rooms = stuck
