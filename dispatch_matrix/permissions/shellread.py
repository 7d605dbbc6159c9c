"""The shell reader: a command line as simple commands of literal words, or `NotLiteral`.

It does not model bash. It recognises a small literal subset and raises `NotLiteral` on
everything else: simple commands joined by `&&`, `||`, `;`, `|` and newlines, whose words
are plain characters, '…' strings, "…" strings without `$` or backquotes, and `\\x`
escapes; redirections to or from a literal path or a file descriptor. Any expansion,
substitution, assignment, here-document, subshell, group, function, loop, `&`, bracket
glob, odd or invisible character, or anything the lexer does not know is not literal.
tree-sitter-bash is a second opinion on the structure: a line it reads with any node
outside a short whitelist, or with another number of commands, is not literal either.
The judge (`shelljudge.py`) decides what the words it returns may do.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dispatch_matrix.permissions.shelloptions import words

if TYPE_CHECKING:
    from tree_sitter import Node, Parser


# Past these the judge asks rather than spend seconds on one line (path checks walk every
# parent folder of every word): no one approves such a line by eye anyway.
MAX_WORD = 4096

MAX_WORDS = 2000

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:=@%+,^]")

_TS_NAMED = words("""program list pipeline redirected_statement command command_name word
string string_content raw_string concatenation file_redirect file_descriptor number comment""")

_TS_TOKENS = frozenset(
    ["&&", "||", "|", ";", "\n", '"', ">", ">>", "<", "&>", "&>>", ">&", "<&", ">|"]
)


class NotLiteral(Exception):  # noqa: N818 - a verdict, not an error: the line asks
    """Raised inside the lexer: the line is not made of literal words."""

    def __init__(self, piece: str, reason: str) -> None:
        super().__init__(reason)
        self.piece = piece
        self.reason = reason


@dataclass(frozen=True)
class Word:
    """One literal word: its value after quote removal, as written, and its kind."""

    value: str
    raw: str
    glob: bool = False
    tilde: bool = False

    @property
    def canonical(self) -> str:
        """The word spelled one way, for rule matching."""
        if self.glob or (self.value and all(c in _PLAIN or c == "~" for c in self.value)):
            return self.value
        return "'" + self.value.replace("'", "'\\''") + "'"


@dataclass(frozen=True)
class Redirect:
    """A redirection: operator, file descriptor and literal target."""

    op: str
    target: Word
    text: str


@dataclass
class Simple:
    """One simple command: its words and redirections, and its text as written."""

    words: list[Word] = field(default_factory=list)
    redirects: list[Redirect] = field(default_factory=list)
    start: int = -1
    end: int = 0


def odd_character(text: str) -> str | None:
    """The first control, invisible or direction-changing character in `text`, if any."""
    for ch in text:
        if (ord(ch) < 32 and ch not in "\t\n") or ord(ch) == 127:
            return ch
        if ord(ch) > 127 and (ch.isspace() or unicodedata.category(ch)[0] in "CZ"):
            return ch
    return None


def literal_words(line: str) -> list[list[str]]:
    """The words of each simple command of a literal line (redirections aside), as bash
    passes them; NotLiteral when the line is anything else."""
    commands = simple_commands(line)
    cross_check(line, len(commands))
    return [[w.value for w in c.words] for c in commands]


def simple_commands(line: str) -> list[Simple]:
    """The simple commands of a literal line; NotLiteral for anything else."""
    odd = odd_character(line)
    if odd is not None:
        raise NotLiteral(repr(odd), "a control or invisible character")
    commands: list[Simple] = []
    current = Simple()
    pending = False  # after `&&`, `||` or `|`: a command must follow
    redirect: tuple[str, int] | None = None
    for kind, value, start, end in _tokens(line):
        if redirect is not None:
            if kind != "word":
                raise NotLiteral(line[redirect[1] : end], "a redirection without a target")
            assert isinstance(value, Word)
            text = line[redirect[1] : end]
            current.redirects.append(Redirect(redirect[0], value, text))
            current.end = end
            redirect = None
            continue
        if kind == "word":
            assert isinstance(value, Word)
            current.words.append(value)
        elif kind == "redirect":
            assert isinstance(value, str)
            redirect = (value, start)
        elif value == "\n" and not current.words and not current.redirects:
            continue
        else:
            if not current.words:
                raise NotLiteral(line[max(current.start, start) : end], "an operator alone")
            commands.append(current)
            current = Simple()
            pending = value in ("&&", "||", "|")
            continue
        if current.start < 0:
            current.start = start
        current.end = end
    if redirect is not None:
        raise NotLiteral(line[redirect[1] :], "a redirection without a target")
    if current.words:
        commands.append(current)
    elif current.redirects:
        raise NotLiteral(line[current.start :], "a redirection without a command")
    elif pending:
        raise NotLiteral(line[-20:], "the line ends with an operator")
    words = [w for c in commands for w in (*c.words, *(r.target for r in c.redirects))]
    if len(words) > MAX_WORDS or any(len(w.value) > MAX_WORD for w in words):
        raise NotLiteral(line[:40] + "…", "too many or too long words to judge")
    return commands


def _tokens(line: str) -> Iterator[tuple[str, Word | str, int, int]]:  # noqa: C901, PLR0912
    """Words, operators and redirection operators, with their offsets."""
    n = len(line)
    i = 0
    buf: list[str] = []
    start = -1
    glob = tilde = False

    def word(end: int) -> tuple[str, Word, int, int]:
        return ("word", Word("".join(buf), line[start:end], glob, tilde), start, end)

    while i < n:
        c = line[i]
        began = start >= 0
        if c in " \t\n;&|<>":
            fd = ""
            if began and c in "<>" and line[start:i].isdigit():
                fd = line[start:i]
            elif began:
                yield word(i)
            at = start if fd else i
            buf, start, glob, tilde = [], -1, False, False
            if c in " \t":
                i += 1
                continue
            op = _operator(line, i)
            yield ("redirect" if op[0] in "<>" or op.startswith("&>") else "op", op, at, i)
            i += len(op)
            continue
        if not began:
            start = i
        if c == "\\":
            following = line[i + 1 : i + 2]
            if following == "\n" and not buf and line[start:i] == "":
                start = -1
            elif following in ("", "\n"):
                raise NotLiteral("\\⏎", "a line continuation inside a word")
            else:
                buf.append(following)
            i += 2
        elif c == "'":
            close = line.find("'", i + 1)
            if close < 0:
                raise NotLiteral(line[i : i + 20], "an unclosed quote")
            buf.append(line[i + 1 : close])
            i = close + 1
        elif c == '"':
            i = _double_quoted(line, i, buf)
        elif c == "#" and not began:
            close = line.find("\n", i)
            i, start = (n if close < 0 else close), -1
        elif c == "~" and not began and line[i + 1 : i + 2] in ("", "/", " ", "\t", "\n", ";"):
            buf.append("~")
            tilde = True
            i += 1
        elif c in "*?":
            buf.append(c)
            glob = True
            i += 1
        elif c in _PLAIN or c == "#" or (c == "~" and began and line[i - 1] not in "=:"):
            # Bash expands `~` only at a word's start and after `=` or `:` in words that
            # look like assignments; `HEAD~1` is literal.
            buf.append(c)
            i += 1
        else:
            raise NotLiteral(line[i : i + 20], _WHY.get(c, "a character outside the literal set"))
    if start >= 0:
        yield word(n)


_WHY = {
    "$": "an expansion or substitution",
    "`": "a command substitution",
    "{": "a brace expansion or group",
    "}": "a brace expansion or group",
    "(": "a subshell, substitution or function",
    ")": "a subshell, substitution or function",
    "[": "a bracket pattern",
    "~": "a `~` other than a leading `~/`",
    "!": "a negation or history expansion",
}


def _operator(line: str, i: int) -> str:
    two = line[i : i + 2]
    three = line[i : i + 3]
    if three == "&>>":
        return three
    if two in ("&&", "||", ">>", ">|", ">&", "<&", "&>"):
        return two
    if two in (";;", ";&", "|&", "<<", "<>", "<(", ">(") or two == "&" or line[i] == "&":
        raise NotLiteral(two, "a here-document, background job or other construct")
    return line[i]


def _double_quoted(line: str, i: int, buf: list[str]) -> int:
    j = i + 1
    while j < len(line):
        d = line[j]
        if d == '"':
            return j + 1
        if d in "$`":
            raise NotLiteral(line[i : j + 20], "an expansion inside double quotes")
        if d == "\\":
            following = line[j + 1 : j + 2]
            if following in ('"', "\\", "$", "`"):
                buf.append(following)
                j += 2
                continue
            if following in ("", "\n"):
                raise NotLiteral(line[i : j + 2], "a line continuation inside quotes")
        buf.append(d)
        j += 1
    raise NotLiteral(line[i : i + 20], "an unclosed quote")


def cross_check(line: str, count: int) -> None:
    """tree-sitter-bash must see the same line: only whitelisted nodes, as many commands."""
    tree = _parser().parse(line.encode())
    seen = 0
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing or node.has_error:
            raise NotLiteral(line[:40], "bash syntax the parser could not read")
        if node.is_named and node.type not in _TS_NAMED:
            raise NotLiteral(_text(node), f"a `{node.type}` the judge does not allow")
        if not node.is_named and node.type not in _TS_TOKENS:
            raise NotLiteral(node.type, f"`{node.type}`, which the judge does not allow")
        seen += node.type == "command"
        stack.extend(node.children)
    if seen != count:
        raise NotLiteral(line[:40], "the parser and the judge read the line differently")


def _text(node: Node) -> str:
    return (node.text or b"").decode(errors="replace")[:40]


@functools.cache
def _parser() -> Parser:
    # Loaded with the first command judged: an idle daemon does not hold the grammar.
    import tree_sitter_bash
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_bash.language()))
