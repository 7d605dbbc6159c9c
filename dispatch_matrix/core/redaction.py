"""Finding secrets in text: the values we know, and strings shaped like secrets.

Pure and fast: it runs on every log record and every message the bot sends. Each shape
is a regular expression that starts with a literal (so the search skips ahead at C speed)
and is tried only when its trigger literal is in the text; case-insensitive names are
matched on the lower-cased text, which has the same length when the text is ASCII. What
it finds are spans; overlapping spans become one marker.

It errs on the side of hiding: a value after `password =` is hidden even in prose, but
ordinary text (git SHAs, UUIDs, base64 data, URLs without a password, `max_tokens=8192`,
code such as `token = get_token()`) passes unchanged.

The values we know (the bot's password and token, the API key, the environment's) are
found by `known_secrets.py`, in every form a program may print them in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

REDACTED = "«redacted»"

# Values that are never secrets, whatever name they follow: words, and placeholders such as
# `sk-ant-...` or `<TOKEN>` in documentation.
_PLAIN = (
    r"(?i:true|false|none|null|nil|yes|no|undefined|redacted)\b"
    r"|[^\s\"']*(?:\.\.\.|…)|<"
)
# What an unquoted value may hold: it stops at what ends a shell word or starts code, so
# `token = get_token()` and `password: ${DB_PASSWORD}` are not secrets.
_BARE = r"[^\s\"'`,;&(){}\[\]<>$=\\][^\s\"'`,;&(){}\[\]<>\\]{3,}(?![(\[\w.])"
# `= value`, `: "value"`, `=> 'value'` after a secret-looking name (a JSON key's closing
# quote, escaped or not, may come first). After a colon, as in prose or YAML, an unquoted
# value must look random (a digit or symbol, or 16 letters): "token: plain" stays.
_ASSIGN = (
    r"(?:\\?[\"'])?[ \t]*(?:"
    r"(?:=>|:=|==?|:)[ \t]*"
    rf"(?:\\?\"(?P<s1>(?!{_PLAIN})[^\"\n\\]{{3,}})\\?\"|\\?'(?P<s2>(?!{_PLAIN})[^'\n\\]{{3,}})\\?')"
    rf"|(?:=>|:=|==?)[ \t]*(?P<s3>(?!{_PLAIN}){_BARE})"
    rf"|:[ \t]*(?P<s4>(?!{_PLAIN})(?=[A-Za-z]*[0-9_+/=!@#%^*~]|[A-Za-z]{{16}}){_BARE})"
    r")"
)
# An opaque credential after `Bearer`/`Authorization:`: at least one digit or symbol, so
# "the bearer of bad news" stays.
_CREDENTIAL = r"(?=[a-z0-9._~+/=-]*[0-9._~+/=-])[a-z0-9._~+/-]{8,}=*"


def _not_alnum(text: str, start: int) -> bool:
    """The match starts a word, a name or a part of one (`password`, `DB_password`,
    `--password`): no letter or digit right before it."""
    return start == 0 or not text[start - 1].isalnum()


def _suffix(text: str, start: int) -> bool:
    """`pass` ends a longer name after a separator (`DB_PASS`, not `PASS` or `bypass`)."""
    return start > 1 and text[start - 1] in "_-" and text[start - 2].isalnum()


def _whole_name(text: str, start: int) -> bool:
    """The keyword is the whole name (`auth`, not `oauth` or `x_auth`)."""
    return start == 0 or not (text[start - 1].isalnum() or text[start - 1] in "_-.")


def _upper_name(text: str, start: int) -> bool:
    """`_KEY` ends an upper-case name (`STRIPE_KEY`), as environment variables are."""
    return start > 0 and (text[start - 1].isupper() or text[start - 1].isdigit())


def _camel(text: str, start: int) -> bool:
    """`Token` ends a camelCase name (`accessToken`)."""
    return start > 0 and (text[start - 1].islower() or text[start - 1].isdigit())


_KEY_OWNERS = ("api", "access", "secret", "private", "client", "auth", "signing", "master")


def _camel_key(text: str, start: int) -> bool:
    """`Key` ends a camelCase name that says what kind (`apiKey`, `SecretAccessKey`)."""
    return text[max(0, start - 8) : start].lower().endswith(_KEY_OWNERS)


def _anywhere(_text: str, _start: int) -> bool:
    return True


def _outside_url(starts: Callable[[str, int], bool]) -> Callable[[str, int], bool]:
    """`starts`, and the name is not the user of a URL (`https://x-access-token:…@host`,
    whose password the URL shape hides, keeping the host)."""

    def check(text: str, start: int) -> bool:
        word = max(text.rfind(" ", 0, start), text.rfind("\n", 0, start)) + 1
        return starts(text, start) and "://" not in text[word:start]

    return check


@dataclass(frozen=True)
class Shape:
    """One kind of secret: its gates, a pattern, where a match may start."""

    name: str
    # Lower-case literals: the pattern is tried only when one is in the lower-cased text.
    gates: tuple[str, ...]
    pattern: re.Pattern[str]
    starts: Callable[[str, int], bool] = _anywhere
    # Matched against the lower-cased text rather than the text.
    folded: bool = False
    # The same pattern, case-insensitive, for text whose lower case changes its length.
    loose: re.Pattern[str] | None = None


def _shape(
    name: str,
    gates: str | tuple[str, ...],
    pattern: str,
    starts: Callable[[str, int], bool] = _anywhere,
    *,
    folded: bool = False,
) -> Shape:
    loose = re.compile(pattern, re.IGNORECASE) if folded else None
    gated = (gates,) if isinstance(gates, str) else gates
    return Shape(name, gated, re.compile(pattern), starts, folded, loose)


def _assign(
    name: str, gate: str, word: str, starts: Callable[[str, int], bool], *, folded: bool = True
) -> Shape:
    """`word` (a regex starting with a literal) ending a name, then a value assigned to it;
    never the user part of a URL."""
    return _shape(name, gate, word + _ASSIGN, _outside_url(starts), folded=folded)


_PEM = (
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
    # A key cut short (no END line) is hidden to the end of its code block or the text.
    r"(?:[\s\S]*?-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|[\s\S]*?(?=```|\Z))"
)

SHAPES: tuple[Shape, ...] = (
    # Tokens recognisable by their prefix.
    _shape("anthropic", "sk-", r"sk-ant-[A-Za-z0-9_-]{8,}", _not_alnum),
    _shape("openai", "sk-", r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,}", _not_alnum),
    _shape(
        "synapse",
        ("syt_", "syr_"),
        r"sy[tr]_[A-Za-z0-9_-]+?_[A-Za-z0-9]{6,}_[A-Za-z0-9]{4,}",
        _not_alnum,
    ),
    _shape("macaroon", "mdax", r"MDAx[A-Za-z0-9_-]{40,}", _not_alnum),
    _shape(
        "mas",
        ("mat_", "mar_", "mct_", "mcr_"),
        r"m[ac][tr]_[A-Za-z0-9]{16,}_[A-Za-z0-9]{6}(?![A-Za-z0-9_])",
        _not_alnum,
    ),
    _shape("github_pat", "gh", r"github_pat_[A-Za-z0-9_]{20,}", _not_alnum),
    _shape("github", "gh", r"gh[pousr]_[A-Za-z0-9]{20,}", _not_alnum),
    _shape("gitlab", "glpat-", r"glpat-[A-Za-z0-9_-]{20,}"),
    _shape("slack", "xox", r"xox[abprse]-[A-Za-z0-9-]{10,}", _not_alnum),
    _shape("aws_key_id", ("akia", "asia"), r"A[KS]IA[0-9A-Z]{16}(?![0-9A-Z])", _not_alnum),
    _shape("google", "aiza", r"AIza[0-9A-Za-z_-]{35}", _not_alnum),
    _shape("stripe", ("k_live_", "k_test_"), r"[sr]k_(?:live|test)_[A-Za-z0-9]{16,}", _not_alnum),
    _shape("npm", "npm_", r"npm_[A-Za-z0-9]{36}", _not_alnum),
    _shape("pypi", "pypi-age", r"pypi-AgE[A-Za-z0-9_-]{50,}"),
    _shape("huggingface", "hf_", r"hf_[A-Za-z]{30,}", _not_alnum),
    # JSON Web Tokens: a base64url JSON header and payload (both start `{"`), a signature.
    _shape("jwt", "eyj", r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", _not_alnum),
    _shape("private_key", "-----begin", _PEM),
    # `scheme://user:password@host`: the password only; the host stays readable.
    _shape("url_password", "://", r"://[^/\s:@?#]*:(?!\.\.\.@|…@|<)(?P<s>[^\s/@?#]+)@"),
    # Assignments to names that say "secret", in the case they are written in:
    # environment variables (`STRIPE_KEY=`), camelCase (`accessToken:`), and any case.
    _assign("env_key", "key", r"_KEY", _upper_name, folded=False),
    _assign("camel_key", "key", r"Key", _camel_key, folded=False),
    _assign("camel_token", "token", r"Token", _camel, folded=False),
    _assign("camel_secret", "secret", r"Secret", _camel, folded=False),
    _assign("camel_password", "pass", r"Passw(?:or)?d", _camel, folded=False),
    _assign("password", "pass", r"passw(?:or)?d", _not_alnum),
    _assign("secret", "secret", r"secret", _not_alnum),
    _assign("token", "token", r"token", _not_alnum),
    _assign("api_key", "key", r"api[_-]?key", _not_alnum),
    _assign("access_key", "key", r"access[_-]?key", _not_alnum),
    _assign("private_key_name", "key", r"private[_-]?key", _not_alnum),
    # kubeconfig's `client-key-data:` (a private key in base64).
    _assign("key_data", "key", r"key-data", _not_alnum),
    # `DB_PASS=`, `DB_PWD=` (but not `PWD=`, the working directory).
    _assign("pass_suffix", "pass", r"pass", _suffix),
    _assign("pwd_suffix", "pwd", r"pwd", _suffix),
    _assign("auth", "auth", r"auth", _whole_name),
    # `aws_secret_access_key wJalr…` as `aws configure set` takes it, without `=`.
    _shape(
        "aws_secret",
        "secret",
        r"secret_?access_?key(?:\\?[\"'])?[ \t]*[=:]?[ \t]*(?:\\?[\"'])?"
        r"(?P<s>[a-z0-9/+=]{40})(?![a-z0-9/+=])",
        folded=True,
    ),
    _shape("bearer", "bearer", rf"bearer\s+(?P<s>{_CREDENTIAL})", _not_alnum, folded=True),
    _shape(
        "authorization",
        "auth",
        r"authorization(?:\\?[\"'])?\s*[:=]\s*(?:\\?[\"'])?"
        r"(?:(?:bearer|basic|token|bot|digest|negotiate)\s+"
        rf"(?P<s>(?!{_PLAIN})[^\s\"',;\\]{{4,}})"
        rf"|(?P<s1>{_CREDENTIAL}))",
        folded=True,
    ),
    # `--password hunter2` (with `=` the assignments above catch it).
    _shape(
        "flag",
        "--",
        r"--(?:password|passwd|token|secret|api-key|access-token|auth-token)\s+"
        rf"(?P<s>(?!{_PLAIN})[^\s\"'(\[{{<$-][^\s\"']*)",
        folded=True,
    ),
    # ~/.netrc: `machine HOST login USER password SECRET`, on one line or several.
    _shape(
        "netrc",
        "machine",
        r"machine\s+\S+\s+(?:login\s+\S+\s+)?password\s+(?P<s>\S+)",
        folded=True,
    ),
)
# Every gate, looked for once per text.
_GATES = tuple(sorted({gate for shape in SHAPES for gate in shape.gates}))

_SECRET_GROUPS = ("s", "s1", "s2", "s3", "s4")


def _span(match: re.Match[str]) -> tuple[int, int]:
    """The secret part of a match: its named group when it has one, else all of it."""
    groups = match.re.groupindex
    for name in _SECRET_GROUPS:
        if name in groups and match.start(name) != -1:
            return match.span(name)
    return match.span()


def find_secrets(text: str) -> list[tuple[int, int]]:
    """The spans of secret-shaped strings in `text`, in no particular order."""
    lowered = text.lower()
    present = {gate for gate in _GATES if gate in lowered}
    if not present:
        return []
    # Lower-casing keeps every index only for ASCII text; other text takes the slow path.
    same = len(lowered) == len(text) and text.isascii()
    spans: list[tuple[int, int]] = []
    for shape in SHAPES:
        if present.isdisjoint(shape.gates):
            continue
        if shape.folded and not same:
            assert shape.loose is not None
            pattern, target = shape.loose, text
        else:
            pattern, target = shape.pattern, lowered if shape.folded else text
        for match in pattern.finditer(target):
            if shape.starts(text, match.start()):
                spans.append(_span(match))
    return spans


def hide(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """The text with each span replaced by the marker (overlapping spans become one)."""
    ordered = sorted(span for span in spans if span[1] > span[0])
    if not ordered:
        return text
    out: list[str] = []
    pos = 0
    for start, end in ordered:
        if start < pos:
            pos = max(pos, end)
            continue
        out.append(text[pos:start])
        out.append(REDACTED)
        pos = end
    out.append(text[pos:])
    return "".join(out)
