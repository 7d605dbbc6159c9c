"""What a /sync brought, as typed values: invites, messages, and what could not be read;
and, for the parts that are not on every message's way, its news (`SyncNews`: changed
device lists and room states, gapped timelines, arrived room keys).

A pure translation of nio's SyncResponse; deciding what to do with each is elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nio import (
    BadEvent,
    Event,
    ForwardedRoomKeyEvent,
    InviteMemberEvent,
    MegolmEvent,
    ReactionEvent,
    RedactionEvent,
    RoomKeyEvent,
    RoomMessage,
    RoomMessageText,
    SyncResponse,
    UnknownEvent,
)

from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.matrix.polls import Ballot, read_ballot

# The msgtype given to a message event that does not match the spec's schema.
MALFORMED = "dispatch.malformed"
# MSC3245 marks a recorded voice message; MSC1767's audio block carries its duration and
# waveform. Element sends both on every voice message.
VOICE_FLAG = "org.matrix.msc3245.voice"
AUDIO_BLOCK = "org.matrix.msc1767.audio"


@dataclass(frozen=True)
class Invite:
    """Someone invited the bot to a room."""

    room_id: RoomID
    inviter: UserID


@dataclass(frozen=True)
class Message:
    """A text message in a joined room, decrypted if it was encrypted."""

    room_id: RoomID
    event_id: EventID
    sender: UserID
    body: str
    origin_ts: int
    was_encrypted: bool
    sender_key: str | None
    # The event this one edits (m.replace); `body` is then the new text.
    replaces: EventID | None = None
    msgtype: str = "m.text"
    content: dict[str, Any] | None = None
    reply_to: EventID | None = None
    # The root of the thread this was written in (m.thread); None: the main timeline.
    thread_root: EventID | None = None

    @property
    def voice(self) -> bool:
        """Whether this is a recorded voice message (`m.audio` with the MSC3245 voice flag
        or the MSC1767 audio block), not an audio file to keep."""
        if self.msgtype != "m.audio" or self.content is None:
            return False
        return VOICE_FLAG in self.content or AUDIO_BLOCK in self.content


@dataclass(frozen=True)
class Reaction:
    """An emoji annotation of an event, decrypted if it was encrypted."""

    room_id: RoomID
    event_id: EventID
    sender: UserID
    reacts_to: EventID
    key: str
    was_encrypted: bool
    sender_key: str | None


@dataclass(frozen=True)
class Vote:
    """A poll response (MSC3381, stable or unstable), decrypted if it was encrypted."""

    room_id: RoomID
    event_id: EventID
    sender: UserID
    ballot: Ballot
    was_encrypted: bool
    sender_key: str | None


@dataclass(frozen=True)
class Redaction:
    """Someone deleted an event."""

    room_id: RoomID
    event_id: EventID
    sender: UserID
    redacts: EventID


@dataclass(frozen=True)
class Unreadable:
    """An encrypted event we hold no key for (yet), with its wire form to retry later."""

    room_id: RoomID
    event_id: EventID
    sender: UserID
    origin_ts: int
    session_id: str
    source: dict[str, Any]


Inbound = Invite | Message | Unreadable | Redaction | Reaction | Vote


def read_sync(response: SyncResponse, me: str) -> list[Inbound]:
    """The invites and timeline messages of one sync, in room and timeline order."""
    found: list[Inbound] = []
    for room_id, info in response.rooms.invite.items():
        for event in info.invite_state:
            if (
                isinstance(event, InviteMemberEvent)
                and event.state_key == me
                and event.membership == "invite"
            ):
                found.append(Invite(RoomID(room_id), UserID(event.sender)))
                break
    for room_id, info in response.rooms.join.items():
        for event in info.timeline.events:
            if event.sender == me:
                continue
            item = from_event(RoomID(room_id), event)
            if item is not None:
                found.append(item)
    return found


def from_event(
    room_id: RoomID, event: Event
) -> Message | Unreadable | Redaction | Reaction | Vote | None:
    """A timeline event as a typed value; None for what we do not act on."""
    if isinstance(event, RoomMessage):
        content = event.source.get("content", {})
        relation = content.get("m.relates_to") or {}
        replaces = None
        body = event.body if isinstance(event, RoomMessageText) else ""
        if relation.get("rel_type") == "m.replace":
            replaces = EventID(str(relation.get("event_id", "")))
            new = content.get("m.new_content") or {}
            body = str(new.get("body", body))
        elif reply_target(relation) is not None:
            body = strip_reply_fallback(body)
        return Message(
            room_id=room_id,
            event_id=EventID(event.event_id),
            sender=UserID(event.sender),
            body=body,
            origin_ts=int(event.server_timestamp),
            was_encrypted=bool(event.decrypted),
            sender_key=event.sender_key if event.decrypted else None,
            replaces=replaces,
            msgtype=str(content.get("msgtype", "m.text")),
            content=dict(content),
            reply_to=reply_target(relation),
            thread_root=thread_root_of(relation),
        )
    if isinstance(event, ReactionEvent):
        return Reaction(
            room_id=room_id,
            event_id=EventID(event.event_id),
            sender=UserID(event.sender),
            reacts_to=EventID(event.reacts_to),
            key=event.key,
            was_encrypted=bool(event.decrypted),
            sender_key=event.sender_key if event.decrypted else None,
        )
    if isinstance(event, UnknownEvent):
        ballot = read_ballot(event.type, event.source.get("content") or {})
        if ballot is None:
            return None
        return Vote(
            room_id=room_id,
            event_id=EventID(event.event_id),
            sender=UserID(event.sender),
            ballot=ballot,
            was_encrypted=bool(event.decrypted),
            sender_key=event.sender_key if event.decrypted else None,
        )
    if isinstance(event, BadEvent) and event.source.get("type") == "m.room.message":
        # A message that fails the spec's schema: still an owner's word, answered, not dropped.
        return Message(
            room_id=room_id,
            event_id=EventID(event.event_id),
            sender=UserID(event.sender),
            body="",
            origin_ts=int(event.server_timestamp),
            was_encrypted=bool(event.decrypted),
            sender_key=event.sender_key if event.decrypted else None,
            msgtype=MALFORMED,
            content=dict(event.source.get("content") or {}),
        )
    if isinstance(event, MegolmEvent):
        return Unreadable(
            room_id=room_id,
            event_id=EventID(event.event_id),
            sender=UserID(event.sender),
            origin_ts=int(event.server_timestamp),
            session_id=event.session_id,
            source=dict(event.source),
        )
    if isinstance(event, RedactionEvent):
        return Redaction(
            room_id, EventID(event.event_id), UserID(event.sender), EventID(event.redacts)
        )
    return None


def strip_reply_fallback(body: str) -> str:
    """A reply's own text without the quote of what it replies to (pure).

    Clients before Matrix 1.13 began a reply's body with the replied-to message quoted
    (`> <@user:server> text`, one `> ` line each, then a blank line), and its HTML with an
    `<mx-reply>` block; newer clients send neither. Only that leading quote goes: a `>` line
    the owner wrote later in their text is theirs.
    """
    lines = body.split("\n")
    if not lines or not lines[0].startswith("> <"):
        return body
    end = 0
    while end < len(lines) and lines[end].startswith(">"):
        end += 1
    if end < len(lines) and not lines[end].strip():
        end += 1
    return "\n".join(lines[end:])


def reply_target(relation: dict[str, Any]) -> EventID | None:
    """The event an `m.relates_to` replies to; None when it is no reply (pure)."""
    if relation.get("rel_type") == "m.thread" and relation.get("is_falling_back", False):
        # A thread's fallback names the thread's last event so that clients without threads
        # show something; the owner did not reply to it.
        return None
    target = (relation.get("m.in_reply_to") or {}).get("event_id")
    return EventID(str(target)) if target else None


def thread_root_of(relation: dict[str, Any]) -> EventID | None:
    """The root of the thread an `m.relates_to` puts its event in; None: none (pure)."""
    if relation.get("rel_type") != "m.thread":
        return None
    root = relation.get("event_id")
    return EventID(str(root)) if isinstance(root, str) and root else None


@dataclass(frozen=True)
class SyncNews:
    """What one sync brought for the parts that are not on every message's way."""

    # Users whose device lists or cross-signing keys changed.
    devices_changed: tuple[str, ...] = ()
    # Joined rooms whose state (members, encryption, …) this sync carries.
    rooms_changed: tuple[str, ...] = ()
    # Joined rooms whose timeline has a gap: room → the token to read back from.
    gapped: dict[str, str] = field(default_factory=dict)
    # Room keys arrived (to-device, sent or forwarded): waiting events may decrypt now.
    room_keys: bool = False


def news_of(response: SyncResponse, *, first: bool) -> SyncNews:
    """What `response` brought (pure); `first`: the first sync of a run, which carries every
    room's full state (each joined room counts as changed)."""
    rooms = response.rooms.join
    changed = tuple(
        room_id
        for room_id, info in rooms.items()
        if first or info.state or any(_is_state(event) for event in info.timeline.events)
    )
    gapped = {
        room_id: info.timeline.prev_batch
        for room_id, info in rooms.items()
        if info.timeline.limited and info.timeline.prev_batch
    }
    keys = any(
        isinstance(event, RoomKeyEvent | ForwardedRoomKeyEvent)
        for event in response.to_device_events
    )
    return SyncNews(
        devices_changed=tuple(response.device_list.changed),
        rooms_changed=changed,
        gapped=gapped,
        room_keys=keys,
    )


def _is_state(event: object) -> bool:
    source = getattr(event, "source", None)
    return isinstance(source, dict) and "state_key" in source
