"""What the router hands its items to: one small interface per receiver, implemented by the
package that owns the decision (the trust gate by `identity`, tasks by `queue`, voice by
`voice`). The router is given them at construction and imports none of those packages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.matrix.inbound import Invite, Message, Reaction, Vote
from dispatch_matrix.matrix.polls import Ballot

Commanding = Message | Reaction | Vote


class Gate(Protocol):
    """Who may command the bot (identity's `TrustGate`)."""

    # How many messages are held (an owner's identity changed): the router asks for their
    # release only while some are.
    holding: int

    def devices_changed(self, users: list[str]) -> None:
        """Some users' device lists changed: what was known of their keys is stale."""

    def invite_refusal(self, invite: Invite) -> str | None:
        """Why an invite is refused; None when the bot joins."""

    async def admit(self, event: Commanding, private: bool, *, explain: bool) -> bool:
        """Whether a trusted owner's event may command the bot (`private`: the room holds
        only the bot and owners). A refusal is logged; with `explain`, the owner is told
        why once (or the message is held, when their identity changed)."""

    async def release_held(
        self,
        route: Callable[[Message], Awaitable[None]],
        private: Callable[[RoomID], bool],
        *,
        devices_changed: bool,
    ) -> None:
        """Route (or name) the held messages whose sender is trusted again, when anything
        that could trust them happened (`devices_changed`: this sync changed device lists
        or cross-signing keys)."""


class Tasks(Protocol):
    """Where trusted owners' events become work or answers (the queue's `Intake`)."""

    async def message(
        self,
        event_id: EventID,
        room_id: RoomID,
        sender: UserID,
        body: str,
        origin_ts: int,
        reply_to: EventID | None = None,
        attachments: list[dict[str, object]] | None = None,
    ) -> None:
        """A new text message (or a file's caption) from an owner."""

    def goes_ahead(self, room_id: RoomID, body: str, reply_to: EventID | None) -> bool:
        """Whether an owner's text acts on what runs now (a stop command, an approval
        answer): not held behind a file of its room that waits for its download."""
        ...

    async def reaction(self, target_event_id: EventID, key: str, sender: UserID) -> None:
        """An owner's trusted reaction."""

    async def vote(
        self, room_id: RoomID, ballot: Ballot, sender: UserID, event_id: EventID
    ) -> None:
        """An owner's trusted poll vote."""

    async def plaintext_answer(self, room_id: RoomID, target: EventID, event_id: EventID) -> None:
        """An owner's unencrypted reaction or vote: never obeyed."""

    async def edit(self, target_event_id: EventID, body: str, edit_event_id: EventID) -> None:
        """The owner edited a message."""

    async def redacted(self, target_event_id: EventID) -> None:
        """The owner deleted a message."""

    async def malformed(self, event_id: EventID, room_id: RoomID) -> None:
        """A message that is not valid Matrix."""

    async def not_text(self, event_id: EventID, room_id: RoomID) -> None:
        """A message kind the bot cannot take as work."""


class VoiceLane(Protocol):
    """Where owners' voice messages go (voice's `VoiceInbox`); which message is one the
    router reads from the event (`Message.voice`)."""

    async def receive(self, message: Message) -> None:
        """A trusted owner's voice message."""

    async def redacted(self, event_id: str) -> None:
        """The owner deleted a message (a voice message not heard yet is dropped)."""
