"""The forms a secret value may take in text: encoded, escaped or turned around.

A tool's output may carry a known secret not as written but as a program printed it:
base64 or base32 inside a larger blob, hex, URL-encoded, JSON-escaped, reversed, rot13,
byte by byte in a program's escapes.
This module lists those forms for one value; `redaction.KnownSecrets` looks for them.
Pure, and run once per known value at start-up, never per text.
"""

from __future__ import annotations

import base64
import codecs
import json
from urllib.parse import quote, quote_plus

_TO_URL64 = str.maketrans("+/", "-_")


def encoded_forms(value: str) -> list[str]:
    """The forms of `value` a program may print, in their own case (duplicates kept):
    itself, reversed, rot13, base64, base64url and base32 at any alignment, hex,
    URL-encoded (as `quote` does, and every byte), JSON-escaped (as `dumps` does with and
    without `ensure_ascii`, with `\\/`, and every character as `\\uXXXX`), byte by byte
    (`\\x67`, `0x67`, octal, decimal) and as HTML character references."""
    raw = value.encode("utf-8")
    escaped = json.dumps(value)[1:-1]
    return [
        value,
        value[::-1],
        *_base64_cores(raw),
        *_base32_cores(raw),
        codecs.encode(value, "rot13"),
        raw.hex(),
        quote(value, safe=""),
        quote_plus(value, safe=""),
        "".join(f"%{byte:02x}" for byte in raw),
        escaped,
        escaped.replace("/", "\\/"),
        json.dumps(value, ensure_ascii=False)[1:-1],
        _json_units(value),
        # Byte by byte as programs print bytes: `\x67` (printf %q, a bytes repr), `0x67`
        # (xxd -i), octal `\147` (od -b, sed l), decimal `103` (od -tu1, a list of bytes).
        # Looked for by their letters and digits, whatever separates them.
        "".join(f"\\x{byte:02x}" for byte in raw),
        " ".join(f"0x{byte:02x}" for byte in raw),
        "".join(f"\\{byte:03o}" for byte in raw),
        " ".join(str(byte) for byte in raw),
        # HTML's character references count characters, not bytes (the same for ASCII).
        "".join(f"&#{ord(char)};" for char in value),
        "".join(f"&#x{ord(char):x};" for char in value),
    ]


def _base64_cores(raw: bytes) -> list[str]:
    """The base64 (and base64url) characters that depend on `raw` alone, for each of the
    three alignments it can have inside a larger blob: found whatever comes before or after
    it, padding or not."""
    cores = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode().rstrip("=")
        core = encoded[-(-offset * 8 // 6) : (offset + len(raw)) * 8 // 6]
        cores += [core, core.translate(_TO_URL64)]
    return cores


def _base32_cores(raw: bytes) -> list[str]:
    """As `_base64_cores`, for base32 (5 bits a character, five alignments)."""
    cores = []
    for offset in range(5):
        encoded = base64.b32encode(b"\0" * offset + raw).decode().rstrip("=")
        cores.append(encoded[-(-offset * 8 // 5) : (offset + len(raw)) * 8 // 5])
    return cores


def _json_units(value: str) -> str:
    """Every character as a JSON `\\uXXXX` escape (UTF-16 code units)."""
    units = value.encode("utf-16-be")
    pairs = (int.from_bytes(units[i : i + 2], "big") for i in range(0, len(units), 2))
    return "".join(f"\\u{unit:04x}" for unit in pairs)
