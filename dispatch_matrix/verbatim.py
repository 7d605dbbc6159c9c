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

_BACKTICKS = re.compile(r"`+")
# Not format characters (Cf) but invisible or lookalike blanks all the same: Hangul fillers
# and the variation selectors (which can smuggle text after an emoji).
_ALSO_HIDDEN = frozenset({0x115F, 0x1160, 0x3164, 0xFFA0})
_VARIATION_SELECTORS = ((0xFE00, 0xFE0F), (0xE0100, 0xE01EF))


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


def is_hidden(ch: str) -> bool:
    """Whether a reader cannot see `ch` for what it is: controls (but tab and line ends),
    format characters (bidi controls, zero-width, tags, BOM), line and paragraph separators,
    every space but the plain one, fillers and variation selectors."""
    code = ord(ch)
    if ch in "\t\n\r ":
        return False
    category = unicodedata.category(ch)
    if category in ("Cc", "Cf", "Zl", "Zp", "Zs", "Co", "Cn", "Cs"):
        return True
    return code in _ALSO_HIDDEN or any(lo <= code <= hi for lo, hi in _VARIATION_SELECTORS)


def hidden_characters(text: str) -> list[str]:
    """The distinct hidden characters in `text` as `U+202E` names, in order of appearance."""
    found: dict[str, None] = {}
    for ch in text:
        # Printable ASCII is never hidden; only the rest needs the Unicode tables.
        if not 32 <= ord(ch) < 127 and is_hidden(ch):
            found.setdefault(f"U+{ord(ch):04X}", None)
    return list(found)


def visible(text: str) -> str:
    """`text` with each hidden character shown as `⟦U+202E⟧` (for display, never to run)."""
    if all(32 <= ord(ch) < 127 or ch in "\t\n\r" for ch in text):
        return text
    return "".join(f"⟦U+{ord(ch):04X}⟧" if is_hidden(ch) else ch for ch in text)
