"""Table tests for the SAS state machine: two flows talking through a simulated room, one flow
against a reference peer written from the spec with `cryptography` alone, and what pairing
reads from a sync."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nio import SyncResponse

from dispatch_matrix.identity import sas_protocol as proto
from dispatch_matrix.identity.pairing import describe
from dispatch_matrix.identity.sas import SasFlow
from dispatch_matrix.identity.sas_emoji import EMOJI
from dispatch_matrix.identity.sas_protocol import (
    Outgoing,
    Party,
    Phase,
    VerificationCancelled,
    commitment,
)
from dispatch_matrix.identity.verification import fresh_requests, verification_events

BOT = Party("@bot:example.org", "BOTDEVICE")
OWNER = Party("@owner:example.org", "OWNERPHONE")
REQUEST_ID = "$request-event-id"


def keys_of(party: Party) -> dict[str, str]:
    """A device key and a master key for a party (any 32 bytes will do for MACs)."""
    device = base64.b64encode(hashlib.sha256(party.device_id.encode()).digest()).decode()
    master = base64.b64encode(hashlib.sha256(party.user_id.encode()).digest()).decode()
    device, master = device.rstrip("="), master.rstrip("=")
    return {f"ed25519:{party.device_id}": device, f"ed25519:{master}": master}


Tamper = Callable[[str, Outgoing], Outgoing]


def untouched(_to: str, event: Outgoing) -> Outgoing:
    return event


def deliver(sender: SasFlow, receiver: SasFlow, events: list[Outgoing], tamper: Tamper) -> None:
    """Hand `sender`'s events to `receiver`, and its replies back, until both are quiet."""
    queue = [(sender, receiver, event) for event in events]
    while queue:
        source, target, event = queue.pop(0)
        event = tamper(target.me.user_id, event)
        assert event.content["m.relates_to"] == {"rel_type": "m.reference", "event_id": REQUEST_ID}
        replies = target.receive(event.type, source.me.user_id, event.content)
        queue.extend((target, source, reply) for reply in replies)


def handshake(
    *,
    bot_requests: bool,
    tamper: Tamper = untouched,
    owner_macs: tuple[str, ...] = proto.OUR_MACS,
) -> tuple[SasFlow, SasFlow]:
    """Run a request to the point where both sides can show the short string."""
    if bot_requests:
        content = proto.request_content(BOT, OWNER.user_id)
        bot = SasFlow(BOT, OWNER.user_id, REQUEST_ID, keys_of(BOT), we_requested=True)
        owner = SasFlow.from_request(OWNER, BOT.user_id, REQUEST_ID, content, keys_of(OWNER))
        deliver(owner, bot, [owner.ready()], tamper)
    else:
        content = proto.request_content(OWNER, BOT.user_id)
        owner = SasFlow(
            OWNER, BOT.user_id, REQUEST_ID, keys_of(OWNER), we_requested=True, macs=owner_macs
        )
        bot = SasFlow.from_request(BOT, OWNER.user_id, REQUEST_ID, content, keys_of(BOT))
        deliver(bot, owner, [bot.ready()], tamper)
    return bot, owner


def finish(bot: SasFlow, owner: SasFlow) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Both users confirm; each side checks the other's MAC; both send done."""
    deliver(bot, owner, [bot.confirm()], untouched)
    deliver(owner, bot, [owner.confirm()], untouched)
    proved_by_bot = bot.verify_mac(keys_of(OWNER))
    proved_by_owner = owner.verify_mac(keys_of(BOT))
    deliver(bot, owner, [bot.done()], untouched)
    deliver(owner, bot, [owner.done()], untouched)
    return proved_by_bot, proved_by_owner


@pytest.mark.parametrize(
    "bot_requests, owner_macs, mac_method",
    [
        (False, proto.OUR_MACS, proto.MAC_V2),
        (True, proto.OUR_MACS, proto.MAC_V2),
        (False, (proto.MAC_V1,), proto.MAC_V1),
        (False, (proto.MAC_V2_UNSTABLE, proto.MAC_V1), proto.MAC_V2_UNSTABLE),
    ],
)
def test_both_sides_show_the_same_emoji_and_prove_each_others_keys(
    bot_requests: bool, owner_macs: tuple[str, ...], mac_method: str
) -> None:
    bot, owner = handshake(bot_requests=bot_requests, owner_macs=owner_macs)
    assert bot.phase is owner.phase is Phase.KEYS_EXCHANGED
    assert bot.mac_method == owner.mac_method == mac_method
    assert bot.emoji is not None and len(bot.emoji) == 7
    assert bot.emoji == owner.emoji
    assert all(pair in EMOJI for pair in bot.emoji)
    assert bot.decimals == owner.decimals
    assert bot.decimals is not None and all(1000 <= d <= 9191 for d in bot.decimals)
    proved_by_bot, proved_by_owner = finish(bot, owner)
    assert proved_by_bot == tuple(sorted(keys_of(OWNER)))
    assert proved_by_owner == tuple(sorted(keys_of(BOT)))
    assert bot.phase is owner.phase is Phase.DONE


def test_their_mac_may_arrive_before_our_user_confirms() -> None:
    bot, owner = handshake(bot_requests=False)
    deliver(owner, bot, [owner.confirm()], untouched)
    assert bot.their_mac is not None and bot.phase is Phase.KEYS_EXCHANGED
    deliver(bot, owner, [bot.confirm()], untouched)
    assert bot.verify_mac(keys_of(OWNER)) == tuple(sorted(keys_of(OWNER)))
    owner.verify_mac(keys_of(BOT))
    deliver(owner, bot, [owner.done()], untouched)
    assert bot.phase is Phase.DONE and bot.their_done
    assert bot.done().type == proto.DONE


def test_verify_mac_proves_only_keys_we_know() -> None:
    bot, owner = handshake(bot_requests=False)
    deliver(bot, owner, [bot.confirm()], untouched)
    deliver(owner, bot, [owner.confirm()], untouched)
    device_only = {k: v for k, v in keys_of(OWNER).items() if OWNER.device_id in k}
    assert bot.verify_mac(device_only) == (f"ed25519:{OWNER.device_id}",)


def test_a_mac_over_keys_we_do_not_know_proves_nothing() -> None:
    bot, owner = handshake(bot_requests=False)
    deliver(bot, owner, [bot.confirm()], untouched)
    deliver(owner, bot, [owner.confirm()], untouched)
    with pytest.raises(VerificationCancelled) as raised:
        bot.verify_mac({"ed25519:OTHERDEVICE": keys_of(OWNER)[f"ed25519:{OWNER.device_id}"]})
    assert raised.value.code == "m.key_mismatch"


@pytest.mark.parametrize("victim", ["mac of a key", "mac of the key list", "key swapped"])
def test_a_tampered_mac_or_key_fails_verification(victim: str) -> None:
    bot, owner = handshake(bot_requests=False)
    deliver(bot, owner, [bot.confirm()], untouched)
    mac = owner.confirm()
    content = json.loads(json.dumps(mac.content))
    their_keys = keys_of(OWNER)
    if victim == "mac of a key":
        key_id = f"ed25519:{OWNER.device_id}"
        content["mac"][key_id] = content["mac"][key_id][::-1]
    elif victim == "mac of the key list":
        content["keys"] = content["keys"][::-1]
    else:
        # The MAC is honest, but the key published for that device is someone else's.
        their_keys[f"ed25519:{OWNER.device_id}"] = keys_of(BOT)[f"ed25519:{BOT.device_id}"]
    bot.receive(mac.type, OWNER.user_id, content)
    with pytest.raises(VerificationCancelled) as raised:
        bot.verify_mac(their_keys)
    assert raised.value.code == "m.key_mismatch"
    assert not raised.value.by_them


def test_a_man_in_the_middle_who_swaps_both_keys_shows_different_emoji_and_fails_the_mac() -> None:
    """Mallory relays the events but answers each side with her own ephemeral key, keeping
    every commitment consistent; only the emoji (and then the MACs) give her away."""
    owner = SasFlow(OWNER, BOT.user_id, REQUEST_ID, keys_of(OWNER), we_requested=True)
    request = proto.request_content(OWNER, BOT.user_id)
    bot = SasFlow.from_request(BOT, OWNER.user_id, REQUEST_ID, request, keys_of(BOT))
    bot_ready = bot.ready()
    (start,) = owner.receive(bot_ready.type, BOT.user_id, bot_ready.content)
    # Towards the owner, Mallory plays the bot: she accepts the start with her own key.
    as_bot = SasFlow.from_request(BOT, OWNER.user_id, REQUEST_ID, request, keys_of(BOT))
    as_bot.ready()
    (her_accept,) = as_bot.receive(start.type, OWNER.user_id, start.content)
    (owner_key,) = owner.receive(her_accept.type, BOT.user_id, her_accept.content)
    (her_key,) = as_bot.receive(owner_key.type, OWNER.user_id, owner_key.content)
    owner.receive(her_key.type, BOT.user_id, her_key.content)
    # Towards the bot, she plays the owner: the same start, then her own key.
    as_owner = SasFlow(OWNER, BOT.user_id, REQUEST_ID, keys_of(OWNER), we_requested=True)
    as_owner.receive(bot_ready.type, BOT.user_id, bot_ready.content)
    (accept,) = bot.receive(start.type, OWNER.user_id, start.content)
    (her_other_key,) = as_owner.receive(accept.type, BOT.user_id, accept.content)
    (bot_key,) = bot.receive(her_other_key.type, OWNER.user_id, her_other_key.content)
    as_owner.receive(bot_key.type, BOT.user_id, bot_key.content)

    assert bot.phase is owner.phase is Phase.KEYS_EXCHANGED
    assert bot.emoji is not None and owner.emoji is not None
    assert bot.emoji != owner.emoji, "the users see different emoji and stop there"
    # Had they confirmed anyway, the owner's MAC (relayed as it is) fails at the bot.
    bot.confirm()
    mac = owner.confirm()
    bot.receive(mac.type, OWNER.user_id, mac.content)
    with pytest.raises(VerificationCancelled) as raised:
        bot.verify_mac(keys_of(OWNER))
    assert raised.value.code == "m.key_mismatch"


def swap_key(to: str, event: Outgoing) -> Outgoing:
    """Replace the key the bot sends the owner (the starter) with another one."""
    if event.type == proto.KEY and to == OWNER.user_id:
        other = (
            X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        return Outgoing(event.type, {**event.content, "key": b64(other)})
    return event


def reorder_start(to: str, event: Outgoing) -> Outgoing:
    """Change what the owner's start offers on its way to the bot (a downgrade attempt)."""
    if event.type == proto.START and to == BOT.user_id:
        return Outgoing(
            event.type, {**event.content, "message_authentication_codes": [proto.MAC_V1]}
        )
    return event


@pytest.mark.parametrize("tamper", [swap_key, reorder_start])
def test_the_starter_checks_the_commitment_over_key_and_start(tamper: Tamper) -> None:
    with pytest.raises(VerificationCancelled) as raised:
        handshake(bot_requests=False, tamper=tamper)
    assert raised.value.code == "m.mismatched_commitment"


def test_the_commitment_covers_canonical_json_so_key_order_does_not_matter() -> None:
    start = {"method": proto.SAS_V1, "from_device": "D", "hashes": ["sha256"]}
    reordered = dict(reversed(list(start.items())))
    assert commitment("KEY", start) == commitment("KEY", reordered)
    assert commitment("KEY", start) != commitment("KEY", {**start, "from_device": "E"})
    expected = hashlib.sha256(b'KEY{"from_device":"D","hashes":["sha256"],"method":"m.sas.v1"}')
    assert commitment("KEY", start) == b64(expected.digest())


def test_simultaneous_starts_are_settled_by_the_smaller_user_id() -> None:
    bot = SasFlow(BOT, OWNER.user_id, REQUEST_ID, keys_of(BOT), we_requested=True)
    owner = SasFlow.from_request(
        OWNER,
        BOT.user_id,
        REQUEST_ID,
        proto.request_content(BOT, OWNER.user_id),
        keys_of(OWNER),
    )
    ready = owner.ready()
    (bot_start,) = bot.receive(ready.type, OWNER.user_id, ready.content)
    # The owner also started (as if its user clicked "start" at the same moment).
    owner_start = owner._send_start()
    # @bot < @owner: the bot's start wins; the bot ignores the owner's start.
    assert bot.receive(owner_start.type, OWNER.user_id, owner_start.content) == []
    (accept,) = owner.receive(bot_start.type, BOT.user_id, bot_start.content)
    deliver(owner, bot, [accept], untouched)
    assert bot.emoji is not None and bot.emoji == owner.emoji


@pytest.mark.parametrize(
    "event_type, content, code",
    [
        (proto.KEY, {"key": "x"}, "m.unexpected_message"),
        (proto.MAC, {"mac": {}, "keys": ""}, "m.unexpected_message"),
        (proto.START, {"method": "m.qr_code.scan.v1", "from_device": OWNER.device_id},
         "m.unknown_method"),
        (proto.START, {**proto.OFFER, "from_device": "ANOTHERDEVICE"}, "m.unexpected_message"),
        (proto.START, {**proto.OFFER, "from_device": OWNER.device_id, "hashes": ["sha512"]},
         "m.unknown_method"),
    ],
)  # fmt: skip
def test_events_out_of_turn_or_without_common_methods_are_cancelled(
    event_type: str, content: dict[str, Any], code: str
) -> None:
    bot = SasFlow.from_request(
        BOT,
        OWNER.user_id,
        REQUEST_ID,
        proto.request_content(OWNER, BOT.user_id),
        keys_of(BOT),
    )
    bot.ready()
    with pytest.raises(VerificationCancelled) as raised:
        bot.receive(event_type, OWNER.user_id, content)
    assert raised.value.code == code
    assert bot.cancel(code, "x").content["code"] == code
    assert bot.phase is Phase.CANCELLED


def test_their_cancel_ends_the_flow_and_others_in_the_room_are_ignored() -> None:
    bot, _owner = handshake(bot_requests=False)
    assert bot.receive(proto.CANCEL, "@stranger:example.org", {"code": "m.user"}) == []
    with pytest.raises(VerificationCancelled) as raised:
        bot.receive(proto.CANCEL, OWNER.user_id, {"code": "m.mismatched_sas", "reason": "no"})
    assert raised.value.by_them and raised.value.code == "m.mismatched_sas"
    assert bot.phase is Phase.CANCELLED


@pytest.mark.parametrize(
    "content, code",
    [
        ({"to": "@someone-else:example.org", "from_device": "D", "methods": [proto.SAS_V1]},
         "m.invalid_message"),
        ({"to": BOT.user_id, "from_device": "D", "methods": ["m.qr_code.show.v1"]},
         "m.unknown_method"),
    ],
)  # fmt: skip
def test_requests_we_cannot_answer(content: dict[str, Any], code: str) -> None:
    with pytest.raises(VerificationCancelled) as raised:
        SasFlow.from_request(BOT, OWNER.user_id, REQUEST_ID, content, keys_of(BOT))
    assert raised.value.code == code


# -- against a reference written from the spec ---------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hkdf(secret: bytes, info: str, length: int) -> bytes:
    return HKDF(hashes.SHA256(), length, salt=None, info=info.encode()).derive(secret)


class ReferencePeer:
    """The owner's side as the spec words it, on `cryptography` (no vodozemac)."""

    def __init__(self) -> None:
        self.private = X25519PrivateKey.generate()
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public = b64(raw)

    def secret(self, their_key: str) -> bytes:
        return self.private.exchange(X25519PublicKey.from_public_bytes(unb64(their_key)))

    def emoji_and_decimals(self, secret: bytes, info: str) -> tuple[list[Any], tuple[int, ...]]:
        data = hkdf(secret, info, 6)
        bits = int.from_bytes(data, "big")
        emoji = [EMOJI[(bits >> (42 - 6 * i)) & 63] for i in range(7)]
        forty = int.from_bytes(data[:5], "big") >> 1
        decimals = tuple(((forty >> shift) & 0x1FFF) + 1000 for shift in (26, 13, 0))
        return emoji, decimals

    @staticmethod
    def mac(secret: bytes, message: str, info: str) -> str:
        return b64(hmac.new(hkdf(secret, info, 32), message.encode(), hashlib.sha256).digest())


def relates(content: dict[str, Any]) -> dict[str, Any]:
    return {**content, "m.relates_to": {"rel_type": "m.reference", "event_id": REQUEST_ID}}


def test_the_bot_agrees_with_a_spec_reference_peer_that_starts() -> None:
    peer = ReferencePeer()
    request = proto.request_content(OWNER, BOT.user_id)
    bot = SasFlow.from_request(BOT, OWNER.user_id, REQUEST_ID, request, keys_of(BOT))
    bot.ready()
    start = relates({"from_device": OWNER.device_id, **proto.OFFER})
    (accept,) = bot.receive(proto.START, OWNER.user_id, start)
    assert accept.content["message_authentication_code"] == proto.MAC_V2
    (bot_key,) = bot.receive(proto.KEY, OWNER.user_id, relates({"key": peer.public}))
    key = bot_key.content["key"]
    canonical = json.dumps(start, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert accept.content["commitment"] == b64(hashlib.sha256((key + canonical).encode()).digest())

    secret = peer.secret(key)
    sas_info = (
        f"MATRIX_KEY_VERIFICATION_SAS|{OWNER.user_id}|{OWNER.device_id}|{peer.public}"
        f"|{BOT.user_id}|{BOT.device_id}|{key}|{REQUEST_ID}"
    )
    emoji, decimals = peer.emoji_and_decimals(secret, sas_info)
    assert bot.emoji == emoji
    assert bot.decimals == decimals

    # The bot's MAC, checked the spec's way.
    bot_mac = bot.confirm().content
    info = f"MATRIX_KEY_VERIFICATION_MAC{BOT.user_id}{BOT.device_id}{OWNER.user_id}"
    info += f"{OWNER.device_id}{REQUEST_ID}"
    for key_id, public in keys_of(BOT).items():
        assert bot_mac["mac"][key_id] == peer.mac(secret, public, info + key_id)
    assert bot_mac["keys"] == peer.mac(secret, ",".join(sorted(keys_of(BOT))), info + "KEY_IDS")

    # The peer's MAC, made the spec's way, proves its keys to the bot.
    info = f"MATRIX_KEY_VERIFICATION_MAC{OWNER.user_id}{OWNER.device_id}{BOT.user_id}"
    info += f"{BOT.device_id}{REQUEST_ID}"
    mac = {k: peer.mac(secret, v, info + k) for k, v in keys_of(OWNER).items()}
    keys = peer.mac(secret, ",".join(sorted(mac)), info + "KEY_IDS")
    bot.receive(proto.MAC, OWNER.user_id, relates({"mac": mac, "keys": keys}))
    assert bot.verify_mac(keys_of(OWNER)) == tuple(sorted(keys_of(OWNER)))


# -- what pairing reads from a sync --------------------------------------------------------


def timeline_event(event_id: str, event_type: str, content: dict[str, Any], ts: int = 0) -> Any:
    return {
        "type": event_type,
        "event_id": event_id,
        "sender": OWNER.user_id,
        "origin_server_ts": ts,
        "content": content,
    }


def test_the_emoji_table_is_the_specs() -> None:
    assert len(EMOJI) == len(set(EMOJI)) == 64
    assert (EMOJI[0], EMOJI[34], EMOJI[36], EMOJI[53], EMOJI[63]) == (
        ("🐶", "Dog"),
        ("🔧", "Spanner"),
        ("👍", "Thumbs Up"),
        ("✈️", "Aeroplane"),
        ("📌", "Pin"),
    )


def test_pairing_reads_requests_and_flow_events_from_nio_and_skips_answered_ones() -> None:
    request = proto.request_content(OWNER, BOT.user_id)
    answered = dict(request)
    to_answered = {"rel_type": "m.reference", "event_id": "$answered"}
    events = [
        timeline_event("$old", proto.ROOM_MESSAGE, request, ts=1_000),
        timeline_event("$answered", proto.ROOM_MESSAGE, answered, ts=5_000),
        timeline_event("$cancel", proto.CANCEL, {"code": "m.user", "m.relates_to": to_answered},
                       ts=5_001),
        timeline_event("$text", proto.ROOM_MESSAGE, {"msgtype": "m.text", "body": "hi"}, ts=5_002),
        timeline_event("$new", proto.ROOM_MESSAGE, request, ts=6_000),
        timeline_event("$start", proto.START, relates({"from_device": OWNER.device_id}), ts=6_001),
    ]  # fmt: skip
    response = SyncResponse.from_dict(
        {
            "next_batch": "s1",
            "rooms": {"join": {"!dm:example.org": {"timeline": {"events": events}}}},
        }
    )
    found = verification_events(response)
    assert [(e.event_id, e.type) for e in found] == [
        ("$old", proto.REQUEST),
        ("$answered", proto.REQUEST),
        ("$cancel", proto.CANCEL),
        ("$new", proto.REQUEST),
        ("$start", proto.START),
    ]
    assert found[-1].flow_id == REQUEST_ID and found[0].flow_id == "$old"
    # Too old, or already cancelled: only $new is worth answering (the start is for REQUEST_ID).
    assert [e.event_id for e in fresh_requests(found, since_ms=2_000)] == ["$new"]


def test_the_terminal_shows_emoji_with_names_and_the_numbers() -> None:
    text = describe([("🐶", "Dog"), ("🔑", "Key")], (1234, 5678, 9012))
    assert "🐶 Dog   🔑 Key" in text
    assert "1234 5678 9012" in text
