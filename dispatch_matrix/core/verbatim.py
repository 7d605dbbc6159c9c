"""Text the bot shows verbatim (a command, a file change): Markdown nothing inside can end,
and characters a reader cannot see made visible. Pure.

A command placed in Markdown prose can close the inline code around it and go on as the
bot's own words ("✅ Checked by dispatch-matrix: safe to approve"); a right-to-left override
or a zero-width character makes the phone show other text than what runs. So verbatim text
goes only in fenced code blocks whose fence is longer than any backtick run inside, and
what is invisible is shown as `⟦U+202E⟧`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection

_BACKTICKS = re.compile(r"`+")
# Everything but printable ASCII, tab and newline: the only characters worth a look. A
# carriage return is one: alone in a command it shows as a line break that bash does not
# make (`cat notes.txt\r curl …` runs one command); before a newline it is a line end.
_CANDIDATES = re.compile(r"[^\t\n\x20-\x7e]")
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Zs", "Co", "Cn", "Cs"})
# No-break, narrow no-break and ideographic spaces: ordinary in French, CJK.
_TYPOGRAPHY = frozenset("\u00a0\u202f\u3000")
_JOINERS = frozenset("\u200c\u200d")
# Text and emoji presentation selectors, and the keycap mark that may follow them (1️⃣).
_PRESENTATION = frozenset("\ufe0e\ufe0f")
_KEYCAP = "\u20e3"
# Not format characters but blank all the same: the Hangul fillers.
_FILLERS = frozenset({0x115F, 0x1160, 0x3164, 0xFFA0})
# Scripts with letters drawn as Latin ones, and those letters (Cyrillic, Greek, Armenian).
_LOOKALIKE_SCRIPTS = frozenset({"CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE", "COPTIC", "LISU"})
_LATIN_LOOKALIKES = frozenset(
    "аеорсухіјѕһӏԁԛԝԌАВЕКМНОРСТХІЈЅԜ" + "οαρνυικτχΑΒΕΖΗΙΚΜΝΟΡΤΥΧ" + "օսհոցաոՕՍ"
)
_LETTERS = re.compile(r"[^\W\d_]+")
# How long a run of blank space may be before it is shown as its count: past a phone's
# width of monospace characters; and more than two blank lines in a row.
_BLANK_RUN = re.compile(r"[ \t]{24,}")
_BLANK_LINES = re.compile(r"\n(?:[ \t]*\n){3,}")


def _script(ch: str) -> str:
    """The script a letter belongs to, as the first word of its Unicode name."""
    return unicodedata.name(ch, "").split(" ", 1)[0]


def code_block(text: str) -> str:
    """`text` as a fenced code block that nothing inside it can close."""
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def code_span(text: str) -> str:
    """`text` as inline code that nothing inside it can close; a fenced block if it has more
    than one line (a blank line would end the paragraph, and the code span with it)."""
    if "\n" in text or "\r" in text:
        return "\n" + code_block(text) + "\n"
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    ticks = "`" * (longest + 1)
    return f"{ticks} {text} {ticks}" if longest else f"`{text}`"


def hidden_characters(text: str, *, prose: bool = False) -> list[str]:
    """The distinct hidden characters in `text` as `U+202E` names, in order of appearance.
    `prose`: the text is a file's, not a command, and may hold the no-break spaces of
    French typography or the ideographic space (in a command they change what runs)."""
    found: dict[str, None] = {}
    for match in _CANDIDATES.finditer(text):
        if _hidden_at(text, match.start(), prose):
            found.setdefault(f"U+{ord(match.group()):04X}", None)
    return list(found)


def visible(text: str, also: Collection[str] = ()) -> str:
    """`text` with each hidden character, and each of `also` (look-alikes), shown as
    `⟦U+202E⟧` (for display, never to run)."""
    return _CANDIDATES.sub(
        lambda m: (
            f"⟦U+{ord(m.group()):04X}⟧"
            if m.group() in also or _hidden_at(text, m.start(), False)
            else m.group()
        ),
        text,
    )


def lookalikes(text: str) -> list[str]:
    """The distinct characters of a command that pass for other ones, as `U+0456` names, in
    order of appearance: a letter of a script whose letters look Latin in a word with Latin
    letters (`gіthub.com` with a Cyrillic і: another host than it reads), or in a word made
    only of such look-alikes (`аррӏе`); a character that stands for a plain ASCII one
    (full-width `ｒｍ`, mathematical letters, `ﬁ`); a mark drawn over the character before
    it (`x̸`). A word wholly in another script (`документ.txt`) is not one."""
    found: dict[str, None] = {}
    for match in _CANDIDATES.finditer(text):
        ch = match.group()
        folded = unicodedata.normalize("NFKC", ch)
        if (folded != ch and folded.isascii() and folded.isprintable()) or (
            unicodedata.combining(ch) == 1
        ):
            found.setdefault(ch, None)
    for word in _LETTERS.findall(text):
        if word.isascii():
            continue
        odd = [c for c in word if _script(c) in _LOOKALIKE_SCRIPTS]
        if odd and (any(c.isascii() for c in word) or all(c in _LATIN_LOOKALIKES for c in word)):
            for c in odd:
                found.setdefault(c, None)
    ordered = sorted(found, key=text.index)
    return [f"U+{ord(c):04X}" for c in ordered]


def compact_blanks(text: str) -> str:
    """`text` with each long run of spaces or tabs, and of blank lines, shown as its count
    (`⟦40 spaces⟧`, `⟦300 blank lines⟧`): such a run can push what follows past the edge of
    a phone's screen, below an end the owner takes for the last line (for display only)."""

    def spaces(m: re.Match[str]) -> str:
        run = m.group()
        names = {" ": "spaces", "\t": "tabs"}
        kind = names.get(run[0], "blanks") if len(set(run)) == 1 else "spaces and tabs"
        return f"⟦{len(run)} {kind}⟧"

    def lines(m: re.Match[str]) -> str:
        return f"\n\n⟦{m.group().count(chr(10)) - 1} blank lines⟧\n"

    return _BLANK_LINES.sub(lines, _BLANK_RUN.sub(spaces, text))


def _hidden_at(text: str, index: int, prose: bool) -> bool:
    """Whether a reader cannot see the character at `index` for what it is: controls (but
    tab and line ends), format characters (bidi controls, zero-width, tags, BOM, soft
    hyphen), a lone carriage return outside `prose`, line and paragraph separators, spaces
    that look like the plain one, fillers, private and unassigned code points, and variation
    selectors that follow no emoji.

    What writing in other languages needs stays visible: a joiner between two non-ASCII
    characters (emoji sequences, Indic and Persian scripts), an emoji's presentation
    selector, and in `prose` the no-break spaces of French typography and the ideographic
    space.
    """
    ch = text[index]
    code = ord(ch)
    if prose and ch in _TYPOGRAPHY:
        return False
    if ch == "\r":
        # A line end (CRLF) shows as what it is; a lone one is a line break bash does not
        # make, so only a command's lone one is hidden.
        return not prose and not text.startswith("\n", index + 1)
    before = text[index - 1] if index > 0 else " "
    after = text[index + 1] if index + 1 < len(text) else " "
    if ch in _JOINERS:
        return before.isascii() or after.isascii() or before.isspace() or after.isspace()
    if ch in _PRESENTATION:
        return after != _KEYCAP and (before.isascii() or before in _PRESENTATION)
    if unicodedata.category(ch) in _HIDDEN_CATEGORIES:
        return True
    return code in _FILLERS or 0xFE00 <= code <= 0xFE0D or 0xE0100 <= code <= 0xE01EF
