"""A bash command line as a small typed model, parsed with tree-sitter-bash. Pure.

Why this parser: tree-sitter-bash is a maintained, widely used grammar of bash itself (the
one editors and GitHub's code navigation use), shipped on PyPI as a wheel with no build
step, and tree-sitter gives a concrete syntax tree with byte offsets and explicit `ERROR` /
`MISSING` nodes, so what it cannot parse is visible instead of silently guessed. Pure-Python
alternatives (`bashlex`) stop at bash 4 syntax and are unmaintained; `shlex` is a tokenizer,
not a grammar. A grammar is still not bash: where the two could disagree the model records a
`Problem` and the judge asks (see `shelljudge.screen` for the textual guards on top).

The model keeps only what the judge reasons about: every simple command (in order, at any
depth, inside loops and functions too so deny rules see them), its words, assignments and
redirections, and a `Problem` for every construct that is not modelled exactly (arithmetic,
ANSI-C and locale quoting, here-documents and here-strings, leading redirections, `for`
headers with expansions, `case`, `select`, functions, `[[ … ]]`, process substitution,
parse errors). Each word carries a *pattern* (see `shellwords.py`) or None when part of it
is only known at run time, and the scripts of the command substitutions inside it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tree_sitter import Node, Parser

from .shellmodel import Assignment, Command, Problem, Redirect, Script, Word
from .shellwords import double_quoted, escape, hidden_expansion, unquoted

MAX_DEPTH = 16
MAX_LENGTH = 100_000
_TRANSPARENT = frozenset(
    {
        "program",
        "list",
        "pipeline",
        "subshell",
        "compound_statement",
        "negated_command",
        "do_group",
        "if_statement",
        "elif_clause",
        "else_clause",
        "while_statement",
    }
)
# Parameter expansion operators that neither assign, nor evaluate arithmetic, nor expand
# prompts or indirect names (`${x:=y}`, `${x:1:2}`, `${x@P}`, `${!x}` are Problems).
_SAFE_OPERATORS = frozenset(
    {":-", "-", ":+", "+", ":?", "?", "%", "%%", "#", "##", "/", "//", "/#", "/%", "^", "^^"}
    | {",", ",,"}
)


def parse(source: str) -> Script:
    """The model of one command line; never raises (what fails to parse is a Problem)."""
    if len(source) > MAX_LENGTH:
        return Script((), (), (Problem(source[:80], "the command is too long to judge"),))
    data = source.encode()
    tree = _parser().parse(data)
    builder = _Builder(data, 0)
    if tree.root_node.has_error:
        bad = _first_error(tree.root_node)
        where = builder.text(bad) if bad is not None else source
        builder.problem(where or source, "bash syntax the parser could not read")
    builder.statement(tree.root_node)
    return builder.script()


@functools.cache
def _parser() -> Parser:
    # Loaded with the first command judged: an idle daemon does not hold the grammar.
    import tree_sitter_bash
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_bash.language()))


def _first_error(node: Node) -> Node | None:
    if node.is_error or node.is_missing:
        return node
    for child in node.children:
        found = _first_error(child)
        if found is not None:
            return found
    return None


class _Builder:
    """Walks one tree (or one substitution of it) and collects the model."""

    def __init__(self, data: bytes, depth: int) -> None:
        self.data = data
        self.depth = depth
        self.commands: list[Command] = []
        self.redirects: list[Redirect] = []
        self.problems: list[Problem] = []
        self.nested: list[Script] = []

    def script(self) -> Script:
        return Script(
            tuple(self.commands), tuple(self.redirects), tuple(self.problems), tuple(self.nested)
        )

    def text(self, node: Node) -> str:
        return self.data[node.start_byte : node.end_byte].decode(errors="replace")

    def problem(self, text: str, reason: str) -> None:
        self.problems.append(Problem(text, reason))

    # Statements --------------------------------------------------------------------

    def statement(self, node: Node) -> None:
        kind = node.type
        if kind == "comment" or not node.is_named:
            return
        if kind in _TRANSPARENT:
            if kind == "compound_statement" and any(c.type == "((" for c in node.children):
                self.problem(self.text(node), "arithmetic commands (( … )) are not judged")
                self.collect(node)
                return
            for child in node.named_children:
                self.statement(child)
        elif kind == "redirected_statement":
            self.redirected(node)
        elif kind == "command":
            self.commands.append(self.command(node, ()))
        elif kind in ("variable_assignment", "variable_assignments"):
            nodes = node.named_children if kind == "variable_assignments" else [node]
            found = [self.assignment(n) for n in nodes if n.type == "variable_assignment"]
            self.commands.append(Command(self.text(node), (), tuple(found)))
        elif kind in ("declaration_command", "unset_command"):
            words = tuple(self.word(c) for c in node.children if c.type != "comment")
            self.commands.append(Command(self.text(node), words))
        elif kind == "for_statement":
            self.loop(node)
        else:
            self.unmodelled(node)

    def unmodelled(self, node: Node) -> None:
        """A construct judged only as "ask"; the commands inside still meet deny rules."""
        reasons = {
            "c_style_for_statement": "arithmetic `for (( … ))` loops are not judged",
            "case_statement": "`case` statements are not judged",
            "function_definition": "function definitions are not judged",
            "test_command": "test expressions ([[ … ]], [ … ]) are not judged",
            "ERROR": "bash syntax the parser could not read",
        }
        reason = reasons.get(node.type, f"`{node.type}` is not something the judge models")
        self.problem(self.text(node), reason)
        for index, child in enumerate(node.children):
            field = node.field_name_for_child(index)
            if child.type in _STATEMENTS and field not in ("value", "name"):
                self.statement(child)
            elif child.is_named:
                self.collect(child)

    def loop(self, node: Node) -> None:
        if node.children and node.children[0].type == "select":
            self.problem(self.text(node), "`select` loops are not judged")
        values = [c for i, c in enumerate(node.children) if node.field_name_for_child(i) == "value"]
        if not any(c.type == "in" for c in node.children):
            self.problem(self.text(node), "a `for` loop over the arguments is not judged")
        for value in values:
            word = self.word(value)
            self.nested.extend(word.subs)
            if word.literal is None:
                self.problem(self.text(value), "expansions in a `for` header are not judged")
        body = node.child_by_field_name("body")
        if body is not None:
            self.statement(body)

    def redirected(self, node: Node) -> None:
        body = node.child_by_field_name("body")
        redirects: list[Redirect] = []
        extra: list[Word] = []
        for index, child in enumerate(node.children):
            if node.field_name_for_child(index) == "redirect":
                redirects.extend(self.redirect(child, extra))
        if body is not None and body.type == "command":
            command = self.command(body, tuple(redirects))
            # bash reads words after a redirection target as arguments: `cmd > f arg`.
            words = command.words + tuple(extra)
            self.commands.append(
                Command(command.source, words, command.assignments, command.redirects)
            )
            return
        if body is None:
            self.problem(self.text(node), "a redirection without a command is not judged")
        else:
            self.statement(body)
        if extra:
            self.problem(self.text(node), "words after a redirection target are not judged")
        self.redirects.extend(redirects)

    def command(self, node: Node, redirects: tuple[Redirect, ...]) -> Command:
        assignments: list[Assignment] = []
        words: list[Word] = []
        own: list[Redirect] = []
        extra: list[Word] = []
        for index, child in enumerate(node.children):
            field = node.field_name_for_child(index)
            if child.type == "variable_assignment":
                assignments.append(self.assignment(child))
            elif field == "redirect":
                if not words:
                    self.problem(self.text(node), "a command that starts with a redirection")
                own.extend(self.redirect(child, extra))
            elif field == "name":
                inner = child.named_children
                words.append(self.word(inner[0] if len(inner) == 1 else child))
            elif field == "argument":
                words.append(self.word(child))
            elif child.type != "comment":
                self.problem(self.text(child), "part of a command the judge does not model")
        if not words:
            self.problem(self.text(node), "a command without a name is not judged")
        return Command(
            self.text(node), tuple(words + extra), tuple(assignments), tuple(own) + redirects
        )

    def assignment(self, node: Node) -> Assignment:
        name = node.child_by_field_name("name")
        value = node.child_by_field_name("value")
        word = self.word(value) if value is not None else Word("", "")
        if any(c.type == "+=" for c in node.children) or (name and name.type == "subscript"):
            self.problem(self.text(node), "array and append assignments are not judged")
        return Assignment(self.text(node), self.text(name) if name else "", word)

    def redirect(self, node: Node, extra: list[Word]) -> list[Redirect]:
        source = self.text(node)
        fd_node = node.child_by_field_name("descriptor")
        fd = self.text(fd_node) if fd_node is not None else None
        if node.type == "file_redirect":
            op = next((c.type for c in node.children if not c.is_named), "")
            dests = [
                self.word(c)
                for i, c in enumerate(node.children)
                if node.field_name_for_child(i) == "destination"
            ]
            extra.extend(dests[1:])
            return [Redirect(op, fd, dests[0] if dests else None, source)]
        if node.type == "herestring_redirect":
            self.problem(source, "here-strings (<<<) are not judged")
            target = next((self.word(c) for c in node.named_children), None)
            return [Redirect("<<<", fd, target, source)]
        if node.type == "heredoc_redirect":
            self.problem(source, "here-documents (<<) are not judged")
            out: list[Redirect] = []
            subs: list[Script] = []
            for index, child in enumerate(node.children):
                if node.field_name_for_child(index) == "redirect":
                    out.extend(self.redirect(child, extra))
                elif child.type == "heredoc_body":
                    subs.extend(self.substitutions(child))
                elif child.type in _STATEMENTS:
                    self.statement(child)
            body = Word(source, None, tuple(subs))
            return [Redirect("<<", fd, body, source), *out]
        self.problem(source, f"`{node.type}` redirections are not judged")
        self.collect(node)
        return []

    # Words -------------------------------------------------------------------------

    def word(self, node: Node) -> Word:
        pieces: list[str] = []
        subs: list[Script] = []
        dynamic = not self.pieces(node, pieces, subs)
        return Word(self.text(node), None if dynamic else "".join(pieces), tuple(subs))

    def pieces(self, node: Node, out: list[str], subs: list[Script]) -> bool:
        """Append the node's pattern to `out`; False when part of it is dynamic."""
        kind = node.type
        if kind in ("word", "number"):
            self.check_hidden(node)
            out.append(unquoted(self.text(node)))
            return True
        if kind == "brace_expression":
            out.append(self.text(node))
            return True
        if kind == "variable_name" or not node.is_named:
            out.append(escape(self.text(node)))
            return True
        if kind == "raw_string":
            out.append(escape(self.text(node)[1:-1]))
            return True
        if kind == "concatenation":
            results = [self.pieces(c, out, subs) for c in node.children]
            return all(results)
        if kind == "string":
            ok = True
            for child in node.children:
                if child.type == "string_content":
                    self.check_hidden(child)
                    out.append(escape(double_quoted(self.text(child))))
                elif child.type in ('"', "$"):
                    out.append("" if child.type == '"' else "$")
                else:
                    ok = self.pieces(child, out, subs) and ok
            return ok
        if kind in ("simple_expansion", "expansion"):
            if not "".join(out) and self.text(node) in ("$HOME", "${HOME}"):
                out.append("~")
                return True
            if kind == "expansion":
                self.check_expansion(node)
            subs.extend(self.substitutions(node))
            return False
        if kind == "variable_assignment":
            name = node.child_by_field_name("name")
            value = node.child_by_field_name("value")
            out.append(escape(self.text(name) + "=") if name else "")
            return value is None or self.pieces(value, out, subs)
        if kind in ("command_substitution", "process_substitution"):
            if kind == "process_substitution":
                self.problem(self.text(node), "process substitution <( … ) is not judged")
            subs.append(self.sub(node))
            return False
        reasons = {
            "arithmetic_expansion": "arithmetic expansion $(( … )) is not judged",
            "ansi_c_string": "ANSI-C quoting $'…' is not judged",
            "translated_string": 'locale quoting $"…" is not judged',
        }
        self.problem(self.text(node), reasons.get(kind, f"`{kind}` in a word is not judged"))
        subs.extend(self.substitutions(node))
        return False

    def check_expansion(self, node: Node) -> None:
        for index, child in enumerate(node.children):
            field = node.field_name_for_child(index)
            risky = child.type == "subscript" or (
                field == "operator" and self.text(child) not in _SAFE_OPERATORS
            )
            if risky:
                self.problem(self.text(node), "this parameter expansion form is not judged")
                return

    def check_hidden(self, node: Node) -> None:
        """A `$…` or backquote inside text the grammar took as literal: bash would expand
        it (as in `${x-`cmd`}`), so the grammar and bash disagree here."""
        if hidden_expansion(self.text(node)):
            self.problem(self.text(node), "an expansion the grammar did not see")

    def sub(self, node: Node) -> Script:
        """The script of a `$( … )`, backquotes or `<( … )`."""
        inner = _Builder(self.data, self.depth + 1)
        if self.depth + 1 > MAX_DEPTH:
            inner.problem(self.text(node), "substitutions nested too deeply")
            return inner.script()
        for child in node.named_children:
            inner.statement(child)
        return inner.script()

    def substitutions(self, node: Node) -> list[Script]:
        """The scripts of every substitution below `node` (in text that is not a command)."""
        found: list[Script] = []
        for child in node.named_children:
            if child.type in ("command_substitution", "process_substitution"):
                if child.type == "process_substitution":
                    self.problem(self.text(child), "process substitution <( … ) is not judged")
                found.append(self.sub(child))
            else:
                if child.type in ("word", "string_content", "regex"):
                    self.check_hidden(child)
                found.extend(self.substitutions(child))
        return found

    def collect(self, node: Node) -> None:
        """Keep the substitutions below an unmodelled node, for the deny rules."""
        self.nested.extend(self.substitutions(node))


_STATEMENTS = _TRANSPARENT | {
    "redirected_statement",
    "command",
    "variable_assignment",
    "variable_assignments",
    "declaration_command",
    "unset_command",
    "for_statement",
    "c_style_for_statement",
    "case_statement",
    "case_item",
    "function_definition",
    "test_command",
    "ERROR",
}
