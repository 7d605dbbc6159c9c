"""The trust gate: may this device command the bot, and may it read what the bot says.

One decision read two ways. Its core is pure (no I/O, table-tested): `may_command` and
`may_join` decide over typed inputs whether an event may command the bot and whether to
take an invite, and `device_trust` walks a sender device's chain (pinned master →
self-signing key → device) over published keys (`UserKeys`), naming where it breaks
(`DeviceTrust`). The gate every inbound event passes before it can become a task: (a) it
arrived encrypted, (b) its sender is an owner, (c) the sending device is cross-signed by
that owner's pinned identity, (d) the room holds only the bot and owners. Each refusal
carries its reason (`TrustVerdict`).

Around that core, the edges that feed it: `Identities` fetches owners' published keys,
pins their master key on first contact, re-checks it when their device lists change, and
applies the same standing to whom the bot shares room keys with (`restrict_sharing`, before
every send). `TrustGate` is the router's `Gate`: it judges each owner event with
`may_command` against the sender device's standing, logs every refusal with its reason,
tells the owner once why they were not obeyed, and hands the messages of an owner whose
identity changed to the holder it is given (`held.py`'s `HeldMessages`, which imports this
module's types) until it is trusted again."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from nio import AsyncClient

from dispatch_matrix.core import logs
from dispatch_matrix.core.ids import RoomID
from dispatch_matrix.identity import texts
from dispatch_matrix.identity.signing import key_of, verify
from dispatch_matrix.identity.tables import IdentityTables
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.inbound import Invite, Message, Reaction, Vote
from dispatch_matrix.matrix.outbox import Outbox

log = logs.get(__name__)

# --- the pure decision --------------------------------------------------------------------


@dataclass(frozen=True)
class TrustVerdict:
    """Yes, or no with the reason."""

    allowed: bool
    reason: str = ""

    @classmethod
    def allow(cls) -> TrustVerdict:
        return cls(True)

    @classmethod
    def refuse(cls, reason: str) -> TrustVerdict:
        return cls(False, reason)


def may_join(invite: Invite, owners: frozenset[str]) -> TrustVerdict:
    """Whether to accept an invite: only from an owner."""
    if invite.inviter not in owners:
        return TrustVerdict.refuse("inviter is not an owner")
    return TrustVerdict.allow()


class Commanding(Protocol):
    """What the gate reads of an event that may command the bot (a message, a reaction)."""

    @property
    def sender(self) -> str: ...

    @property
    def was_encrypted(self) -> bool: ...


def may_command(
    event: Commanding,
    owners: frozenset[str],
    device: DeviceTrust | None,
    room_private: bool,
    require_cross_signed: bool,
) -> TrustVerdict:
    """Whether a message may become a task or a command, or a reaction answer a question.

    `device` is the sending device's standing (None when the event was not encrypted);
    `room_private` whether the room's members are only the bot and owners.
    """
    if event.sender not in owners:
        return TrustVerdict.refuse("sender is not an owner")
    if not event.was_encrypted:
        return TrustVerdict.refuse("plaintext: only end-to-end encrypted messages are obeyed")
    if not room_private:
        return TrustVerdict.refuse("room is not private: someone besides the owners is in it")
    if device is None:
        return TrustVerdict.refuse("sending device unknown")
    if device is DeviceTrust.IDENTITY_CHANGED:
        return TrustVerdict.refuse(device.value)
    if not device.trusted and require_cross_signed:
        return TrustVerdict.refuse(device.value)
    return TrustVerdict.allow()


class DeviceTrust(enum.Enum):
    """How a sender's device relates to its owner's cross-signing identity."""

    CROSS_SIGNED = "cross-signed by its owner's pinned identity"
    UNSIGNED = "device not cross-signed by its owner"
    NO_IDENTITY = "sender has no cross-signing identity"
    IDENTITY_CHANGED = "sender's identity changed since it was pinned"
    UNKNOWN_DEVICE = "sending device is not in the sender's device list"

    @property
    def trusted(self) -> bool:
        return self is DeviceTrust.CROSS_SIGNED


@dataclass(frozen=True)
class UserKeys:
    """A user's published keys, as /keys/query returned them."""

    user_id: str
    master: dict[str, Any] | None
    self_signing: dict[str, Any] | None
    devices: dict[str, dict[str, Any]]

    @classmethod
    def from_query(cls, reply: dict[str, Any], user_id: str) -> UserKeys:
        return cls(
            user_id=user_id,
            master=reply.get("master_keys", {}).get(user_id),
            self_signing=reply.get("self_signing_keys", {}).get(user_id),
            devices=dict(reply.get("device_keys", {}).get(user_id, {})),
        )

    @property
    def master_key(self) -> str | None:
        return key_of(self.master) if self.master else None

    def device_by_curve_key(self, curve25519: str) -> str | None:
        """The id of the device whose identity key is `curve25519`."""
        for device_id, device in self.devices.items():
            if device.get("keys", {}).get(f"curve25519:{device_id}") == curve25519:
                return device_id
        return None


def device_trust(keys: UserKeys, device_id: str | None, pinned_master: str | None) -> DeviceTrust:
    """Walk the chain pinned master → self-signing key → device; say where it breaks."""
    master = keys.master_key
    if master is None:
        return DeviceTrust.NO_IDENTITY
    if pinned_master is not None and master != pinned_master:
        return DeviceTrust.IDENTITY_CHANGED
    if device_id is None or device_id not in keys.devices:
        return DeviceTrust.UNKNOWN_DEVICE
    ssk_object = keys.self_signing or {}
    ssk = key_of(ssk_object)
    if ssk is None or not verify(ssk_object, keys.user_id, f"ed25519:{master}", master):
        return DeviceTrust.UNSIGNED
    device = keys.devices[device_id]
    if not verify(device, keys.user_id, f"ed25519:{ssk}", ssk):
        return DeviceTrust.UNSIGNED
    return DeviceTrust.CROSS_SIGNED


# --- the owners' identities and the gate at work ------------------------------------------


class Identities:
    """Published keys of the users the bot deals with, and their pinned master keys."""

    def __init__(
        self, client: MatrixClient, tables: IdentityTables, owners: frozenset[str]
    ) -> None:
        self._client = client
        self._tables = tables
        self._owners = owners
        self._keys: dict[str, UserKeys] = {}
        # Verdicts on the cached keys: each one checks two signatures, and every message
        # and every send asks again. Dropped with the keys (and on a pin change).
        self._verdicts: dict[tuple[str, str | None, str | None], DeviceTrust] = {}
        # How many times keys were fetched: held messages are judged again after one.
        self.fetches = 0

    def forget(self, user_ids: list[str]) -> None:
        """Drop cached keys (their device list changed); the next check re-fetches."""
        for user_id in user_ids:
            self._keys.pop(user_id, None)
        self._verdicts.clear()

    async def keys(self, user_id: str, refresh: bool = False) -> UserKeys:
        """A user's published keys (cached until their device list changes)."""
        if refresh or user_id not in self._keys:
            reply = await self._client.query_keys([user_id])
            self.fetches += 1
            keys = UserKeys.from_query(reply, user_id)
            self._keys[user_id] = keys
            self._verdicts.clear()
            self._pin_on_first_contact(keys)
        return self._keys[user_id]

    def _trust(self, keys: UserKeys, device_id: str | None) -> DeviceTrust:
        """`device_trust` against the pinned identity (or the published one), remembered
        for these keys."""
        pinned = self.pinned(keys.user_id) or keys.master_key
        memo = (keys.user_id, device_id, pinned)
        verdict = self._verdicts.get(memo)
        if verdict is None or self._keys.get(keys.user_id) is not keys:
            verdict = device_trust(keys, device_id, pinned)
            if self._keys.get(keys.user_id) is keys:
                self._verdicts[memo] = verdict
        return verdict

    def pinned(self, user_id: str) -> str | None:
        """The master key pinned for a user, if any."""
        return self._tables.pinned_identity(user_id)

    def _pin_on_first_contact(self, keys: UserKeys) -> None:
        master = keys.master_key
        if master is None or keys.user_id not in self._owners:
            return
        if self._tables.pinned_identity(keys.user_id) is None:
            self._tables.pin_identity(keys.user_id, master, how="first contact")
            log.info("identity.pinned", user=keys.user_id, master=master, how="first contact")

    async def judge(self, user_id: str, sender_key: str | None) -> DeviceTrust:
        """The standing of the device that holds `sender_key` (curve25519)."""
        keys = await self.keys(user_id)
        device_id = keys.device_by_curve_key(sender_key) if sender_key else None
        if device_id is None and sender_key:
            # A device that appeared since we last looked: ask once more.
            keys = await self.keys(user_id, refresh=True)
            device_id = keys.device_by_curve_key(sender_key)
        return self._trust(keys, device_id)

    async def restrict_sharing(self, room_id: RoomID) -> None:
        """Let room keys reach only owners' devices that pass the gate against the pinned
        identity (mirrors MSC4153); called before every send."""
        await share_only_with(self._client.client, room_id, self._owners, self._trusted_devices)

    async def _trusted_devices(self, user_id: str) -> set[str]:
        keys = await self.keys(user_id)
        return {device for device in keys.devices if self._trust(keys, device).trusted}


# Which of an owner's devices may get room keys: the one thing the daemon and pairing judge
# differently (the pinned identity, or the one published now).
TrustedDevices = Callable[[str], Awaitable[set[str]]]


async def share_only_with(
    nio: AsyncClient, room_id: RoomID, owners: frozenset[str], trusted: TrustedDevices
) -> None:
    """Mark every device in the room verified (gets room keys) or blacklisted (gets none) in
    nio's store: only owners' devices that `trusted` names get them. If a device lost its
    standing, the outbound session is dropped, so the next message starts one it never sees.
    """
    room = nio.rooms.get(room_id)
    if room is None or nio.olm is None or not room.encrypted:
        return
    revoked = False
    for user_id in set(room.users) | set(room.invited_users):
        if user_id == nio.user_id:
            continue
        allowed = await trusted(user_id) if user_id in owners else set()
        for device in nio.device_store.active_user_devices(user_id):
            if device.id in allowed:
                if device.blacklisted:
                    nio.unblacklist_device(device)
                if not device.verified:
                    nio.verify_device(device)
            elif not device.blacklisted:
                revoked = True
                nio.blacklist_device(device)
                log.info("trust.device_excluded", user=user_id, device=device.id, room=room_id)
    if revoked:
        nio.olm.outbound_group_sessions.pop(room_id, None)


class Holding(Protocol):
    """What the gate asks of the messages it holds (`held.HeldMessages`): a protocol, since
    that module imports this one's types."""

    # How many messages are held.
    count: int

    async def hold(self, message: Message) -> None:
        """Hold a message from an identity not trusted yet; tell its sender once."""

    async def release(
        self,
        route: Callable[[Message], Awaitable[None]],
        judge: Callable[[Message, DeviceTrust | None], bool],
        *,
        devices_changed: bool = False,
        keys_fetched: bool = False,
    ) -> None:
        """Run, or name, the held messages whose sender's identity is trusted again."""


class TrustGate:
    """Who may command the bot, with what the owner is told when refused."""

    def __init__(
        self,
        tables: IdentityTables,
        identities: Identities,
        held: Holding,
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
        self._held = held
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
