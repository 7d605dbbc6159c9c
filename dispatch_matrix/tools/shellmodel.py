"""The judge's model of a command line: words, assignments, redirections, commands. Pure.

Built by `shellparse.parse` from the bash grammar; read by `shelljudge`. Frozen dataclasses
with no behaviour beyond what follows from their fields.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .shellwords import is_literal, render, unescape


@dataclass(frozen=True)
class Problem:
    """A construct the judge does not model exactly: the call is asked about."""

    text: str
    reason: str


@dataclass(frozen=True)
class Word:
    """One shell word as written, and what the judge can know of it before it runs."""

    source: str
    # The word as a pattern (quoted specials escaped); None when part of it is only known at
    # run time (a parameter expansion or command substitution). `$HOME` at its start is
    # written as an unquoted `~`, which is what bash expands it to.
    pattern: str | None
    subs: tuple[Script, ...] = ()

    @property
    def dynamic(self) -> bool:
        """Whether part of the word is only known at run time."""
        return self.pattern is None

    @property
    def literal(self) -> str | None:
        """The word's text when bash applies no expansion to it at all."""
        if self.pattern is None or not is_literal(self.pattern):
            return None
        return unescape(self.pattern)

    @property
    def text(self) -> str:
        """The canonical spelling rules are matched against: a literal word re-quoted the
        one way (`"rm"`, `\\rm` and `'r'm` all read `rm`), anything else as written."""
        value = self.literal
        return render(value) if value is not None else self.source


@dataclass(frozen=True)
class Assignment:
    """`NAME=value` before a command (or alone)."""

    source: str
    name: str
    value: Word


@dataclass(frozen=True)
class Redirect:
    """One redirection: `op` is `>`, `>>`, `<`, `>&`, `&>`, `<<`, `<<<`, …"""

    op: str
    fd: str | None
    target: Word | None
    source: str


@dataclass(frozen=True)
class Command:
    """A simple command: assignments, words (the program first) and redirections."""

    source: str
    words: tuple[Word, ...]
    assignments: tuple[Assignment, ...] = ()
    redirects: tuple[Redirect, ...] = ()

    @property
    def text(self) -> str:
        """The command as rules see it: canonical words, redirections left out."""
        parts = [f"{a.name}={a.value.text}" for a in self.assignments]
        return " ".join(parts + [w.text for w in self.words])


@dataclass(frozen=True)
class Script:
    """A parsed command line (or the inside of a substitution)."""

    commands: tuple[Command, ...]
    # Redirections of compound statements: `(cd a && make) > log`.
    redirects: tuple[Redirect, ...]
    problems: tuple[Problem, ...]
    # Substitutions outside any command word (loop headers, `[[ … ]]`, here-documents).
    nested: tuple[Script, ...] = ()

    def walk(self) -> Iterator[Command]:
        """Every command, those inside substitutions included, in source order."""
        for command in self.commands:
            yield command
            for word in words_of(command):
                for sub in word.subs:
                    yield from sub.walk()
        for script in self.nested:
            yield from script.walk()


def words_of(command: Command) -> Iterator[Word]:
    """Every word of a command: its own, its assignment values, its redirection targets."""
    yield from command.words
    for assignment in command.assignments:
        yield assignment.value
    for redirect in command.redirects:
        if redirect.target is not None:
            yield redirect.target


@dataclass(frozen=True)
class SideDoor:
    """One argument that writes, runs or reads instructions: what a rule must name."""

    token: str
    arg: str
    reason: str
