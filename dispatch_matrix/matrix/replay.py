"""Replay protection for Megolm events that survives restarts.

Each Megolm message is encrypted at its own index of its session; the index travels inside
the ciphertext, under the session's signature. nio refuses a second event at an index it
has seen, but it remembers in memory only: after a restart a hostile homeserver can
re-inject an owner's old encrypted event under a new event id, and it decrypts, passes the
trust gate and becomes a task again (or a "yes" to a question pending now).

nio hands the index of each event it decrypts to `Olm.message_index_ok(index, event)` and
nowhere else (the decrypted event does not carry it). The guard takes over that check: the
first event id seen at every (sender key, session id, index) is committed to the ledger,
and an event with another id at a known index fails decryption, like a replay within one
run always did. The claims of one sync (a catch-up brings hundreds) are committed together
(`flush`), before the router acts on any of its events; until then the guard holds them.
The router drops a refused event without a word to anyone, before the trust gate: it is
neither a message nor an unreadable one.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from nio import MegolmEvent

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import DispatchError
from dispatch_matrix.store.matrix_tables import ReplayQueries

log = logs.get(__name__)

# Refused event ids remembered for the router (they come back as undecryptable events).
_REMEMBER = 10_000


class ReplayVerdict(enum.Enum):
    """What the ledger says about an event at a Megolm index."""

    # Nothing was seen at this index: the event is recorded there now.
    FIRST = "first"
    # The same event again (a re-read after a crash, a gap filled twice): harmless.
    SAME = "same event"
    # Another event at an index already used: a replay.
    REPLAYED = "another event already used this message index"
    # An event without an id cannot be told apart from a replay.
    NO_ID = "the event has no id"

    @property
    def allowed(self) -> bool:
        return self in (ReplayVerdict.FIRST, ReplayVerdict.SAME)


def judge_index(recorded: str | None, event_id: str) -> ReplayVerdict:
    """Whether an event may be decrypted, given the event id recorded at its index before
    (None when the index is new)."""
    if not event_id:
        return ReplayVerdict.NO_ID
    if recorded is None:
        return ReplayVerdict.FIRST
    if recorded == event_id:
        return ReplayVerdict.SAME
    return ReplayVerdict.REPLAYED


@dataclass(frozen=True)
class Replay:
    """A refused event and the one that first used its index."""

    event_id: str
    first_event_id: str


class ReplayUnguarded(DispatchError):
    """The crypto machine decrypting events is not the one the guard watches."""


class _Olm(Protocol):
    def message_index_ok(self, message_index: int, event: MegolmEvent) -> bool: ...


class ReplayGuard:
    """Records the index of every decrypted Megolm event; refuses replays."""

    def __init__(self, db: ReplayQueries) -> None:
        self._db = db
        self._guarded: Any = None
        self._refused: OrderedDict[str, Replay] = OrderedDict()
        # Indexes claimed and not yet committed: (sender key, session, index) → (event, room).
        self._claims: dict[tuple[str, str, int], tuple[str, str]] = {}

    def install(self, olm: _Olm) -> None:
        """Take over nio's (in-memory) check of message indexes on this crypto machine."""
        # nio calls this right after a successful decryption, before it parses the payload.
        olm.message_index_ok = self.message_index_ok  # type: ignore[method-assign]
        self._guarded = olm

    def ensure(self, olm: object | None) -> None:
        """Fail closed if events were decrypted by a machine the guard does not watch."""
        if olm is not None and olm is not self._guarded:
            raise ReplayUnguarded(
                "replay protection is not installed on the crypto machine in use",
                fix="this is a bug; restart dispatch-matrix and report it",
            )

    def message_index_ok(self, message_index: int, event: MegolmEvent) -> bool:
        """nio's hook: True lets the decryption finish; False makes it a failure."""
        if event.sender and event.sender == getattr(self._guarded, "user_id", None):
            # The bot's own events (each answer comes back in the next sync) are never
            # acted on, so their indexes need no record.
            return True
        event_id = str(event.event_id or "")
        recorded: str | None = None
        if event_id:
            index = (str(event.sender_key), str(event.session_id), message_index)
            held = self._claims.get(index)
            recorded = held[0] if held is not None else self._db.megolm_index(*index)
            if recorded is None:
                self._claims[index] = (event_id, str(getattr(event, "room_id", "") or ""))
        verdict = judge_index(recorded, event_id)
        if verdict.allowed:
            return True
        self._refused[event_id] = Replay(event_id, recorded or "")
        while len(self._refused) > _REMEMBER:
            self._refused.popitem(last=False)
        log.warning(
            "message.replayed",
            room=getattr(event, "room_id", None),
            event_id=event_id,
            sender=event.sender,
            first_event_id=recorded,
            session=event.session_id,
            index=message_index,
            reason=verdict.value,
        )
        return False

    def flush(self) -> None:
        """Commit the indexes claimed since the last flush, in one transaction. Called
        before any event they belong to has an effect: an event acted on is never one
        whose index a crash could forget."""
        if self._claims:
            claims = [(*index, *held) for index, held in self._claims.items()]
            self._db.record_megolm_indexes(claims)
            self._claims.clear()

    def refused(self, event_id: str) -> Replay | None:
        """The replay this event was, if the guard refused it."""
        return self._refused.get(event_id)
