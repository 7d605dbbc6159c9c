"""Interactive emoji verification (SAS v1, in-room variant) as a pure state machine.

A `SasFlow` takes the other side's verification events and returns the contents to send next;
it does no I/O and reads no clock (the caller owns timeouts). The cryptography is vodozemac's
`Sas`: X25519 agreement, then HKDF-SHA256 for the short string and HMAC-SHA256 for the MACs.

What the spec ("Key verification", SAS) and matrix-sdk-crypto agree on, and this follows:
- the SAS info is `MATRIX_KEY_VERIFICATION_SAS|` + user|device|key of the side that sent
  `m.key.verification.start`, then `|` + user|device|key of the side that accepted, then `|` +
  the flow id (in a room: the event id of the request);
- the MAC info is `MATRIX_KEY_VERIFICATION_MAC` + sender user + sender device + receiver user +
  receiver device + flow id + key id (or `KEY_IDS`), with no separators;
- the commitment is unpadded base64 of sha256(accepter's ephemeral key in base64 + canonical
  JSON of the start content).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

import vodozemac

from dispatch_matrix.identity.sas_emoji import EMOJI
from dispatch_matrix.identity.sas_protocol import (
    ACCEPT,
    CANCEL,
    DONE,
    HASH,
    KEY,
    KEY_AGREEMENT,
    MAC,
    MAC_V1,
    MAC_V2,
    MAC_V2_UNSTABLE,
    OFFER,
    OUR_MACS,
    OUR_STRINGS,
    READY,
    SAS_V1,
    START,
    Keys,
    Outgoing,
    Party,
    Phase,
    VerificationCancelled,
    commitment,
)


class SasFlow:
    """One SAS verification between us and another user's device, in a room.

    `own_keys` are the keys we vouch for in our MAC (key id → unpadded base64 public key):
    our device's `ed25519:DEVICEID` and our master key `ed25519:<public>`.
    """

    def __init__(
        self,
        me: Party,
        their_user: str,
        flow_id: str,
        own_keys: Keys,
        *,
        we_requested: bool,
        their_device: str | None = None,
        macs: tuple[str, ...] = OUR_MACS,
    ) -> None:
        self.me = me
        self.their_user = their_user
        self.their_device = their_device
        self.flow_id = flow_id
        self.we_requested = we_requested
        self.phase = Phase.REQUESTED
        self.mac_method: str | None = None
        self.strings: tuple[str, ...] = ()
        self.their_mac: dict[str, Any] | None = None
        self.their_done = False
        self._own_keys = dict(own_keys)
        # What our start offers (tests stand in for older clients by offering less).
        self._offer = {**OFFER, "message_authentication_codes": list(macs)}
        self._sas = vodozemac.Sas()
        self._public = self._sas.public_key.to_base64()
        self._established: vodozemac.EstablishedSas | None = None
        self._we_started = False
        self._start: dict[str, Any] | None = None  # the start content in effect
        self._their_commitment: str | None = None
        self._their_key: str | None = None

    @classmethod
    def from_request(
        cls, me: Party, sender: str, event_id: str, content: Mapping[str, Any], own_keys: Keys
    ) -> SasFlow:
        """The flow for the request `event_id` someone sent us; raises if we cannot take part."""
        device = content.get("from_device")
        if content.get("to") != me.user_id or not isinstance(device, str):
            raise VerificationCancelled("m.invalid_message", "the request is not for us")
        flow = cls(me, sender, event_id, own_keys, we_requested=False, their_device=device)
        methods = content.get("methods")
        if not isinstance(methods, list) or SAS_V1 not in methods:
            raise VerificationCancelled("m.unknown_method", "only emoji verification is supported")
        return flow

    # -- what we send on our own ---------------------------------------------------------

    def ready(self) -> Outgoing:
        """Accept their request: the m.key.verification.ready to send."""
        self._expect(Phase.REQUESTED, when=not self.we_requested)
        self.phase = Phase.READY
        return self._out(READY, {"from_device": self.me.device_id, "methods": [SAS_V1]})

    def confirm(self) -> Outgoing:
        """Our user saw the same emoji: the MAC of the keys we vouch for."""
        self._expect(Phase.KEYS_EXCHANGED)
        info = self._mac_info(self.me, self._them())
        mac = {key_id: self._mac(key, info + key_id) for key_id, key in self._own_keys.items()}
        keys = self._mac(",".join(sorted(mac)), info + "KEY_IDS")
        self.phase = Phase.CONFIRMED
        return self._out(MAC, {"mac": mac, "keys": keys})

    def verify_mac(self, their_keys: Keys) -> tuple[str, ...]:
        """Check their MAC against the keys we know for them (key id → public key).

        Returns the ids of the keys it proved; raises VerificationCancelled(m.key_mismatch)
        when a MAC is wrong or none of the keys is one we know.
        """
        self._expect(Phase.CONFIRMED, when=self.their_mac is not None)
        assert self.their_mac is not None
        mac, keys = self.their_mac.get("mac"), self.their_mac.get("keys")
        if not isinstance(mac, dict) or not isinstance(keys, str):
            raise VerificationCancelled("m.invalid_message", "malformed MAC")
        info = self._mac_info(self._them(), self.me)
        if not self._mac_ok(",".join(sorted(mac)), info + "KEY_IDS", keys):
            raise VerificationCancelled("m.key_mismatch", "the MAC of the key list does not match")
        proved = []
        for key_id, tag in mac.items():
            key = their_keys.get(key_id)
            if key is None:
                # A key we cannot look up proves nothing, and is no reason to fail.
                continue
            if not isinstance(tag, str) or not self._mac_ok(key, info + key_id, tag):
                raise VerificationCancelled("m.key_mismatch", f"the MAC of {key_id} does not match")
            proved.append(key_id)
        if not proved:
            raise VerificationCancelled("m.key_mismatch", "the MAC covers no key we know")
        self.phase = Phase.DONE if self.their_done else Phase.VERIFIED
        return tuple(sorted(proved))

    def done(self) -> Outgoing:
        """Our m.key.verification.done, once their MAC checked out."""
        self._expect(Phase.VERIFIED, Phase.DONE)
        return self._out(DONE, {})

    def cancel(self, code: str, reason: str) -> Outgoing:
        """End the flow: the m.key.verification.cancel to send."""
        self.phase = Phase.CANCELLED
        return self._out(CANCEL, {"code": code, "reason": reason})

    # -- what the short string is --------------------------------------------------------

    @property
    def emoji(self) -> list[tuple[str, str]] | None:
        """The seven (symbol, name) pairs, once the keys are exchanged."""
        if self._established is None:
            return None
        return [EMOJI[i] for i in self._established.bytes(self._sas_info()).emoji_indices]

    @property
    def decimals(self) -> tuple[int, int, int] | None:
        """The three four-digit numbers, once the keys are exchanged."""
        if self._established is None:
            return None
        first, second, third = self._established.bytes(self._sas_info()).decimals
        return (first, second, third)

    # -- what they send ------------------------------------------------------------------

    def receive(self, event_type: str, sender: str, content: Mapping[str, Any]) -> list[Outgoing]:
        """Take one of their events for this flow; returns what to send in reply.

        Events from anyone but the other user are ignored. Raises VerificationCancelled when
        they cancelled or when we must (then send `cancel(code, reason)`).
        """
        if sender != self.their_user or self.phase in (Phase.DONE, Phase.CANCELLED):
            return []
        content = dict(content)
        if event_type == CANCEL:
            self.phase = Phase.CANCELLED
            raise VerificationCancelled(
                str(content.get("code", "m.user")),
                str(content.get("reason", "cancelled")),
                by_them=True,
            )
        handler = _HANDLERS.get(event_type)
        return [] if handler is None else handler(self, content)

    def _on_ready(self, content: dict[str, Any]) -> list[Outgoing]:
        if not self.we_requested:
            raise self._unexpected(READY)
        if self.phase is not Phase.REQUESTED:
            # Another of their devices answered too late; the first ready wins.
            return []
        device, methods = content.get("from_device"), content.get("methods")
        if not isinstance(device, str):
            raise VerificationCancelled("m.invalid_message", "ready without from_device")
        if not isinstance(methods, list) or SAS_V1 not in methods:
            raise VerificationCancelled("m.unknown_method", "only emoji verification is supported")
        self.their_device = device
        self.phase = Phase.READY
        return [self._send_start()]

    def _send_start(self) -> Outgoing:
        start = self._out(START, {"from_device": self.me.device_id, **self._offer})
        self._start = start.content
        self._we_started = True
        self.phase = Phase.STARTED
        return start

    def _on_start(self, content: dict[str, Any]) -> list[Outgoing]:
        if self.phase is Phase.STARTED:
            # Both sides started: the smaller (user id, device id) wins, as the spec says.
            theirs = (self.their_user, str(content.get("from_device")))
            if theirs > (self.me.user_id, self.me.device_id):
                return []
            self._we_started = False
        elif self.phase is not Phase.READY:
            raise self._unexpected(START)
        if content.get("from_device") != self.their_device:
            raise VerificationCancelled("m.unexpected_message", "start from another device")
        if content.get("method") != SAS_V1:
            raise VerificationCancelled("m.unknown_method", "only emoji verification is supported")
        if KEY_AGREEMENT not in _strings(content, "key_agreement_protocols") or HASH not in (
            _strings(content, "hashes")
        ):
            raise VerificationCancelled("m.unknown_method", "no common key agreement or hash")
        macs = _strings(content, "message_authentication_codes")
        mac_method = next((m for m in (MAC_V2, MAC_V2_UNSTABLE, MAC_V1) if m in macs), None)
        strings = _common_strings(content)
        if mac_method is None or not strings:
            raise VerificationCancelled("m.unknown_method", "no common MAC or short string method")
        self.mac_method, self.strings = mac_method, strings
        self._start = content
        self.phase = Phase.ACCEPTED
        accept = {
            "method": SAS_V1,
            "key_agreement_protocol": KEY_AGREEMENT,
            "hash": HASH,
            "message_authentication_code": mac_method,
            "short_authentication_string": list(strings),
            "commitment": commitment(self._public, content),
        }
        return [self._out(ACCEPT, accept)]

    def _on_accept(self, content: dict[str, Any]) -> list[Outgoing]:
        if self.phase is not Phase.STARTED:
            raise self._unexpected(ACCEPT)
        mac_method = content.get("message_authentication_code")
        strings = _common_strings(content)
        if (
            content.get("key_agreement_protocol") != KEY_AGREEMENT
            or content.get("hash") != HASH
            or mac_method not in self._offer["message_authentication_codes"]
            or not strings
        ):
            raise VerificationCancelled("m.unknown_method", "they accepted with methods we lack")
        their_commitment = content.get("commitment")
        if not isinstance(their_commitment, str):
            raise VerificationCancelled("m.invalid_message", "accept without commitment")
        self.mac_method, self.strings = str(mac_method), strings
        self._their_commitment = their_commitment
        self.phase = Phase.ACCEPTED
        return [self._out(KEY, {"key": self._public})]

    def _on_key(self, content: dict[str, Any]) -> list[Outgoing]:
        key = content.get("key")
        if self.phase is not Phase.ACCEPTED or self._their_key is not None:
            raise self._unexpected(KEY)
        if not isinstance(key, str):
            raise VerificationCancelled("m.invalid_message", "key event without a key")
        if self._we_started:
            assert self._start is not None
            if commitment(key, self._start) != self._their_commitment:
                raise VerificationCancelled(
                    "m.mismatched_commitment", "their key does not match their commitment"
                )
        try:
            self._established = self._sas.diffie_hellman(
                vodozemac.Curve25519PublicKey.from_base64(key)
            )
        except ValueError as err:  # vodozemac's KeyException: not a usable X25519 key
            raise VerificationCancelled("m.invalid_message", f"unusable key: {err}") from None
        self._their_key = key
        self.phase = Phase.KEYS_EXCHANGED
        # The accepter sends its key only after the starter's arrived.
        return [] if self._we_started else [self._out(KEY, {"key": self._public})]

    def _on_mac(self, content: dict[str, Any]) -> list[Outgoing]:
        if self.phase not in (Phase.KEYS_EXCHANGED, Phase.CONFIRMED) or self.their_mac is not None:
            raise self._unexpected(MAC)
        # Kept until our user has compared the emoji: they may confirm before we do.
        self.their_mac = content
        return []

    def _on_done(self, _content: dict[str, Any]) -> list[Outgoing]:
        if self.phase not in (Phase.CONFIRMED, Phase.VERIFIED):
            raise self._unexpected(DONE)
        self.their_done = True
        if self.phase is Phase.VERIFIED:
            self.phase = Phase.DONE
        return []

    # -- helpers -------------------------------------------------------------------------

    def _them(self) -> Party:
        assert self.their_device is not None
        return Party(self.their_user, self.their_device)

    def _sas_info(self) -> str:
        ours = f"{self.me.user_id}|{self.me.device_id}|{self._public}"
        theirs = f"{self.their_user}|{self.their_device}|{self._their_key}"
        first, second = (ours, theirs) if self._we_started else (theirs, ours)
        return f"MATRIX_KEY_VERIFICATION_SAS|{first}|{second}|{self.flow_id}"

    def _mac_info(self, sender: Party, receiver: Party) -> str:
        return (
            f"MATRIX_KEY_VERIFICATION_MAC{sender.user_id}{sender.device_id}"
            f"{receiver.user_id}{receiver.device_id}{self.flow_id}"
        )

    def _mac(self, message: str, info: str) -> str:
        assert self._established is not None
        if self.mac_method == MAC_V1:
            return str(self._established.calculate_mac_invalid_base64(message, info))
        return str(self._established.calculate_mac(message, info))

    def _mac_ok(self, message: str, info: str, tag: str) -> bool:
        return hmac.compare_digest(self._mac(message, info), tag.rstrip("="))

    def _out(self, event_type: str, content: dict[str, Any]) -> Outgoing:
        relation = {"rel_type": "m.reference", "event_id": self.flow_id}
        return Outgoing(event_type, {**content, "m.relates_to": relation})

    def _expect(self, *phases: Phase, when: bool = True) -> None:
        # A misuse by the caller (a bug), not something the other side can cause.
        if self.phase not in phases or not when:
            raise RuntimeError(f"not possible in phase {self.phase.value}")

    def _unexpected(self, event_type: str) -> VerificationCancelled:
        return VerificationCancelled(
            "m.unexpected_message", f"{event_type} while {self.phase.value}"
        )


_HANDLERS = {
    READY: SasFlow._on_ready,
    START: SasFlow._on_start,
    ACCEPT: SasFlow._on_accept,
    KEY: SasFlow._on_key,
    MAC: SasFlow._on_mac,
    DONE: SasFlow._on_done,
}


def _strings(content: Mapping[str, Any], key: str) -> list[str]:
    value = content.get(key)
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _common_strings(content: Mapping[str, Any]) -> tuple[str, ...]:
    theirs = _strings(content, "short_authentication_string")
    return tuple(s for s in OUR_STRINGS if s in theirs)
