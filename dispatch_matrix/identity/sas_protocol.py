"""The vocabulary of SAS verification (in-room variant): event types, the methods we offer,
the parties, the phases of a flow and the messages that open one. `sas.py` is the flow.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from canonicaljson import encode_canonical_json

from dispatch_matrix.core.errors import TrustError
from dispatch_matrix.identity.signing import b64

SAS_V1 = "m.sas.v1"
KEY_AGREEMENT = "curve25519-hkdf-sha256"
HASH = "sha256"
MAC_V2 = "hkdf-hmac-sha256.v2"
# MSC3783's name for what became hkdf-hmac-sha256.v2; same algorithm.
MAC_V2_UNSTABLE = "org.matrix.msc3783.hkdf-hmac-sha256"
# The original method, whose base64 libolm got wrong; still offered by every client.
MAC_V1 = "hkdf-hmac-sha256"
OUR_MACS = (MAC_V2, MAC_V1)
OUR_STRINGS = ("decimal", "emoji")

ROOM_MESSAGE = "m.room.message"
REQUEST = "m.key.verification.request"
READY = "m.key.verification.ready"
START = "m.key.verification.start"
ACCEPT = "m.key.verification.accept"
KEY = "m.key.verification.key"
MAC = "m.key.verification.mac"
DONE = "m.key.verification.done"
CANCEL = "m.key.verification.cancel"
FLOW_TYPES = frozenset({READY, START, ACCEPT, KEY, MAC, DONE, CANCEL})
# What our start offers, in order of preference.
OFFER: dict[str, Any] = {
    "method": SAS_V1,
    "key_agreement_protocols": [KEY_AGREEMENT],
    "hashes": [HASH],
    "message_authentication_codes": list(OUR_MACS),
    "short_authentication_string": list(OUR_STRINGS),
}

Keys = Mapping[str, str]
"""Public keys by key id (`ed25519:DEVICEID`, `ed25519:<master public key>`), unpadded base64."""


class VerificationCancelled(TrustError):
    """The verification ended: `code` and `reason` as in m.key.verification.cancel.

    `by_them` tells whether the other side cancelled; otherwise we must send the cancel.
    """

    def __init__(self, code: str, reason: str, *, by_them: bool = False) -> None:
        who = "the other side cancelled" if by_them else "cancelled"
        super().__init__(f"verification {who}: {reason} ({code})")
        self.code = code
        self.reason = reason
        self.by_them = by_them


@dataclass(frozen=True)
class Party:
    """One end of a verification: a user and one of their devices."""

    user_id: str
    device_id: str


@dataclass(frozen=True)
class Outgoing:
    """An event to send into the room."""

    type: str
    content: dict[str, Any]


class Phase(enum.Enum):
    """Where a flow stands."""

    REQUESTED = "requested"  # a request is out; no ready yet
    READY = "ready"  # ready exchanged; waiting for a start
    STARTED = "started"  # we sent start; waiting for accept
    ACCEPTED = "accepted"  # start accepted; the ephemeral keys are being exchanged
    KEYS_EXCHANGED = "keys exchanged"  # the short string can be shown
    CONFIRMED = "confirmed"  # our user said it matches; our MAC is out
    VERIFIED = "verified"  # their MAC checked; our done is out
    DONE = "done"  # both sides sent done
    CANCELLED = "cancelled"


def request_content(me: Party, to: str) -> dict[str, Any]:
    """The m.room.message that asks `to` to verify us (its event id becomes the flow id)."""
    return {
        "msgtype": REQUEST,
        "body": f"{me.user_id} is asking to verify your keys, but your client does not "
        "support in-chat key verification.",
        "from_device": me.device_id,
        "methods": [SAS_V1],
        "to": to,
    }


def commitment(public_key: str, start: Mapping[str, Any]) -> str:
    """The accepter's commitment to its ephemeral key, bound to the start content."""
    digest = hashlib.sha256(public_key.encode() + encode_canonical_json(dict(start)))
    return b64(digest.digest())
