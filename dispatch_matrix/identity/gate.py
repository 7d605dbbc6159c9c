"""The trust gate at work: the router's `Gate`. Judges each owner event with the pure
decision in `trust.py` against the sender device's standing (`identities.py`), logs every
refusal with its reason, tells the owner once why they were not obeyed, and holds the
messages of an owner whose identity changed (`held.py`) until it is trusted again."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from dispatch_matrix.core import logs
from dispatch_matrix.core.ids import RoomID
from dispatch_matrix.identity import texts
from dispatch_matrix.identity.held import HeldMessages
from dispatch_matrix.identity.identities import Identities
from dispatch_matrix.identity.side_notice import send_readable_by
from dispatch_matrix.identity.tables import IdentityTables
from dispatch_matrix.identity.trust import DeviceTrust, may_command, may_join
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.inbound import Invite, Message, Reaction, Vote
from dispatch_matrix.matrix.outbox import Outbox

log = logs.get(__name__)


class TrustGate:
    """Who may command the bot, with what the owner is told when refused."""

    def __init__(
        self,
        client: MatrixClient,
        tables: IdentityTables,
        identities: Identities,
        outbox: Outbox,
        *,
        owners: frozenset[str],
        require_cross_signed: bool,
    ) -> None:
        self._tables = tables
        self._identities = identities
        self._outbox = outbox
        self._owners = owners
        self._require_cross_signed = require_cross_signed
        # Messages from an owner's identity not trusted yet: held, then run once trusted.
        self._held = HeldMessages(
            tables,
            identities,
            lambda room, content, devices: send_readable_by(client, room, content, devices),
            lambda room, text: outbox.post(room, text, notice=True),
        )
        # How many messages are held (the router asks for a release only while some are).
        self.holding = self._held.count
        # The owners' key fetches counted at the last release: a fresh fetch since may
        # change a held message's standing.
        self._fetches = identities.fetches

    def devices_changed(self, users: list[str]) -> None:
        """Some users' device lists changed: their keys are fetched afresh when next needed."""
        self._identities.forget(users)

    def invite_refusal(self, invite: Invite) -> str | None:
        """Why an invite is refused (only an owner's is taken); None when the bot joins."""
        verdict = may_join(invite, self._owners)
        return None if verdict.allowed else verdict.reason

    async def admit(
        self, event: Message | Reaction | Vote, private: bool, *, explain: bool
    ) -> bool:
        """Whether an event may command the bot; a refusal is logged with its reason and,
        with `explain`, told to the owner once (a message under a changed identity is held)."""
        device: DeviceTrust | None = None
        if event.was_encrypted and event.sender in self._owners:
            device = await self._identities.judge(event.sender, event.sender_key)
        verdict = may_command(event, self._owners, device, private, self._require_cross_signed)
        if verdict.allowed:
            return True
        kind = {Reaction: "reaction", Vote: "vote"}.get(type(event), "message")
        log.info(
            f"{kind}.ignored",
            room=event.room_id,
            event_id=event.event_id,
            sender=event.sender,
            reason=verdict.reason,
        )
        if explain and not isinstance(event, Reaction):
            await self._explain(event, device, private)
        return False

    async def release_held(
        self,
        route: Callable[[Message], Awaitable[None]],
        private: Callable[[RoomID], bool],
        *,
        devices_changed: bool,
    ) -> None:
        """Route (or name) the held messages whose sender's identity is trusted again; each
        is judged afresh, its device and its room as they are now. Only when something that
        could trust them happened (`held.release_due`): this sync changed device lists or
        cross-signing keys (`devices_changed`), owners' keys were fetched afresh, a held
        sender's pin changed, or the oldest outgrew its day."""

        def allowed(message: Message, device: DeviceTrust | None) -> bool:
            return may_command(
                message,
                self._owners,
                device,
                private(message.room_id),
                self._require_cross_signed,
            ).allowed

        fetched = self._identities.fetches != self._fetches
        await self._held.release(
            route, allowed, devices_changed=devices_changed, keys_fetched=fetched
        )
        # Its own fetches (a device list changed) are looked at already.
        self._fetches = self._identities.fetches
        self.holding = self._held.count

    async def _explain(
        self, message: Message | Vote, device: DeviceTrust | None, private: bool
    ) -> None:
        """Tell the owner once why their message (or vote) was not obeyed; strangers are not
        answered."""
        if message.sender not in self._owners:
            return
        if not private:
            key, text = f"room-shared:{message.room_id}", texts.ROOM_NOT_PRIVATE
        elif not message.was_encrypted:
            key, text = f"plaintext:{message.room_id}", texts.PLAINTEXT_IGNORED
        elif device is DeviceTrust.IDENTITY_CHANGED:
            # Said on the console too, where the fix is typed.
            log.warning(
                "trust.identity_changed",
                user=message.sender,
                fix=f"if they reset it themselves: dispatch-matrix trust {message.sender}",
            )
            if isinstance(message, Message):
                # Held, not dropped; the notice reaches the new devices too (held.py).
                await self._held.hold(message)
                self.holding = self._held.count
                return
            key, text = f"identity:{message.sender}", texts.identity_changed_vote(message.sender)
        elif device is not None and not device.trusted:
            key = f"device:{message.sender}:{message.sender_key}"
            text = texts.unverified_device(device.value)
        else:
            return
        if self._tables.first_notice(key):
            await self._outbox.post(message.room_id, text, reply_to=message.event_id, notice=True)
