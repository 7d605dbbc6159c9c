"""Finding the secrets in a text, and hiding them: the values we know, in every form a
program may print them in, and strings shaped like secrets. Both give spans of the text;
`hide` puts one marker over them.

Pure and fast: it runs on every log record and every message the bot sends (through
`logs.Redactor`).

Strings shaped like secrets: each shape is a regular expression that starts with a literal
(so the search skips ahead at C speed) and is tried only when its trigger literal is in the
text; case-insensitive names are matched on the lower-cased text, which has the same length
when the text is ASCII. It errs on the side of hiding: a value after `password =` is hidden
even in prose, but ordinary text (git SHAs, UUIDs, base64 data, URLs without a password,
`max_tokens=8192`, code such as `token = get_token()`) passes unchanged.

The values we know (the bot's password and token, the API key, the environment's, an MCP
server's): which environment variables hold them, and where any of their values occurs in a
text. `secret_forms.py` lists a value's forms (encodings, escapes); they are looked for in a
view of the text that keeps only its letters and digits (folded, look-alikes mapped to
Latin), so that what stands between a value's characters (separators, zero-width
characters, terminal colours) does not hide it.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from dispatch_matrix.core.secret_forms import encoded_forms

REDACTED = "«redacted»"

# -- strings shaped like secrets ------------------------------------------------------------

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


# -- the environment ------------------------------------------------------------------------

_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "APIKEY", "API_KEY", "CREDENTIAL")
_SECRET_PARTS = frozenset({"KEY", "PASS", "PWD", "AUTH"})
# Names with a secret-sounding part that hold none: the working directories, the SSH agent.
_NOT_SECRETS = frozenset({"PWD", "OLDPWD", "SSH_AUTH_SOCK", "XAUTHORITY", "GPG_AGENT_INFO"})


def looks_secret(name: str) -> bool:
    """Whether an environment variable's name says it holds a secret (`*_KEY`, `*_TOKEN`,
    `*_SECRET`, `*PASSWORD*`, `DB_PASS`, …)."""
    upper = name.upper()
    if upper in _NOT_SECRETS:
        return False
    if any(word in upper for word in _SECRET_WORDS):
        return True
    return any(part in _SECRET_PARTS for part in re.split(r"[_\-.]+", upper))


# Values too common to hide everywhere they occur, even under a secret-looking name.
_COMMON_VALUES = frozenset({"true", "false", "enabled", "disabled", "none", "null", "unset"})


def environment_secrets(environ: Mapping[str, str], named: Iterable[str] = ()) -> list[str]:
    """The values of the variables that hold secrets: those whose names say so (the SDK's
    `ANTHROPIC_API_KEY`, `DISPATCH_*` overrides of secret keys, an MCP server's token) and
    those `named` explicitly."""
    wanted = set(named)
    return [
        value
        for name, value in environ.items()
        if (name in wanted or looks_secret(name)) and value.lower() not in _COMMON_VALUES
    ]


# -- known values, in the forms they take (listed by `secret_forms.py`) ---------------------

# Encoded forms shorter than this are not looked for: too likely to occur by chance.
_MIN_FORM = 8
# A prefix (or suffix) of a known form this long, where a tool cut its output, is hidden.
_MIN_CUT = 8
# Where a tool cut its output: process.py's `[… N bytes elided …]`, files.py's
# `… [line cut]`, an ellipsis; and the ends of the text.
_CUT = re.compile(r"\s*\[?…\]?\s*")
_GATES_OF_FORMS = ("%", "\\")


# What may stand between the characters of a value without changing what it says to a
# reader: the colour and erase-line sequences of a terminal (`grep --color`), whole; then
# anything not a letter or digit once folded (separators such as `-` `,` `.` `\`,
# zero-width and other format characters, combining marks, NUL from UTF-16, controls).
_ESCAPES = re.compile(r"\x1b\[[0-9;]*[mk]")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
# The same as bytes to delete: `bytes.translate` is ten times faster than the pattern.
_NOT_ALNUM_BYTES = bytes(c for c in range(256) if not (0x30 <= c <= 0x39 or 0x61 <= c <= 0x7A))
_NOT_ASCII = re.compile(r"[^\x00-\x7f]+")
_LOOKALIKES = str.maketrans(
    {
        # Cyrillic, lower case and (lowered) capitals drawn as Latin letters.
        "а": "a", "в": "b", "с": "c", "ԁ": "d", "е": "e", "һ": "h", "н": "h",
        "і": "i", "ј": "j", "к": "k", "ӏ": "l", "м": "m", "о": "o", "р": "p", "ԛ": "q",
        "ѕ": "s", "т": "t", "ԝ": "w", "х": "x", "у": "y",
        # Greek, and Latin letters of IPA.
        "α": "a", "β": "b", "ε": "e", "η": "h", "ι": "i", "κ": "k", "μ": "m", "ο": "o",
        "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ζ": "z", "ɑ": "a", "ɡ": "g", "ı": "i",
    }
)  # fmt: skip


def _fold(text: str) -> str:
    """`text` as the letters and digits a reader sees: lower case, compatibility forms
    taken apart (fullwidth `Ｇ`, ligatures, an accent apart from its letter), look-alike
    letters as the Latin one. A text folds to its characters' folds joined, so positions
    can be mapped back (`_view_positions`)."""
    lowered = text.lower()
    if lowered.isascii():
        return lowered
    return _NOT_ASCII.sub(_fold_run, lowered)


def _fold_run(run: re.Match[str]) -> str:
    return unicodedata.normalize("NFKD", run.group()).lower().translate(_LOOKALIKES)


def _view(text: str) -> str:
    """The letters and digits of `text`, folded: what the forms are looked for in."""
    folded = _fold(text)
    if "\x1b" in folded:
        folded = _ESCAPES.sub("", folded)
    return folded.encode("ascii", "ignore").translate(None, _NOT_ALNUM_BYTES).decode("ascii")


def _kept(text: str, origin: list[int], pattern: re.Pattern[str]) -> tuple[str, list[int]]:
    """`text` without what `pattern` matches, and the origins of the characters left."""
    kept: list[int] = []
    last = 0
    for skipped in pattern.finditer(text):
        kept += origin[last : skipped.start()]
        last = skipped.end()
    kept += origin[last:]
    return pattern.sub("", text), kept


def _view_positions(text: str) -> tuple[str, list[int]]:
    """`_view(text)` built character by character, with where in `text` each of its
    characters comes from. Slow: only for a text a secret was found in."""
    pieces: list[str] = []
    origin: list[int] = []
    for at, char in enumerate(text):
        folded = _fold(char)
        pieces.append(folded)
        origin += [at] * len(folded)
    folded = "".join(pieces)
    if "\x1b" in folded:
        folded, origin = _kept(folded, origin, _ESCAPES)
    return _kept(folded, origin, _NOT_ALNUM)


# A hex dump's line: an offset, then bytes in groups of hex digits.
# `xxd`'s offset ends in a colon, and may follow other output on its line.
# Possessive and anchored at a run's start, so that ordinary text is passed over fast.
_DUMP_LINE = re.compile(r"(?<![0-9a-z])[0-9a-f]{6,}+:?(?:[ \t]{1,2}+[0-9a-f]{2,8}+(?![0-9a-z])){4}")
_DUMP_OFFSET = re.compile(r"(?:.*?\b)?[0-9a-f]{6,}:(?=[ \t])|[ \t]*[0-9a-f]{6,}(?=[ \t])")
_DUMP_TOKEN = re.compile(r"([ \t]+)([0-9a-f]+)")


def _lines(text: str) -> list[tuple[int, int]]:
    """Where each line of `text` starts and ends (its newline left out)."""
    spans, start = [], 0
    for end in [m.start() for m in re.finditer("\n", text)] + [len(text)]:
        spans.append((start, end))
        start = end + 1
    return spans


def _dump_bytes(line: str) -> str | None:
    """The hex digits of one hex dump line, or None when it is no such line: after the
    offset, groups of one width up to the text column (`|…|`, or two blanks that do not
    fall mid-line as `hexdump -C`'s do after eight bytes)."""
    offset = _DUMP_OFFSET.match(line)
    if offset is None:
        return None
    rest = line[offset.end() :].split("|", 1)[0]
    digits: list[str] = []
    # Hex digits read so far, kept as a count: summing the groups at each one made a long
    # line of hex-looking words cost its length squared.
    done = 0
    width = 0
    at = 0
    while (token := _DUMP_TOKEN.match(rest, at)) is not None:
        gap, group = token.groups()
        if digits and (len(gap) >= 2 and done != 16 or len(group) != width):
            break
        width = width or len(group)
        if width % 2:
            return None
        digits.append(group)
        done += len(group)
        at = token.end()
    return "".join(digits) or None


# An all-digit view shorter than this is not looked for among a text's letters and digits:
# dates, times, versions and sizes are digits with separators between, so an eight-digit
# PIN `20261205` hid every `2026-12-05` of a log. Such a form is looked for as it is.
_MIN_DIGIT_VIEW = 16


def _viewable(view: str) -> bool:
    """Whether a form's letters and digits are specific enough to be looked for among a
    text's, whatever stands between them (pure)."""
    return len(view) >= (_MIN_DIGIT_VIEW if view.isdigit() else _MIN_FORM)


def _occurrences(text: str, value: str) -> list[int]:
    """Where `value` starts in `text`, without overlaps."""
    found = []
    at = text.find(value)
    while at != -1:
        found.append(at)
        at = text.find(value, at + len(value))
    return found


def _lower(text: str) -> str:
    """Lower case, index for index (a character whose lower case is longer stays)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(ch if len(ch.lower()) != 1 else ch.lower() for ch in text)


# Above this length a text's view is mapped back to it block by block, only in the blocks a
# hit lies in: character by character, 1 MB with one secret took 0.4-0.6 s.
_BLOCK = 1 << 16
_SPACE = re.compile(r"\s")


def _mapped(text: str, hits: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """`hits` (spans of `_view(text)`) as spans of `text`. The text is cut into blocks
    after whitespace: a view is its blocks' views joined (a character folds alone, and no
    terminal escape holds whitespace), so each block's view is measured whole and only a
    block holding a hit's end is mapped."""
    blocks: list[tuple[int, int]] = []  # (where in the text, where in the view) per block
    at = seen = 0
    while at < len(text):
        cut = _SPACE.search(text, at + _BLOCK)
        end = len(text) if cut is None else cut.end()
        blocks.append((at, seen))
        seen += len(_view(text[at:end]))
        at = end
    blocks.append((len(text), seen))
    starts = [in_view for _, in_view in blocks]
    origins: dict[int, list[int]] = {}

    def origin(index: int) -> int:
        # The last block starting at or before `index`: blocks with an empty view start
        # where the next one does, and are passed over.
        number = bisect.bisect_right(starts, index) - 1
        if number not in origins:
            start, stop = blocks[number][0], blocks[number + 1][0]
            origins[number] = _view_positions(text[start:stop])[1]
        return blocks[number][0] + origins[number][index - blocks[number][1]]

    return [(origin(start), origin(end - 1) + 1) for start, end in hits]


# A line's numbering: `cat -n` and `nl` (`   12<TAB>`), `grep -n` (`path:12:`), a numbered
# list (`12. `, `12) `), a table's index column (`| 12 |`). Only a line that starts so.
_NUMBERING = re.compile(
    r"^[ \t]*(?:\|[ \t]*)?(?:[^\s:|]*:)?\d+(?:[ \t]*[:.)|]|\t)[ \t]*", re.MULTILINE
)

# A line after the first that starts with a number, or grep's `:12:`.
_NUMBERED_LINE = re.compile(r"\n[ \t|]*\d")
_GREP_NUMBER = re.compile(r":\d+:")


class KnownSecrets:
    """The secret values the daemon knows (its password, token, API key, the environment's,
    an MCP server's) and where any of their forms occurs in a text: encoded, in any case,
    with anything that is not a letter or digit between its characters (a wrapped base64
    line, a spaced-out or dashed key, zero-width characters, terminal colours), drawn in
    fullwidth or look-alike letters, or cut short where a tool cut its output.

    Cheap when nothing is found, as on almost every text: one `find` per form on the
    text's folded letters and digits (`_view`), and one `in` per cut; mapping positions back
    to the original text is paid only when a secret is there.
    """

    def __init__(self) -> None:
        self._forms: dict[str, None] = {}
        # Each form's letters and digits (`_view`): looked for in a text's letters and
        # digits, so that what a program or an attacker put between them does not hide it.
        self._views: tuple[str, ...] = ()
        # The forms to look for in every text, and those holding a character of
        # `_GATES_OF_FORMS` (URL and JSON escapes), looked for only in a text that has one.
        self._everywhere: tuple[str, ...] = ()
        self._gated: tuple[str, ...] = ()
        # Every form in one string: a cut's neighbourhood that is in no form needs no look.
        self._joined = ""
        # Values too short to look for in any case (a six-letter password may be a word):
        # found as they are, and reversed.
        self._exact: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self._forms or self._exact)

    def add(self, value: str) -> None:
        """Remember one value and its forms."""
        if len(value) < _MIN_FORM:
            self._exact += (value, value[::-1])
        # Matched on lower-cased text, so every change of case is caught too.
        for form in map(_lower, encoded_forms(value)):
            if len(form) >= _MIN_FORM:
                self._forms.setdefault("".join(form.split()), None)
        views = {form: _view(form) for form in self._forms}
        self._views = tuple(sorted({v for v in views.values() if _viewable(v)}))
        # A form with too few letters and digits to be looked for among a text's is looked
        # for as it is, without the whitespace.
        short = [form for form, view in views.items() if not _viewable(view)]
        gated = tuple(f for f in short if any(c in f for c in _GATES_OF_FORMS))
        self._everywhere = tuple(f for f in short if f not in gated)
        self._gated = gated
        self._joined = "\0".join(self._forms)

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where a known secret, in any of its forms, occurs in `text`."""
        if not text:
            return []
        exact = [(at, at + len(value)) for value in self._exact for at in _occurrences(text, value)]
        if not self._forms:
            return exact
        lowered = _lower(text)
        hits: list[tuple[int, int]] = []
        if self._everywhere or self._gated:
            compact = "".join(lowered.split())
            # One membership test per form, in a comprehension: the common case finds none.
            present = [form for form in self._everywhere if form in compact]
            if self._gated and any(c in compact for c in _GATES_OF_FORMS):
                present += [form for form in self._gated if form in compact]
            hits = [(at, at + len(form)) for form in present for at in _occurrences(compact, form)]
            if hits and len(compact) != len(lowered):
                # Rare: only now map the text without whitespace back to the text.
                where = [i for i, ch in enumerate(lowered) if not ch.isspace()]
                hits = [(where[start], where[end - 1] + 1) for start, end in hits]
        return (
            exact
            + hits
            + self._in_view(text)
            + self._in_dump(lowered)
            + self._cut(lowered)
            + self._in_numbered(text)
        )

    def _in_numbered(self, text: str) -> list[tuple[int, int]]:
        """A form over lines that each start with a number (`cat -n`, `nl`, `grep -n`'s
        `path:12:`, a numbered list, a table's index column): the numbers stand between the
        parts of a wrapped value, where the view took them for its characters."""
        # Two plain searches first (3 ms per MB of code, against 29 for the substitution).
        if not (_NUMBERED_LINE.search(text) or _GREP_NUMBER.search(text)):
            return []
        stripped = _NUMBERING.sub("", text)
        if len(stripped) == len(text):
            return []
        view = _view(stripped)
        if not [form for form in self._views if form in view]:
            return []
        # Rare: only now map the text without its numbering back to the text.
        origin: list[int] = []
        last = 0
        for numbering in _NUMBERING.finditer(text):
            origin += range(last, numbering.start())
            last = numbering.end()
        origin += range(last, len(text))
        return [(origin[start], origin[end - 1] + 1) for start, end in self._in_view(stripped)]

    def _in_dump(self, lowered: str) -> list[tuple[int, int]]:
        """Whole lines of a hex dump (`xxd`, `hexdump -C`, `od -tx1`) whose bytes hold a
        form: a dump puts offsets and a text column between the bytes of each line."""
        first = _DUMP_LINE.search(lowered)
        if first is None:
            return []
        spans = _lines(lowered)
        starts = [start for start, _ in spans]
        # The lines that look like a dump's, and the one after each (a dump's last line
        # may hold a single byte); only these are read.
        candidates: set[int] = set()
        for match in _DUMP_LINE.finditer(lowered, first.start()):
            index = bisect.bisect_right(starts, match.start()) - 1
            candidates.update((index, index + 1))
        found: list[tuple[int, int]] = []
        run: list[tuple[int, int, str]] = []
        for index in [*sorted(i for i in candidates if i < len(spans)), -1]:
            data = None
            if index >= 0 and (not run or index == run[-1][0] + 1):
                data = _dump_bytes(lowered[spans[index][0] : spans[index][1]])
            if data is not None:
                run.append((index, len(data), data))
                continue
            found += self._dump_hits(run, spans)
            run = []
            if index >= 0:
                data = _dump_bytes(lowered[spans[index][0] : spans[index][1]])
                run = [(index, len(data), data)] if data is not None else []
        return found

    def _dump_hits(
        self, run: list[tuple[int, int, str]], spans: list[tuple[int, int]]
    ) -> list[tuple[int, int]]:
        """The lines of one run of dump lines (index, bytes' length, bytes) over which a
        form's hex digits lie."""
        joined = "".join(data for _, _, data in run)
        found: list[tuple[int, int]] = []
        for form in self._views:
            for at in _occurrences(joined, form):
                offset = 0
                for index, length, _ in run:
                    if offset < at + len(form) and at < offset + length:
                        found.append(spans[index])
                    offset += length
        return found

    def _in_view(self, text: str) -> list[tuple[int, int]]:
        """Where a form's letters and digits occur among the text's, whatever stands
        between them, as spans of the text."""
        view = _view(text)
        # A comprehension, not `any`: the common case looks at every form and finds none.
        if not [form for form in self._views if form in view]:
            return []
        hits = [(at, at + len(form)) for form in self._views for at in _occurrences(view, form)]
        if len(text) <= _BLOCK:
            origin = _view_positions(text)[1]
            return [(origin[start], origin[end - 1] + 1) for start, end in hits]
        return _mapped(text, hits)

    def _cut(self, lowered: str) -> list[tuple[int, int]]:
        """A form's start right before a cut, or its end right after one."""
        ends = [len(lowered.rstrip())]
        starts = [len(lowered) - len(lowered.lstrip())]
        if "…" in lowered:
            for cut in _CUT.finditer(lowered):
                ends.append(cut.start())
                starts.append(cut.end())
        found: list[tuple[int, int]] = []
        for end in ends:
            if end >= _MIN_CUT and lowered[end - _MIN_CUT : end] in self._joined:
                found += self._prefixes_before(lowered, end)
        for start in starts:
            if lowered[start : start + _MIN_CUT] in self._joined:
                found += self._suffixes_after(lowered, start)
        return found

    def _prefixes_before(self, lowered: str, end: int) -> list[tuple[int, int]]:
        """The longest start of each form that the text ends with at `end`."""
        found = []
        for form in self._forms:
            window = lowered[max(0, end - len(form) + 1) : end]
            at = window.find(form[:_MIN_CUT])
            while at != -1:
                if form.startswith(window[at:]):
                    found.append((end - len(window) + at, end))
                    break
                at = window.find(form[:_MIN_CUT], at + 1)
        return found

    def _suffixes_after(self, lowered: str, start: int) -> list[tuple[int, int]]:
        """The longest end of each form that the text starts with at `start`."""
        found = []
        for form in self._forms:
            window = lowered[start : start + len(form) - 1]
            at = window.rfind(form[-_MIN_CUT:])
            while at != -1:
                if form.endswith(window[: at + _MIN_CUT]):
                    found.append((start, start + at + _MIN_CUT))
                    break
                at = window.rfind(form[-_MIN_CUT:], 0, at + _MIN_CUT - 1)
        return found


# -- hiding ---------------------------------------------------------------------------------


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
