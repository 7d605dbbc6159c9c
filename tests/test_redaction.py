"""The secrets redactor: tables of hostile lines (each secret hidden, what surrounds it kept)
and of ordinary lines (unchanged), the environment's secrets, and the `known` variant."""

from __future__ import annotations

import base64
import hashlib
import uuid

import pytest

from dispatch_matrix.logs import REDACTED, Redactor
from dispatch_matrix.redaction import environment_secrets, looks_secret

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
