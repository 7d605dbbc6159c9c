"""Who may command the bot: pure decisions over typed inputs, no I/O.

The gate every inbound event passes before it can become a task: (a) it arrived encrypted,
(b) its sender is an owner, (c) the sending device is cross-signed by that owner's pinned
identity, (d) the room holds only the bot and owners. Each refusal carries its reason.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol

from dispatch_matrix.identity.signing import key_of, verify
from dispatch_matrix.matrix.inbound import Invite


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
