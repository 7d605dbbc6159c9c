"""The secrets whose values we know: which environment variables hold them, and where
any of their values occurs in a text, in every form a program may print it in.

`secret_forms.py` lists the forms (encodings, escapes); this module finds them, in a view of
the text that keeps only its letters and digits (folded, look-alikes mapped to Latin), so
that what stands between a value's characters (separators, zero-width characters, terminal
colours) does not hide it. `redaction.py` finds the strings shaped like secrets; the log
processor and the outbox use both.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Iterable, Mapping

from dispatch_matrix.core.secret_forms import encoded_forms

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


# -- known values, in the forms they take (listed by `secret_forms.py`) --------------------

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
        return exact + hits + self._in_view(text) + self._in_dump(lowered) + self._cut(lowered)

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
