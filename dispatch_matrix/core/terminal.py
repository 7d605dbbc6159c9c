"""Text from outside shown on the operator's terminal, with nothing in it the terminal obeys.
Pure.

`status`, `doctor` and the other commands print what an owner wrote, what a model wrote,
what a homeserver or a connector said. A terminal treats some characters as commands, not
text: ESC starts sequences that move the cursor, rewrite the screen or set the window title
(some terminals do worse), a carriage return lets a line overwrite the one it is on, and
bidi overrides make the terminal show other text than the bytes say. Those are shown as
escapes (`\\x1b`, `\\u202e`) instead; everything else, emoji and every script, is left alone.
A backslash is not escaped, so a literal `\\x1b` in the text looks like an escaped ESC: it
may confuse, it cannot command the terminal.
"""

from __future__ import annotations

import re

# What a terminal obeys rather than shows, as a regular expression's character class (the
# log file escapes the same, in `logs.py`): C0 controls (tab and line feed are decided
# below), DEL, C1 controls (0x9b is a one-byte CSI on terminals that take 8-bit controls);
# the Arabic letter mark, the left-to-right and right-to-left marks, the embeddings,
# overrides and isolates; the line and paragraph separators; lone surrogates (a UTF-8
# stdout cannot encode them: print would raise).
OBEYED = (
    "\x00-\x08\x0b-\x1f\x7f-\x9f"
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
    "\u2028\u2029"
    "\ud800-\udfff"
)
_ONE_LINE = re.compile(f"[{OBEYED}\n]")
_LINES = re.compile(f"[{OBEYED}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: str, *, lines: bool = False) -> str:
    """`text` with every character a terminal would obey, rather than show, shown as an
    escape: C0 controls but tab (and line feed when `lines`), DEL, C1 controls, bidi
    marks, embeddings, overrides and isolates, line and paragraph separators and lone
    surrogates. Without `lines` the result is one line, so text cannot forge the next."""
    return (_LINES if lines else _ONE_LINE).sub(_escape, text)
