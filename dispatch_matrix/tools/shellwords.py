"""Bash words as patterns: quote-aware brace expansion, globs and rendering. Pure.

The parser (`shellparse.py`) turns each shell word into a *pattern*: its literal text with
every quoted or backslash-escaped character that bash would otherwise expand written as
`\\x`, and the characters bash does expand (`*`, `?`, `[`, `{`, a leading `~`) left bare.
One string then says both what the word is and which expansions bash will apply to it, and
the helpers here answer the judge's questions about it. Also here: bash's quote removal for
unquoted and double-quoted text, and `hidden_expansion`, which spots a `$…` or backquote in
text the grammar took as literal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Characters escaped in a pattern when they came from quoted text (so they stay literal).
SPECIAL = frozenset("\\*?[]{},~")
GLOB = frozenset("*?[")
MAX_ALTERNATIVES = 64
_SAFE = re.compile(r"[A-Za-z0-9@%+=:,./_-]+")
_DOUBLE_QUOTE_ESCAPES = frozenset('$`"\\\n')
_SEQUENCE = re.compile(r"(-?\d+|[A-Za-z])\.\.(-?\d+|[A-Za-z])(?:\.\.(-?\d+))?")


def escape(text: str) -> str:
    """Literal text as a pattern (every special character escaped)."""
    return "".join("\\" + c if c in SPECIAL else c for c in text)


def unescape(pattern: str) -> str:
    """The literal text a pattern without expansions stands for."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            i += 1
        out.append(pattern[i])
        i += 1
    return "".join(out)


def has_glob(pattern: str) -> bool:
    """Whether bash would expand the pattern as a file name glob (`*`, `?`, `[…]`)."""
    return any(c in GLOB for c, escaped in _chars(pattern) if not escaped)


def has_tilde(pattern: str) -> bool:
    """Whether the pattern starts with an unquoted `~` (tilde expansion)."""
    return pattern.startswith("~")


def has_braces(pattern: str) -> bool:
    """Whether bash would brace-expand the pattern (`{a,b}`, `{1..3}`)."""
    expanded = expand_braces(pattern)
    return expanded is None or expanded != [pattern]


def is_literal(pattern: str) -> bool:
    """Whether the pattern undergoes no expansion at all."""
    return not (has_glob(pattern) or has_tilde(pattern) or has_braces(pattern))


def render(value: str) -> str:
    """A literal word as one canonical shell word: bare when safe, else single-quoted."""
    if value and _SAFE.fullmatch(value):
        return value
    return "'" + value.replace("'", "'\"'\"'") + "'"


def split_unescaped(pattern: str, separators: str) -> list[str]:
    """The pieces of a pattern between unescaped separator characters."""
    pieces: list[str] = [""]
    for c, escaped in _chars(pattern):
        if c in separators and not escaped:
            pieces.append("")
        else:
            pieces[-1] += "\\" + c if escaped else c
    return pieces


def expand_braces(pattern: str) -> list[str] | None:
    """Bash brace expansion of a pattern; None past MAX_ALTERNATIVES (too many to judge)."""
    results = [pattern]
    done: list[str] = []
    while results:
        current = results.pop(0)
        found = _first_brace(current)
        if found is None:
            done.append(current)
        else:
            start, end, options = found
            results[0:0] = [current[:start] + o + current[end + 1 :] for o in options]
        if len(done) + len(results) > MAX_ALTERNATIVES:
            return None
    return done


def _chars(pattern: str) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            out.append((pattern[i + 1], True))
            i += 2
        else:
            out.append((pattern[i], False))
            i += 1
    return out


def _first_brace(pattern: str) -> tuple[int, int, list[str]] | None:
    """The first brace group bash would expand: (start, end, alternatives)."""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            end = _matching(pattern, i)
            if end is not None:
                options = _options(pattern[i + 1 : end])
                if options is not None:
                    return i, end, options
        i += 1
    return None


def _matching(pattern: str, start: int) -> int | None:
    depth = 0
    i = start
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _options(body: str) -> list[str] | None:
    """The alternatives of a brace body, or None when bash leaves it alone."""
    sequence = _SEQUENCE.fullmatch(body)
    if sequence is not None:
        return _sequence(sequence)
    parts: list[str] = [""]
    depth = 0
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            parts[-1] += body[i : i + 2]
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("")
        else:
            parts[-1] += c
        i += 1
    return parts if len(parts) > 1 else None


def _sequence(match: re.Match[str]) -> list[str] | None:
    first, last, step_text = match.group(1), match.group(2), match.group(3)
    step = abs(int(step_text)) if step_text else 1
    step = step or 1
    if first.lstrip("-").isdigit() != last.lstrip("-").isdigit():
        return None
    numeric = first.lstrip("-").isdigit()
    a, b = (int(first), int(last)) if numeric else (ord(first), ord(last))
    if abs(b - a) // step + 1 > MAX_ALTERNATIVES:
        # Too long to list: stand in a glob that matches any of them (a superset).
        return ["*"]
    values = range(a, b + 1, step) if a <= b else range(a, b - 1, -step)
    return [str(v) if numeric else escape(chr(v)) for v in values]


def long_option(arg: str, names: Sequence[str]) -> str | None:
    """The long option `arg` spells or abbreviates, among `names`."""
    if not arg.startswith("--") or len(arg) < 3:
        return None
    name = arg.split("=", 1)[0]
    return next((n for n in names if n.startswith(name)), None)


def hidden_expansion(text: str) -> bool:
    """Whether unquoted-looking text holds a backquote or a `$` that starts an expansion."""
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "`":
            return True
        if c == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt.isalnum() or nxt in "({['\"_@*#?$!-":
                return True
        i += 1
    return False


def unquoted(text: str) -> str:
    """An unquoted word's text as a pattern: `\\x` escapes x, `\\<newline>` vanishes."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            if text[i + 1] != "\n":
                out.append(escape(text[i + 1]))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def double_quoted(text: str) -> str:
    """The literal value of text inside double quotes (only some backslashes escape)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in _DOUBLE_QUOTE_ESCAPES:
            if text[i + 1] != "\n":
                out.append(text[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)
