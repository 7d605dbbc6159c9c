"""Whether a config value looks like a secret: by its name or by its shape. Pure.

Used to keep secrets out of the config (`mcp import` moves them to files), to tell the
redactor which values to scrub, and by `doctor` to warn about a token written inline.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from dispatch_matrix.core.logs import REDACTED, REDACTOR

_SECRET_NAME = re.compile(
    r"(token|secret|passw|passphrase|api[_-]?key|apikey|access[_-]?key|private[_-]?key|"
    r"client[_-]?secret|credential|auth|cookie|session|bearer|signature|pat$|_pat_|^pat_)",
    re.I,
)
# Names that contain a secret-ish word but hold none (`AUTHOR`, `TOKENIZER_MODEL`).
_HARMLESS_NAME = re.compile(
    r"^(author(_?name|_?email)?$|oauth_?callback|auth_?url|token_?url|tokenizer)", re.I
)
_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}")
_SCHEMES = {"bearer", "basic", "token", "bot", "apikey"}
_URL_WITH_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.I)


def looks_secret(name: str, value: str) -> bool:
    """Whether `value` (of a variable, header or argument called `name`) is likely secret.

    By the name (`GITHUB_TOKEN`, `Authorization`, `X-Api-Key`), by a known token shape
    (`ghp_…`, `sk-ant-…`, `xoxb-…`), by a password in a URL (`postgres://u:pw@h/db`), or by
    being a long random-looking string. A `${VAR}` reference is not a secret itself.
    """
    text = value.strip()
    if _REFERENCE.search(text):
        # `Bearer ${TOKEN}`: the secret is elsewhere; only what is written here counts.
        text = _REFERENCE.sub("", text).strip()
        if text.lower() in _SCHEMES:
            return False
    if not text:
        return False
    if _SECRET_NAME.search(name) and not _HARMLESS_NAME.match(name) and len(text) >= 4:
        return True
    if REDACTED in REDACTOR.shapes(text):
        return True
    if _URL_WITH_PASSWORD.match(text):
        return True
    return _random_looking(text)


def _random_looking(text: str) -> bool:
    """A long single word of mixed letters and digits with high entropy: a key, not a word
    or a path."""
    if len(text) < 24 or any(c.isspace() for c in text) or "/" in text or "\\" in text:
        return False
    if not (any(c.isdigit() for c in text) and any(c.isalpha() for c in text)):
        return False
    counts = Counter(text)
    entropy = -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())
    return entropy >= 4.0
