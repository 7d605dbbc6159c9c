"""Textual guards under the bash grammar: what makes the judge ask whatever the parse. Pure.

A grammar is not bash. Where tree-sitter-bash and bash could read a line differently, a
plain look at the text is a second opinion: control and invisible characters (which bash
takes as word characters but a reader, or a parser, may not), a line continuation inside a
word, and the character sequences that open constructs the judge never allows
(`$'`, `$"`, `((`, `$[`, `<<`, `<(`, `>(`, `\\``), looked for outside single quotes.
"""

from __future__ import annotations

import unicodedata

# Substrings that mean a construct is present whatever the grammar made of it.
_GUARDS = (
    ("$'", "ANSI-C quoting $'…' is not judged"),
    ('$"', 'locale quoting $"…" is not judged'),
    ("((", "arithmetic (( … )) is not judged"),
    ("$[", "arithmetic $[ … ] is not judged"),
    ("<<", "here-documents and here-strings are not judged"),
    ("<(", "process substitution is not judged"),
    (">(", "process substitution is not judged"),
    ("\\`", "nested backquotes are not judged"),
)


def screen(command: str) -> list[tuple[str, str]]:
    """Textual guards under the grammar: characters and sequences that mean a construct is
    present even if the parser saw none (outside single quotes, conservatively)."""
    found: list[tuple[str, str]] = []
    for ch in command:
        odd = (ord(ch) < 32 and ch not in "\t\n") or ord(ch) == 127
        invisible = ord(ch) > 127 and (ch.isspace() or unicodedata.category(ch)[0] in "CZ")
        if odd or invisible:
            found.append((repr(ch), "control or invisible characters are not judged"))
            break
    outside = _outside_single_quotes(command)
    for needle, reason in _GUARDS:
        if needle in outside:
            found.append((needle, reason))
    for index in range(len(command) - 1):
        if command.startswith("\\\n", index) and index > 0 and command[index - 1] not in " \t":
            found.append(("\\⏎", "a line continuation inside a word is not judged"))
            break
    return found


def _outside_single_quotes(command: str) -> str:
    """The command with single-quoted text and comments blanked out."""
    out: list[str] = []
    quote = ""
    i = 0
    while i < len(command):
        c = command[i]
        if quote == "'":
            quote = "" if c == "'" else quote
            out.append(" ")
        elif c == "\\":
            out.append(command[i : i + 2])
            i += 2
            continue
        elif quote == '"':
            quote = "" if c == '"' else quote
            out.append(c)
        elif c in "'\"":
            quote = c
            out.append(" " if c == "'" else c)
        elif c == "#" and (not out or out[-1][-1:] in " \t\n;&|("):
            end = command.find("\n", i)
            i = len(command) if end < 0 else end
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)
