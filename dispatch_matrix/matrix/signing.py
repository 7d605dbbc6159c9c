"""Ed25519 signing of Matrix JSON, and the bot's three cross-signing keys.

Pure functions over bytes and dicts: canonical JSON (the spec's "Signing JSON": the object
without `signatures` and `unsigned`, keys sorted, no spaces, UTF-8), unpadded base64 keys
and signatures. The private seeds live in the state folder's secrets/ (0600).
"""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canonicaljson import encode_canonical_json
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from ..state import write_private


def b64(data: bytes) -> str:
    """Unpadded standard base64, as Matrix writes keys and signatures."""
    return base64.b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    """Decode unpadded (or padded) standard or URL-safe base64."""
    text = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4))


def signable(obj: dict[str, Any]) -> bytes:
    """The bytes a Matrix signature covers."""
    return bytes(
        encode_canonical_json({k: v for k, v in obj.items() if k not in ("signatures", "unsigned")})
    )


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 key pair kept as its 32-byte seed."""

    seed: bytes

    @classmethod
    def generate(cls) -> SigningKey:
        private = Ed25519PrivateKey.generate()
        raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return cls(raw)

    @property
    def public(self) -> str:
        """The public key, unpadded base64."""
        key = Ed25519PrivateKey.from_private_bytes(self.seed).public_key()
        return b64(key.public_bytes(Encoding.Raw, PublicFormat.Raw))

    @property
    def key_id(self) -> str:
        """`ed25519:<public key>`, the id cross-signing keys go by."""
        return f"ed25519:{self.public}"

    def sign(self, obj: dict[str, Any], user_id: str) -> dict[str, Any]:
        """A copy of `obj` with this key's signature added under `user_id`."""
        signature = Ed25519PrivateKey.from_private_bytes(self.seed).sign(signable(obj))
        signed = copy.deepcopy(obj)
        signed.setdefault("signatures", {}).setdefault(user_id, {})[self.key_id] = b64(signature)
        return signed


def verify(obj: dict[str, Any], user_id: str, key_id: str, public_key: str) -> bool:
    """Whether `obj` carries a valid signature by `public_key` under `user_id`/`key_id`."""
    signature = obj.get("signatures", {}).get(user_id, {}).get(key_id)
    if not isinstance(signature, str):
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(unb64(public_key))
        key.verify(unb64(signature), signable(obj))
    except (InvalidSignature, ValueError):
        return False
    return True


def key_of(cross_signing_key: dict[str, Any]) -> str | None:
    """The single Ed25519 public key of a cross-signing key object."""
    keys = cross_signing_key.get("keys", {})
    values = [v for k, v in keys.items() if k.startswith("ed25519:")]
    return str(values[0]) if len(values) == 1 else None


@dataclass(frozen=True)
class CrossSigningKeys:
    """The bot's master, self-signing and user-signing keys."""

    master: SigningKey
    self_signing: SigningKey
    user_signing: SigningKey

    @classmethod
    def generate(cls) -> CrossSigningKeys:
        return cls(SigningKey.generate(), SigningKey.generate(), SigningKey.generate())

    @classmethod
    def load(cls, path: Path) -> CrossSigningKeys | None:
        """The keys saved at `path`, or None if there are none."""
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(
            SigningKey(unb64(data["master"])),
            SigningKey(unb64(data["self_signing"])),
            SigningKey(unb64(data["user_signing"])),
        )

    def save(self, path: Path) -> None:
        """Write the private seeds, readable only by us."""
        write_private(
            path,
            json.dumps(
                {
                    "master": b64(self.master.seed),
                    "self_signing": b64(self.self_signing.seed),
                    "user_signing": b64(self.user_signing.seed),
                }
            ),
        )

    def upload_body(self, user_id: str) -> dict[str, Any]:
        """The public keys as /keys/device_signing/upload wants them, sub-keys signed."""

        def public(key: SigningKey, usage: str) -> dict[str, Any]:
            return {"user_id": user_id, "usage": [usage], "keys": {key.key_id: key.public}}

        return {
            "master_key": public(self.master, "master"),
            "self_signing_key": self.master.sign(
                public(self.self_signing, "self_signing"), user_id
            ),
            "user_signing_key": self.master.sign(
                public(self.user_signing, "user_signing"), user_id
            ),
        }
