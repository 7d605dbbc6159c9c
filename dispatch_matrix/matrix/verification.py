"""In-room key verification events as a sync brings them: found, typed, grouped by flow.

nio knows none of them as room events, so they are read from each event's `source`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nio import MegolmEvent, SyncResponse

from .. import logs
from ..ids import RoomID
from . import sas

log = logs.get(__name__)


@dataclass(frozen=True)
class VerificationEvent:
    """An in-room verification event from a sync, decrypted if it was encrypted."""

    room_id: RoomID
    event_id: str
    sender: str
    type: str  # sas.REQUEST for the request message, else one of sas.FLOW_TYPES
    content: dict[str, Any] = field(hash=False)
    origin_ts: int = 0

    @property
    def flow_id(self) -> str | None:
        """The id of the request this event belongs to."""
        if self.type == sas.REQUEST:
            return self.event_id
        relation = self.content.get("m.relates_to")
        if isinstance(relation, dict) and relation.get("rel_type") == "m.reference":
            event_id = relation.get("event_id")
            return event_id if isinstance(event_id, str) else None
        return None


def verification_events(response: SyncResponse) -> list[VerificationEvent]:
    """The verification events of one sync, in room and timeline order.

    nio knows none of them as room events: a request is a `RoomMessageUnknown` (or a
    `BadEvent` without a body), the rest `UnknownEvent`s; decrypted or not, the event's
    `source` holds the plaintext type and content, so that is what is read.
    """
    found = []
    for room_id, info in response.rooms.join.items():
        for event in info.timeline.events:
            source = getattr(event, "source", None)
            if isinstance(event, MegolmEvent) or not isinstance(source, dict):
                continue
            event_type, content = source.get("type"), source.get("content")
            if not isinstance(content, dict):
                continue
            if event_type == sas.ROOM_MESSAGE and content.get("msgtype") == sas.REQUEST:
                event_type = sas.REQUEST
            elif event_type not in sas.FLOW_TYPES:
                continue
            found.append(
                VerificationEvent(
                    RoomID(room_id),
                    event.event_id,
                    event.sender,
                    str(event_type),
                    content,
                    int(event.server_timestamp),
                )
            )
            log.debug(
                "pairing.event",
                type=event_type,
                nio=type(event).__name__,
                encrypted=bool(getattr(event, "decrypted", False)),
                sender=event.sender,
            )
    return found


def fresh_requests(events: list[VerificationEvent], since_ms: int) -> list[VerificationEvent]:
    """Requests sent since `since_ms` that nobody has answered, cancelled or finished."""
    answered = {e.flow_id for e in events if e.type != sas.REQUEST}
    return [
        e
        for e in events
        if e.type == sas.REQUEST and e.origin_ts >= since_ms and e.event_id not in answered
    ]
