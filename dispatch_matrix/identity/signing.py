"""Ed25519 signing of Matrix JSON, and the bot's three cross-signing keys.

Pure functions over bytes and dicts: canonical JSON (the spec's "Signing JSON": the object
without `signatures` and `unsigned`, keys sorted, no spaces, UTF-8), unpadded base64 keys
and signatures. The private seeds live in the state folder's secrets/ (0600), beside their
public keys.

Verifying uses vodozemac, which nio loads anyway; signing and deriving a public key use
`cryptography`, imported only then (a first start, a pairing): its OpenSSL bindings are
about 8 MiB that an idle daemon does not need to hold.
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import vodozemac
from canonicaljson import encode_canonical_json

from dispatch_matrix.store.state import write_private

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


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
    # The public key as saved beside the seed (unpadded base64); derived when not given.
    known_public: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(secrets.token_bytes(32))

    def _private(self) -> Ed25519PrivateKey:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @property
    def public(self) -> str:
        """The public key, unpadded base64."""
        if self.known_public is not None:
            return self.known_public
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        key = self._private().public_key()
        return b64(key.public_bytes(Encoding.Raw, PublicFormat.Raw))

    @property
    def key_id(self) -> str:
        """`ed25519:<public key>`, the id cross-signing keys go by."""
        return f"ed25519:{self.public}"

    def sign(self, obj: dict[str, Any], user_id: str) -> dict[str, Any]:
        """A copy of `obj` with this key's signature added under `user_id`."""
        signature = self._private().sign(signable(obj))
        signed = copy.deepcopy(obj)
        signed.setdefault("signatures", {}).setdefault(user_id, {})[self.key_id] = b64(signature)
        return signed


def verify(obj: dict[str, Any], user_id: str, key_id: str, public_key: str) -> bool:
    """Whether `obj` carries a valid signature by `public_key` under `user_id`/`key_id`."""
    signature = obj.get("signatures", {}).get(user_id, {}).get(key_id)
    if not isinstance(signature, str):
        return False
    try:
        # Re-encoded: vodozemac reads only unpadded standard base64.
        key = vodozemac.Ed25519PublicKey.from_base64(b64(unb64(public_key)))
        signed = vodozemac.Ed25519Signature.from_base64(b64(unb64(signature)))
        key.verify_signature(signable(obj), signed)
    except ValueError:
        # Bad base64 (binascii.Error) and vodozemac's Key/SignatureException are ValueErrors.
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
        # Files written before the public keys were saved too derive them (once per start).
        public = data.get("public", {})

        def key(name: str) -> SigningKey:
            return SigningKey(unb64(data[name]), public.get(name))

        return cls(key("master"), key("self_signing"), key("user_signing"))

    @property
    def publics_saved(self) -> bool:
        """Whether the public keys came from the file (not derived from the seeds)."""
        keys = (self.master, self.self_signing, self.user_signing)
        return all(key.known_public is not None for key in keys)

    def save(self, path: Path) -> None:
        """Write the private seeds, readable only by us."""
        write_private(
            path,
            json.dumps(
                {
                    "master": b64(self.master.seed),
                    "self_signing": b64(self.self_signing.seed),
                    "user_signing": b64(self.user_signing.seed),
                    "public": {
                        "master": self.master.public,
                        "self_signing": self.self_signing.public,
                        "user_signing": self.user_signing.public,
                    },
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
