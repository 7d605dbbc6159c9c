"""Thinking blocks signed as the service signs them, so an altered one is caught.

The service returns each ``thinking`` block with an opaque ``signature`` and each
``redacted_thinking`` block as opaque ``data``; sent back in a later request, a block must
be exactly as it came, or the request is refused with a 400. Here the signature is an
HMAC-SHA256 of the thinking text under a key of the server's, so a changed word, a dropped
signature or a block made up by the client fails the same way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets


class Signer:
    """Signs and checks thinking blocks with one server's key."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def _mac(self, kind: str, text: str) -> bytes:
        return hmac.new(self._key, f"{kind}\0{text}".encode(), hashlib.sha256).digest()

    def sign(self, thinking: str) -> str:
        """The signature of a thinking block with this text."""
        return base64.b64encode(b"fakesig1" + self._mac("thinking", thinking)).decode()

    def verify(self, thinking: str, signature: object) -> bool:
        """Whether `signature` is this server's for exactly this thinking text."""
        return isinstance(signature, str) and hmac.compare_digest(
            signature.encode(), self.sign(thinking).encode()
        )

    def redacted(self, hidden: str = "") -> str:
        """The opaque ``data`` of a redacted_thinking block."""
        payload = json.dumps({"hidden": hidden or secrets.token_hex(8)})
        mac = self._mac("redacted", payload)
        return base64.b64encode(payload.encode() + b"\0" + mac).decode()

    def verify_redacted(self, data: object) -> bool:
        """Whether `data` is a redacted_thinking payload this server made, unchanged."""
        if not isinstance(data, str):
            return False
        try:
            raw = base64.b64decode(data.encode(), validate=True)
        except ValueError:
            return False
        payload, _, mac = raw.partition(b"\0")
        return hmac.compare_digest(mac, self._mac("redacted", payload.decode(errors="replace")))
