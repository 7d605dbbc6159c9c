"""The secrets redactor: tables of hostile lines (each secret hidden, what surrounds it kept)
and of ordinary lines (unchanged), the environment's secrets, and the `known` variant."""

from __future__ import annotations

import base64
import codecs
import hashlib
import json
import re
import urllib.parse
import uuid

import pytest

from dispatch_matrix.core import redaction
from dispatch_matrix.core.logs import REDACTED, Redactor
from dispatch_matrix.core.redaction import environment_secrets, looks_secret
from dispatch_matrix.toolbox.process import _Capture

_JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
_AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
_PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\nMzEfYyjiWA4R4/M2bS1G"

# (line, the secret in it that must go, what must stay)
HOSTILE = [
    (
        "token syt_Ym90_AbCdEfGhIjKlMnOpQrSt_1a2B3c here",
        "syt_Ym90_AbCdEfGhIjKlMnOpQrSt_1a2B3c",
        "here",
    ),
    ("refresh syr_Ym90_AbCdEfGhIjKlMnOp_0c1d2e", "syr_Ym90_AbCdEfGhIjKlMnOp_0c1d2e", "refresh"),
    (
        "mas mct_AbCdEfGhIjKlMnOpQrStUvWxYz0123_1a2b3c ok",
        "mct_AbCdEfGhIjKlMnOpQrStUvWxYz0123",
        "ok",
    ),
    ("mas mat_AbCdEfGhIjKlMnOpQrStUvWxYz0123_4d5e6f.", "mat_AbCdEfGhIjKlMnOpQrStUvWxYz0123", "mas"),
    ("key sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv-wxyz_0123", "sk-ant-api03-AbCdEfGhIjKl", "key"),
    (
        "pat github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEF",
        "github_pat_11ABC",
        "pat",
    ),
    ("ghp_0123456789abcdefghijABCDEFGHIJklmnop pushed", "ghp_0123456789abcdefghij", "pushed"),
    ("oauth gho_0123456789abcdefghijABCDEFGHIJklmnop", "gho_0123456789abcdefghij", "oauth"),
    ("id_token " + _JWT + " end", _JWT, "end"),
    ('{"jwt": "' + _JWT + '"}', _JWT[:40], '"jwt"'),
    ("AWS AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE", "used"),
    ("session ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A", "session"),
    (f"aws_secret_access_key = {_AWS_SECRET}", _AWS_SECRET, "aws_secret_access_key"),
    (f"AWS_SECRET_ACCESS_KEY={_AWS_SECRET}", _AWS_SECRET, "AWS_SECRET_ACCESS_KEY"),
    (f"aws configure set aws_secret_access_key {_AWS_SECRET}", _AWS_SECRET, "configure"),
    (f'{{"SecretAccessKey": "{_AWS_SECRET}"}}', _AWS_SECRET, "SecretAccessKey"),
    (
        "git clone https://me:hunter2hunter2@git.example.org/r.git",
        "hunter2hunter2",
        "git.example.org",
    ),
    ("redis://:s3cr3t-pw@cache:6379/0", "s3cr3t-pw", "cache:6379"),
    ("https://x-access-token:abc123def456@github.com/o/r", "abc123def456", "github.com/o/r"),
    ("FOO_PASSWORD=correct-horse-battery", "correct-horse-battery", "FOO_PASSWORD="),
    ("export GITHUB_TOKEN=abcdef0123456789", "abcdef0123456789", "export GITHUB_TOKEN="),
    ("CLIENT_SECRET: 'quoted secret value'", "quoted secret value", "CLIENT_SECRET"),
    ("STRIPE_KEY=rk_abcdefghijkl", "rk_abcdefghijkl", "STRIPE_KEY"),
    ("DB_PASS=opensesame", "opensesame", "DB_PASS"),
    ("DB_PWD=opensesame1", "opensesame1", "DB_PWD"),
    ('password = "correct horse battery staple"', "correct horse battery staple", "password"),
    ('{"password": "hunter22", "user": "me"}', "hunter22", '"user": "me"'),
    ('{\\"api_key\\": \\"abcd1234efgh\\"}', "abcd1234efgh", "api_key"),
    ("api-key: 0123456789abcdef", "0123456789abcdef", "api-key"),
    ('{"accessToken": "tok-4f3a2b1c"}', "tok-4f3a2b1c", "accessToken"),
    ("clientSecret: s3cretvalue", "s3cretvalue", "clientSecret"),
    ('"apiKey": "AbCd1234"', "AbCd1234", "apiKey"),
    (
        "client-key-data: LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo=",
        "LS0tLS1CRUdJTi",
        "client-key",
    ),
    ('"auth": "dXNlcjpwYXNzd29yZA=="', "dXNlcjpwYXNzd29yZA==", '"auth"'),
    ("Authorization: Bearer abc.def-123_456", "abc.def-123_456", "Authorization: Bearer"),
    ("authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz", "authorization: Basic"),
    ("curl -H 'Authorization: token ghx9Zq8Yw7'", "ghx9Zq8Yw7", "curl -H"),
    ("bearer 9f8e7d6c5b4a39281706", "9f8e7d6c5b4a39281706", "bearer"),
    ("mysql --password s3cr3tpw --user root", "s3cr3tpw", "--user root"),
    ("cli --token=abcdef12345 --verbose", "abcdef12345", "--verbose"),
    ("machine api.example.org login me password hunter22x", "hunter22x", "api.example.org"),
    ("machine h.example\n  login me\n  password multi-line-pw", "multi-line-pw", "login me"),
    (
        "-----BEGIN RSA PRIVATE KEY-----\n" + _PEM_BODY + "\n-----END RSA PRIVATE KEY-----\nafter",
        "MIIEvQIBADANBgkq",
        "after",
    ),
    ("here:\n-----BEGIN OPENSSH PRIVATE KEY-----\n" + _PEM_BODY, "MzEfYyjiWA4R4", "here:"),
    (
        "```\n-----BEGIN PRIVATE KEY-----\n" + _PEM_BODY + "\n```\nthe rest",
        "MIIEvQIBADANBgkq",
        "the rest",
    ),
    ('{"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkq', "MIIEvQIBADANBgkq", "{"),
    ("slack xoxb-0123456789-abcdefghij", "xoxb-0123456789-abcdefghij", "slack"),
    ("gitlab glpat-AbCdEfGhIjKlMnOpQrSt", "glpat-AbCdEfGhIjKlMnOpQrSt", "gitlab"),
    ("openai sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "sk-proj-AbCdEfGhIjKl", "openai"),
    ("google AIzaSyA-0123456789abcdefghijklmnopqrstu", "AIzaSyA-0123456789", "google"),
    ("hf hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh", "hf_AbCdEfGhIjKlMnOp", "hf"),
    ("npm npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "npm_AbCdEfGhIjKl", "npm"),
    ("stripe sk_live_AbCdEfGhIjKlMnOpQrSt", "sk_live_AbCdEfGhIjKl", "stripe"),
    (
        "old MDAxOGxvY2F0aW9uIGxvY2FsaG9zdAowMDEzaWRlbnRpZmllciBrZXkKMDAxMGNpZA",
        "MDAxOGxvY2F0",
        "old",
    ),
    ("Password: Tr0ub4dor&3", "Tr0ub4dor&3", "Password:"),
    ("ünïcödé PASSWORD=s3cr3t-ünï and more", "s3cr3t-", "and more"),
]


@pytest.mark.parametrize(("line", "secret", "kept"), HOSTILE)
def test_the_redactor_hides_the_secret_and_keeps_the_rest(
    line: str, secret: str, kept: str
) -> None:
    out = Redactor().text(line)
    assert secret not in out, out
    assert REDACTED in out
    assert kept in out, out


_PNG = base64.b64encode(hashlib.sha256(b"x").digest() * 60 + bytes(range(256)) * 4).decode()

BENIGN = [
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 touched src/app/main.py",
    "git log --oneline -5 && git diff HEAD~1 -- README.md",
    f"request {uuid.UUID(int=0x123E4567E89B12D3A456426614174000)} finished in 3.2 s",
    f"data:image/png;base64,{_PNG}",
    "see https://github.com/org/repo/pull/42 and http://localhost:8008/_matrix/client",
    "ssh://git@github.com/org/repo.git and git@github.com:org/repo.git",
    "mail me at someone@example.org or @bot:example.org in !room:example.org",
    "max_tokens=8192 input_tokens=1200 cache_read_input_tokens=300",
    "token = get_token()",
    "password = request.form['password']",
    "api_key = os.environ['API_KEY']",
    "secret: ${DB_SECRET}",
    "PASSWORD=$DB_PASSWORD",
    "primary_key = True, token: null, secret: none",
    "PWD=/home/me OLDPWD=/tmp KEYBOARD=us",
    "the bearer of bad news brought a token of thanks",
    "bypass = true; compass: north",
    "tokens start with syt_ and ghp_, keys with sk-ant-",
    "risk-assessment-document-for-the-whole-team-2026",
    "format_string_values_for_the_report_generator_x",
    "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUE\n-----END CERTIFICATE-----",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
    "Use `tools/test tests/test_units.py` -- then commit.",
    "The quick brown fox jumps over the lazy dog.",
    "2026-01-02T03:04:05Z task.finished task=3f2a9c1 steps=4",
    "ANTHROPIC_API_KEY=sk-ant-... dispatch-matrix run",
    "curl -H 'Authorization: Bearer <ADMIN_TOKEN>' https://hs/_synapse/admin",
    'password = "…"',
    "Every input token: plain, written to the cache, and read from it.",
    "log in with --password (or --password-file), then https://user:…@host",
]


@pytest.mark.parametrize("line", BENIGN)
def test_ordinary_text_passes_unchanged(line: str) -> None:
    assert Redactor().text(line) == line


def test_known_values_are_hidden_everywhere_and_short_ones_are_not_registered() -> None:
    redactor = Redactor()
    redactor.add("plain-words-secret", "short", None, "")
    out = redactor.text("a plain-words-secret, twice: plain-words-secret; short stays")
    assert out == f"a {REDACTED}, twice: {REDACTED}; short stays"


def test_known_hides_only_registered_values_not_shapes() -> None:
    redactor = Redactor()
    redactor.add("daemon-own-password")
    line = "pw daemon-own-password and FOO_TOKEN=the-owners-own-token"
    assert redactor.known(line) == f"pw {REDACTED} and FOO_TOKEN=the-owners-own-token"
    assert "the-owners-own-token" not in redactor.text(line)


def test_overlapping_finds_become_one_marker() -> None:
    redactor = Redactor()
    redactor.add("sk-ant-api03-registered-key")
    out = redactor.text("ANTHROPIC_API_KEY=sk-ant-api03-registered-key")
    assert out == f"ANTHROPIC_API_KEY={REDACTED}"


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("ANTHROPIC_API_KEY", True),
        ("ANTHROPIC_AUTH_TOKEN", True),
        ("DISPATCH_MATRIX__PASSWORD", True),
        ("DISPATCH_VOICE__API_KEY", True),
        ("GITHUB_TOKEN", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("STRIPE_KEY", True),
        ("DB_PASS", True),
        ("MYSQL_PWD", True),
        ("NOTES_MCP_PASSWORD", True),
        ("gh-token", True),
        ("PATH", False),
        ("HOME", False),
        ("PWD", False),
        ("OLDPWD", False),
        ("SSH_AUTH_SOCK", False),
        ("KEYBOARD_LAYOUT", False),
        ("DISPATCH_LOG__LEVEL", False),
        ("ANTHROPIC_BASE_URL", False),
        ("LANG", False),
    ],
)
def test_secret_looking_environment_names(name: str, secret: bool) -> None:
    assert looks_secret(name) is secret


def test_environment_secrets_are_the_values_of_secret_names_and_of_named_ones() -> None:
    environ = {
        "ANTHROPIC_API_KEY": "sk-ant-from-the-env",
        "DISPATCH_MATRIX__PASSWORD": "env-password",
        "NOTES_SERVER": "opaque-value-1",
        "FEATURE_TOKEN": "true",
        "HOME": "/home/me",
    }
    found = environment_secrets(environ, named=["NOTES_SERVER"])
    assert sorted(found) == ["env-password", "opaque-value-1", "sk-ant-from-the-env"]


# -- known secrets in their encodings --------------------------------------------------------

_KEY = "sk-ant-api03-Zx9Qw7Er5Ty3Ui1Op0As2Df4Gh6Jk8Lz"
# A password with every character URL and JSON encoders change.
_PASSWORD = 'pä ss/w+rd?&="x\\y'


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def _forms(secret: str) -> list[tuple[str, str]]:
    """(how, the text a tool might print) for one secret."""
    raw = secret.encode()
    wrapped = _b64(b"header:" + raw * 3)
    return [
        ("base64", _b64(raw)),
        ("base64 unpadded", _b64(raw).rstrip("=")),
        ("base64url", _b64url(raw)),
        ("base64url unpadded", _b64url(raw).rstrip("=")),
        ("base64 of echo", _b64(raw + b"\n")),
        ("inside a blob, offset 0", _b64(raw + b"-trailer")),
        ("inside a blob, offset 1", _b64(b"x" + raw + b"!")),
        ("inside a blob, offset 2", _b64(b"xy" + raw)),
        ("inside a url blob, offset 1", _b64url(b"{" + raw + b"}")),
        (
            "base64 wrapped at 76",
            "\n".join(wrapped[i : i + 76] for i in range(0, len(wrapped), 76)),
        ),
        ("hex", raw.hex()),
        ("HEX", raw.hex().upper()),
        ("url", urllib.parse.quote(secret, safe="")),
        ("url plus", urllib.parse.quote_plus(secret)),
        ("url every byte", "".join(f"%{b:02X}" for b in raw)),
        ("json", json.dumps(secret)),
        ("json slashes", json.dumps(secret).replace("/", "\\/")),
        ("json unicode", "".join(f"\\u{ord(c):04x}" for c in secret)),
        ("upper", secret.upper()),
        ("lower", secret.lower()),
        ("swapped", secret.swapcase()),
        ("reversed", secret[::-1]),
        ("spaced", " ".join(secret)),
        ("split over lines", secret[:10] + "\n" + secret[10:]),
    ]


def _still_there(secret: str, out: str) -> list[str]:
    """What of `secret` survives in `out`, however it was encoded: its decodings."""
    left = []
    squeezed = "".join(out.split())
    for run in re.findall(r"[A-Za-z0-9+/_-]{12,}", squeezed):
        for offset in range(4):
            chunk = run[offset:]
            chunk = chunk[: len(chunk) // 4 * 4]
            for decode in (base64.b64decode, base64.urlsafe_b64decode):
                try:
                    decoded = decode(chunk).decode("utf-8", errors="ignore")
                except ValueError:
                    continue
                if secret[:12] in decoded or secret[-12:] in decoded:
                    left.append(f"base64 {run}")
    unescaped = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), squeezed)
    unescaped = re.sub(r"\\(.)", r"\1", unescaped)
    hexes = [
        bytes.fromhex(run[offset:][: (len(run) - offset) // 2 * 2]).decode(errors="ignore")
        for run in re.findall(r"[0-9a-fA-F]{16,}", squeezed)
        for offset in (0, 1)
    ]
    for text in (
        squeezed.lower(),
        squeezed[::-1].lower(),
        urllib.parse.unquote_plus(squeezed).lower(),
        unescaped.lower(),
        *hexes,
    ):
        text = "".join(text.split())
        if "".join(secret[:12].lower().split()) in text or secret[-12:].lower() in text:
            left.append(f"plain {text[:40]}")
    return left


@pytest.mark.parametrize("secret", [_KEY, _PASSWORD])
@pytest.mark.parametrize("how", [how for how, _ in _forms(_KEY)])
def test_a_known_secret_is_hidden_in_every_encoding(secret: str, how: str) -> None:
    redactor = Redactor()
    redactor.add(secret)
    form = dict(_forms(secret))[how]
    assert _still_there(secret, f"before {form} after"), "the check sees the secret"
    for out in (redactor.known(f"before {form} after"), redactor.text(f"before {form} after")):
        assert REDACTED in out, how
        assert out.startswith("before ") and out.endswith(" after")
        assert _still_there(secret, out) == [], (how, out)


@pytest.mark.parametrize("line", BENIGN)
def test_ordinary_text_passes_unchanged_with_known_secrets_registered(line: str) -> None:
    redactor = Redactor()
    redactor.add(_KEY, _PASSWORD, "bot-password-123", "syt_Ym90_registered_token_1a2B3c")
    assert redactor.known(line) == line
    assert redactor.text(line) == Redactor().text(line)


@pytest.mark.parametrize(
    "shown",
    [
        # Where a tool cut its output: at the end, at an elision, at a cut line.
        "build log\nexport KEY=" + _KEY[:20],
        "head of the output " + _KEY[:12] + "\n[… 4096 bytes elided …]\n" + _KEY[-9:] + " tail",
        "     1\tKEY=" + _KEY[:30] + " … [line cut]\n     2\tnext",
        "first lines…\n" + _b64(_KEY.encode())[:16],
    ],
)
def test_a_known_secret_cut_short_is_hidden(shown: str) -> None:
    redactor = Redactor()
    redactor.add(_KEY)
    out = redactor.known(shown)
    assert REDACTED in out
    for size in (9, 12):
        assert _KEY[:size] not in out and _KEY[-size:] not in out
        assert _b64(_KEY.encode())[:size] not in out


def test_a_short_start_of_a_secret_or_one_not_at_a_cut_stays() -> None:
    redactor = Redactor()
    redactor.add(_KEY)
    # Seven characters are any Anthropic key's start; a start in mid-text is no cut.
    for line in ("keys start sk-ant-", "keys look like sk-ant-api03-Zx9 in the docs"):
        assert redactor.known(line) == line


def test_a_secret_straddling_the_cut_of_a_long_output_is_not_half_shown() -> None:
    # The shell tool keeps head and tail of an output (process.py); the cut falls in a key.
    capture = _Capture.of(200)
    capture.add(b"x" * 88 + _KEY.encode() + b"y" * 500 + _KEY.encode() + b"z" * 80)
    shown = capture.text()
    assert "elided" in shown and _KEY not in shown
    redactor = Redactor()
    redactor.add(_KEY)
    out = redactor.known(shown)
    assert _KEY[:8] not in out and _KEY[-8:] not in out
    assert out.startswith("x" * 88) and out.endswith("z" * 80)


def test_a_short_known_value_is_hidden_as_it_is_and_reversed_but_not_in_other_cases() -> None:
    # Under eight characters a value may be a word: "Summer" must not hide "summer".
    redactor = Redactor()
    redactor.add("Summer1")
    out = redactor.known("pw Summer1 rev 1remmuS b64 " + _b64(b"Summer1") + " word summer1")
    # The base64 keeps only its last, partial character and padding (2 bits of the value).
    assert out.startswith(f"pw {REDACTED} rev {REDACTED} b64 {REDACTED}")
    assert out.endswith(" word summer1") and "U3VtbWVy" not in out


def _xxd(data: bytes) -> str:
    """`xxd` output: offsets, hex in pairs of bytes, the printable column."""
    lines = []
    for at in range(0, len(data), 16):
        chunk = data[at : at + 16]
        pairs = " ".join(chunk[i : i + 2].hex() for i in range(0, len(chunk), 2))
        shown = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{at:08x}: {pairs:<40} {shown}")
    return "\n".join(lines)


# Red team: encodings a one-word shell pipe makes (`base32`, `tr` rot13, `xxd`, `od`).
_MORE_FORMS = {
    "base32": lambda raw: base64.b32encode(raw).decode(),
    "base32 at offset 1": lambda raw: base64.b32encode(b"x" + raw).decode(),
    "base32 at offset 3": lambda raw: base64.b32encode(b"xyz" + raw).decode(),
    "rot13": lambda raw: codecs.encode(raw.decode(), "rot13"),
    "xxd": lambda raw: _xxd(b"KEY=" + raw),
    "od -An -tx1": lambda raw: " ".join(f"{b:02x}" for b in raw),
    # Attack review: hex dumps with offsets and a text column (xxd was an expected failure),
    # each on lines of its own as a command prints it.
    "hexdump -C": lambda raw: "\n" + _hexdump_c(b"KEY=" + raw),
    "od -tx1": lambda raw: (
        "\n"
        + "\n".join(
            f"{at:07o} " + " ".join(f"{b:02x}" for b in (b"KEY=" + raw)[at : at + 16])
            for at in range(0, len(raw) + 4, 16)
        )
    ),
    "xxd at the start of the output": lambda raw: "\n" + _xxd(b"KEY=" + raw),
}


def _hexdump_c(data: bytes) -> str:
    """`hexdump -C`: offset, sixteen bytes with a gap after eight, the text in bars."""
    lines = []
    for at in range(0, len(data), 16):
        chunk = data[at : at + 16]
        left = " ".join(f"{b:02x}" for b in chunk[:8])
        right = " ".join(f"{b:02x}" for b in chunk[8:])
        shown = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{at:08x}  {left:<23}  {right:<23}  |{shown}|")
    return "\n".join(lines)


@pytest.mark.parametrize("how", list(_MORE_FORMS))
def test_a_known_secret_is_hidden_in_the_encodings_of_shell_tools(how: str) -> None:
    redactor = Redactor()
    redactor.add(_KEY)
    form = _MORE_FORMS[how](_KEY.encode())
    out = redactor.text(f"before {form} after")
    assert REDACTED in out, (how, out)


def _interleave(secret: str, between: str) -> str:
    return between.join(secret)


def _fullwidth(secret: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in secret)


# Attack review: a known secret with characters put between its own (that a reader, or the
# model, reads past), drawn in other characters that look the same, or printed byte by byte.
# Each of these reached the model and the log before.
_DISGUISES = {
    "zero-width spaces": lambda s: _interleave(s, "\u200b"),
    "zero-width joiners": lambda s: _interleave(s, "\u200d"),
    "soft hyphens": lambda s: _interleave(s, "\u00ad"),
    "word joiners": lambda s: _interleave(s, "\u2060"),
    "byte order marks": lambda s: _interleave(s, "\ufeff"),
    "variation selectors": lambda s: _interleave(s, "\ufe0f"),
    "combining accents": lambda s: _interleave(s, "\u0301"),
    "tag characters": lambda s: _interleave(s, "\U000e0041"),
    "UTF-16 read as text (NULs)": lambda s: s.encode("utf-16-le").decode("latin-1"),
    "terminal colours": lambda s: _interleave(s, "\x1b[01;31m\x1b[K"),
    "dashes": lambda s: _interleave(s, "-"),
    "commas": lambda s: _interleave(s, ","),
    "dots": lambda s: _interleave(s, "."),
    "backslashes": lambda s: _interleave(s, "\\"),
    "fullwidth": _fullwidth,
    "Cyrillic look-alikes": lambda s: s.replace("a", "\u0430").replace("e", "\u0435"),
    "\\x escapes": lambda s: "".join(f"\\x{b:02x}" for b in s.encode()),
    "0x bytes (xxd -i)": lambda s: ", ".join(f"0x{b:02x}" for b in s.encode()),
    "octal escapes": lambda s: "".join(f"\\{b:03o}" for b in s.encode()),
    "decimal bytes (od -tu1)": lambda s: " ".join(str(b) for b in s.encode()),
    "HTML decimal entities": lambda s: "".join(f"&#{ord(c)};" for c in s),
    "HTML hex entities": lambda s: "".join(f"&#x{ord(c):x};" for c in s),
}


@pytest.mark.parametrize("secret", [_KEY, _PASSWORD])
@pytest.mark.parametrize("how", list(_DISGUISES))
def test_a_known_secret_is_hidden_whatever_stands_between_its_characters(
    secret: str, how: str
) -> None:
    redactor = Redactor()
    redactor.add(secret)
    shown = _DISGUISES[how](secret)
    letters = re.sub(r"[^a-z0-9]", "", secret.lower())
    for out in (redactor.known(f"before {shown} after"), redactor.text(f"before {shown} after")):
        assert REDACTED in out, (how, out)
        assert out.startswith("before ") and out.endswith(" after"), (how, out)
        # No run of a fifth of the secret's letters and digits is left, in any disguise.
        kept = "".join(ch for ch in out.lower() if ch.isascii() and ch.isalnum())
        assert not any(
            letters[i : i + len(letters) // 5] in kept for i in range(len(letters) // 5 * 4)
        ), (how, out)


def test_ordinary_text_between_separators_keeps_its_letters() -> None:
    """What is not a secret keeps its separators: only the disguised secret goes."""
    redactor = Redactor()
    redactor.add(_KEY)
    line = "a-b-c 1,2,3 path/to/file.py \x1b[01;31mred\x1b[m caf\u00e9 \uff21\uff22"
    assert redactor.known(line) == line


@pytest.mark.parametrize(
    "line",
    [
        # One long line of hex-looking words: a dump's line to `_DUMP_LINE`, read group by
        # group. Each group summed every group before it: 280 KB took 32 s, 1 MB minutes.
        "abcdef " * 150_000,
        "00000000: " + "abcd " * 210_000,
    ],
)
# A hang guard, not a speed bound: 1 MB is looked through in under a second; squared, it
# took minutes (the daemon blocked that long on one tool output).
@pytest.mark.timeout(60)
def test_a_long_line_of_hex_words_is_looked_through_in_linear_time(line: str) -> None:
    redactor = Redactor()
    redactor.add(_KEY)
    assert redactor.known(line) == line


@pytest.mark.parametrize(
    ("secret", "line"),
    [
        # Digits are what dates, times, versions and sizes are written with, separators
        # between: an all-digit value is found among a text's digits only when long.
        ("20261205", "deployed 2026-12-05 06:00, build 2026.12.05"),
        ("123456789012", "at 12:34:56.789 on 0-12"),
        ("0471108151", "call 0471/108 15-1 now"),
    ],
)
def test_a_short_all_digit_secret_does_not_hide_dates_and_numbers(secret: str, line: str) -> None:
    redactor = Redactor()
    redactor.add(secret)
    assert redactor.known(line) == line
    # As it is, and broken only by whitespace (a wrapped line), it is still hidden.
    for shown in (f"pin={secret}", f"pin={secret[:4]} {secret[4:]}"):
        out = redactor.known(shown)
        assert out == f"pin={REDACTED}", out


def test_a_long_text_maps_a_found_secret_back_as_a_short_one_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past `_BLOCK` the view is mapped back block by block: the same output as mapping
    the whole text character by character, wherever the secrets lie."""
    redactor = Redactor()
    redactor.add(_KEY)
    disguised = "\u200b".join(_KEY)  # zero-width spaces between its characters
    filler = "line of ordinary output, caf\u00e9 \x1b[01;31mred\x1b[m 12-34\n"
    texts = (
        filler * 3000 + disguised + "\n" + filler * 3000,
        disguised + filler * 4000,
        filler * 4000 + "\n\n\n" + _KEY[:20] + "\x1b[m" + _KEY[20:],
        filler * 1800 + _KEY + filler * 1800 + disguised + filler * 10,
        # One line: blocks are cut after any whitespace, not only at line ends.
        filler.replace("\n", " ") * 3000 + "\x1b[01;31m" + disguised + filler.replace("\n", " "),
    )
    fast = [redactor.known(text) for text in texts]
    monkeypatch.setattr(redaction, "_BLOCK", 1 << 30)
    for text, out in zip(texts, fast, strict=True):
        assert len(text) > 1 << 16
        assert REDACTED in out
        assert out == redactor.known(text)
