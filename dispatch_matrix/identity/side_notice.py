"""One encrypted event readable by devices the bot otherwise keeps room keys from.

When an owner resets their cross-signing identity, their new devices are not signed by the
identity the bot pinned, so `Identities.restrict_sharing` keeps the room's keys from them and
they cannot read why the bot stopped obeying. This sends that one notice in a Megolm session
of its own: created here, its key sent (Olm-encrypted) to the devices named, used for this
one event and then dropped. The room's own outbound session is never touched, so nothing
said before or after reaches those devices, and concurrent sends cannot pick up the
widened audience (no await falls between creating the session and encrypting with it).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from nio.crypto import OutboundGroupSession

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.core.ids import EventID, RoomID
from dispatch_matrix.matrix.client import MatrixClient, _path

log = logs.get(__name__)

MEGOLM = "m.megolm.v1.aes-sha2"


async def send_readable_by(
    client: MatrixClient,
    room_id: RoomID,
    content: dict[str, Any],
    devices: dict[str, set[str]],
) -> EventID:
    """Send `content` (an m.room.message) encrypted in a one-off session whose key goes to
    exactly `devices` (user id → device ids); returns the event id. Devices nio does not
    know, or with which no Olm session can be set up, are skipped (and logged)."""
    nio = client.client
    olm = nio.olm
    if olm is None:
        raise HomeserverError("no encryption machine: cannot send an encrypted notice")
    if nio.should_query_keys:
        await client.call("keys/query", nio.keys_query())
    missing: dict[str, list[str]] = {}
    for user_id, wanted in devices.items():
        known = {device.id: device for device in nio.device_store.active_user_devices(user_id)}
        for device_id in wanted:
            device = known.get(device_id)
            if device is not None and not olm.session_store.get(device.curve25519):
                missing.setdefault(user_id, []).append(device_id)
    if missing:
        await client.call("keys/claim", nio.keys_claim(missing))

    # From here to the encryption nothing is awaited: the session exists for this one event.
    session = OutboundGroupSession()
    key_content = {
        "algorithm": MEGOLM,
        "room_id": room_id,
        "session_id": session.id,
        "session_key": session.session_key,
    }
    messages: dict[str, dict[str, Any]] = {}
    for user_id, wanted in devices.items():
        for device in nio.device_store.active_user_devices(user_id):
            if device.id not in wanted or device.id == nio.device_id:
                continue
            olm_session = olm.session_store.get(device.curve25519)
            if olm_session is None:
                log.warning("notice.device_unreachable", user=user_id, device=device.id)
                continue
            encrypted = olm._olm_encrypt(olm_session, device, "m.room_key", key_content)
            messages.setdefault(user_id, {})[device.id] = encrypted
    # Its key is on its way (the to-device send below goes before the event).
    session.mark_as_shared()
    plaintext = {"type": "m.room.message", "content": content, "room_id": room_id}
    payload: dict[str, Any] = {
        "algorithm": MEGOLM,
        "sender_key": olm.account.identity_keys["curve25519"],
        "ciphertext": session.encrypt(json.dumps(plaintext, separators=(",", ":"))),
        "session_id": session.id,
        "device_id": nio.device_id,
    }
    relates = content.get("m.relates_to")
    if relates is not None:
        # Clients read a reply's relation from the cleartext part (as nio's encrypt does).
        payload["m.relates_to"] = relates
    del session  # never used again: later messages are in the room's own session

    txn = uuid.uuid4().hex
    await client.api_ok(
        "PUT", _path("sendToDevice", "m.room.encrypted", txn), {"messages": messages}
    )
    reply = await client.api_ok(
        "PUT", _path("rooms", room_id, "send", "m.room.encrypted", txn), payload
    )
    reached = sorted(f"{user}:{device}" for user, per in messages.items() for device in per)
    log.info("notice.sent_readable", room=room_id, devices=reached)
    return EventID(str(reply.get("event_id", "")))
