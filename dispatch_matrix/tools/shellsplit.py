"""Split a shell command line into the simple commands it would run. Pure.

`a && b || c; d | e &`, newlines, `$( … )`, backticks, `<( … )`, subshells `( … )`, groups
`{ …; }`, `if/while/for` bodies, and here-documents are understood, with bash's quoting: a
`$( … )` or backtick inside double quotes (or an unquoted here-document) is still run, while
single quotes make everything literal. Constructs this splitter does not model (`case`,
`function`, `coproc`, `name() { … }`) raise ShellSyntaxError so the caller asks instead of
guessing. Words are kept as written (quotes included); unquoted blanks collapse to one space.
"""

from __future__ import annotations

import re
import shlex

MAX_DEPTH = 32
# Reserved words that may open a command without being one.
_PREFIX_WORDS = frozenset(
    {
        "{",
        "}",
        "!",
        "if",
        "then",
        "elif",
        "else",
        "fi",
        "do",
        "done",
        "while",
        "until",
        "time",
        "esac",
    }
)
# A loop header runs nothing itself (its substitutions are collected separately).
_HEADER_WORDS = frozenset({"for", "select"})
_UNMODELLED = frozenset({"case", "function", "coproc"})
_REDIRECT_ONLY = re.compile(r"^(?:\d*[<>]|&>)")
_WORD_END = " \t\n;&|<>()"


class ShellSyntaxError(ValueError):
    """A command line this splitter cannot judge (unbalanced quotes, unmodelled syntax)."""


def split_commands(src: str) -> list[str]:
    """Every simple command in `src`, substitutions and subshell contents included."""
    splitter = _Splitter(src, 0)
    splitter.parse_list(None)
    return splitter.commands


def words(command: str) -> list[str]:
    """A command's words with shell quoting removed (best effort, for path checks)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|<>()")
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:
        return command.split()


class _Splitter:
    def __init__(self, src: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ShellSyntaxError("nested too deeply")
        self.src = src
        self.i = 0
        self.depth = depth
        self.commands: list[str] = []
        # Pending here-documents: (delimiter, strip leading tabs, body is expanded).
        self.heredocs: list[tuple[str, bool, bool]] = []

    def parse_list(self, closer: str | None) -> None:
        """Commands up to `closer` (or the end), appended to self.commands."""
        src = self.src
        cur: list[str] = []
        while self.i < len(src):
            c = src[self.i]
            if c == ")":
                if closer != ")":
                    raise ShellSyntaxError("unbalanced ')'")
                self._flush(cur)
                self.i += 1
                return
            if c in " \t":
                if cur and cur[-1] != " ":
                    cur.append(" ")
                self.i += 1
            elif c == "\n":
                self._flush(cur)
                self.i += 1
                self._heredoc_bodies()
            elif c == "\\":
                if src.startswith("\\\n", self.i):
                    self.i += 2
                else:
                    cur.append(src[self.i : self.i + 2])
                    self.i += 2
            elif c == "'":
                end = src.find("'", self.i + 1)
                if end < 0:
                    raise ShellSyntaxError("unterminated single quote")
                cur.append(src[self.i : end + 1])
                self.i = end + 1
            elif c == '"':
                self._double_quoted(cur)
            elif c == "`":
                self._backtick(cur)
            elif c == "$":
                self._dollar(cur)
            elif c == "(":
                self._paren(cur)
            elif c == "#" and (not cur or cur[-1] == " "):
                end = src.find("\n", self.i)
                self.i = len(src) if end < 0 else end
            elif c in ";&|":
                self._operator(cur)
            elif src.startswith("<<", self.i) and not src.startswith("<<<", self.i):
                self._heredoc(cur)
            else:
                cur.append(c)
                self.i += 1
        if closer is not None:
            raise ShellSyntaxError(f"missing '{closer}'")
        self._flush(cur)

    def _flush(self, cur: list[str]) -> None:
        text = "".join(cur).strip()
        cur.clear()
        while text:
            first, _, rest = text.partition(" ")
            if first not in _PREFIX_WORDS:
                break
            text = rest.strip()
        if not text:
            return
        first = text.split(" ", 1)[0]
        if first in _UNMODELLED:
            raise ShellSyntaxError(f"`{first}` is not something this parser judges")
        if first in _HEADER_WORDS or _REDIRECT_ONLY.match(text):
            return
        self.commands.append(text)

    def _last(self, cur: list[str]) -> str:
        return cur[-1][-1] if cur and cur[-1] else ""

    def _operator(self, cur: list[str]) -> None:
        src, i = self.src, self.i
        c, nxt, prev = src[i], src[i + 1 : i + 2], self._last(cur)
        if c == "&" and nxt == ">":
            cur.append("&>")
            self.i += 2
        elif (c == "&" and prev in ("<", ">")) or (c == "|" and prev == ">"):
            cur.append(c)  # 2>&1, <&0, >| are redirections
            self.i += 1
        else:
            self._flush(cur)
            self.i += 2 if (c in "&|" and nxt in ("&", "|")) else 1

    def _double_quoted(self, cur: list[str]) -> None:
        src = self.src
        cur.append('"')
        self.i += 1
        while self.i < len(src):
            c = src[self.i]
            if c == '"':
                cur.append('"')
                self.i += 1
                return
            if c == "\\":
                cur.append(src[self.i : self.i + 2])
                self.i += 2
            elif c == "`":
                self._backtick(cur)
            elif c == "$":
                self._dollar(cur)
            else:
                cur.append(c)
                self.i += 1
        raise ShellSyntaxError("unterminated double quote")

    def _backtick(self, cur: list[str]) -> None:
        src, start = self.src, self.i
        j = start + 1
        body: list[str] = []
        while j < len(src):
            c = src[j]
            if c == "\\" and src[j + 1 : j + 2] in ("`", "\\", "$"):
                body.append(src[j + 1])
                j += 2
                continue
            if c == "`":
                break
            body.append(c)
            j += 1
        else:
            raise ShellSyntaxError("unterminated backquote")
        self._nested("".join(body))
        cur.append(src[start : j + 1])
        self.i = j + 1

    def _dollar(self, cur: list[str]) -> None:
        src, start = self.src, self.i
        if src.startswith("$((", start):
            end = self._matching(start + 1, "(", ")")
            self._substitutions_in(src[start + 2 : end])
            self.i = end + 1
        elif src.startswith("$(", start):
            self.i += 2
            self._sublist()
        elif src.startswith("${", start):
            end = self._matching(start + 1, "{", "}")
            self._substitutions_in(src[start + 2 : end])
            self.i = end + 1
        else:
            self.i += 1
        cur.append(src[start : self.i])

    def _paren(self, cur: list[str]) -> None:
        start = self.i
        if self._last(cur) in ("<", ">"):
            # Process substitution: its command runs; the word stays in this command.
            self.i += 1
            self._sublist()
            cur.append(self.src[start : self.i])
        elif "".join(cur).strip():
            raise ShellSyntaxError("function definitions are not judged")
        else:
            # A subshell (or `(( … ))`): its commands are judged on their own.
            self.i += 1
            self._sublist()

    def _sublist(self) -> None:
        if self.depth + 1 > MAX_DEPTH:
            raise ShellSyntaxError("nested too deeply")
        self.depth += 1
        try:
            self.parse_list(")")
        finally:
            self.depth -= 1

    def _heredoc(self, cur: list[str]) -> None:
        src = self.src
        start = self.i
        self.i += 2
        strip_tabs = src.startswith("-", self.i)
        if strip_tabs:
            self.i += 1
        while self.i < len(src) and src[self.i] in " \t":
            self.i += 1
        word: list[str] = []
        quoted = False
        while self.i < len(src) and src[self.i] not in _WORD_END:
            c = src[self.i]
            if c in "'\"":
                end = src.find(c, self.i + 1)
                if end < 0:
                    raise ShellSyntaxError("unterminated quote in a here-document delimiter")
                word.append(src[self.i + 1 : end])
                quoted = True
                self.i = end + 1
            elif c == "\\":
                word.append(src[self.i + 1 : self.i + 2])
                quoted = True
                self.i += 2
            else:
                word.append(c)
                self.i += 1
        if not word:
            raise ShellSyntaxError("here-document without a delimiter")
        self.heredocs.append(("".join(word), strip_tabs, not quoted))
        cur.append(src[start : self.i])

    def _heredoc_bodies(self) -> None:
        src = self.src
        while self.heredocs:
            delimiter, strip_tabs, expanded = self.heredocs.pop(0)
            while self.i < len(src):
                end = src.find("\n", self.i)
                line_end = len(src) if end < 0 else end
                line = src[self.i : line_end]
                self.i = line_end + 1
                if (line.lstrip("\t") if strip_tabs else line) == delimiter:
                    break
                if expanded:
                    self._substitutions_in(line)

    def _nested(self, text: str) -> None:
        inner = _Splitter(text, self.depth + 1)
        inner.parse_list(None)
        self.commands.extend(inner.commands)

    def _substitutions_in(self, text: str) -> None:
        """Collect the commands of `$( … )` and backticks in text that is expanded but not
        run as a command (arithmetic, `${…}`, here-document bodies)."""
        inner = _Splitter(text, self.depth + 1)
        sink: list[str] = []
        while inner.i < len(text):
            c = text[inner.i]
            if c == "\\":
                inner.i += 2
            elif c == "`":
                inner._backtick(sink)
            elif c == "$":
                inner._dollar(sink)
            else:
                inner.i += 1
        self.commands.extend(inner.commands)

    def _matching(self, start: int, opener: str, closer: str) -> int:
        """Index of the `closer` matching the `opener` at `start`, skipping quoted text."""
        src = self.src
        depth = 0
        k = start
        while k < len(src):
            c = src[k]
            if c == "\\":
                k += 2
                continue
            if c in "'\"":
                end = src.find(c, k + 1)
                if end < 0:
                    raise ShellSyntaxError("unterminated quote")
                k = end + 1
                continue
            if c == opener:
                depth += 1
            elif c == closer:
                depth -= 1
                if depth == 0:
                    return k
            k += 1
        raise ShellSyntaxError(f"missing '{closer}'")
