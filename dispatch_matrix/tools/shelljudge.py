"""The shell judge: every part of a command line allowed, asked about or denied. Pure.

The command is parsed with a bash grammar (`shellparse.py`) and judged part by part; the
policy allows the call only if every finding allows, denies it if any denies, and asks
otherwise, listing every part that was not covered. What makes a part `ask` (fail closed):

- any construct the model does not carry exactly (see `shellparse.py`), and the textual
  guards of `screen` in case the grammar and bash disagree;
- a program name that is computed (`$(which rm)`, `r*`, `~u/x`), `eval`, `source`, `.`,
  `exec`, `builtin`, `command -p`, `trap`, `let`, …, and `sudo` and its kind;
- an argument only known at run time (`$X`, `$(…)`) for anything but echo-like commands
  (`echo`, `printf`, `true`, `sleep`: they print it and touch no file);
- a word that may name the control plane: literal paths inside a protected folder, globs
  and brace expansions that may match one (`~/sto*/config.toml`, `{store,x}/config.toml`,
  `[s]tore`), `~user`/`~+`/`~-`, relative paths after `cd` or `git -C`, and `/proc/<pid>`;
- a side door (`sidedoors.py`) no covering rule names, and a part no allow rule covers.

Every redirection target is judged as `Write(path)` (`>`, `>>`, `>|`, `&>`, `>&file`) or
`Read(path)` (`<`) against the path rules and the control plane; fd duplications and
`/dev/null` are nothing. Wrappers (`time`, `nice`, `nohup`, `timeout`, `env`, `stdbuf`,
`ionice`, `command`) are seen through: the wrapped command is what an allow rule must cover.
`xargs` and `sudo` are never covered by the inner command's rule alone. `bash -c '…'` with
a literal script is judged as that script. Deny and ask rules match every normalised form
of each command: quotes removed (`\\rm`, `'r'm`, `"rm"`), paths cut to the program name
(`/bin/rm`), assignments dropped and every suffix after a wrapper (`sudo -u x rm`).

An exact allow rule (no wildcard) that spells the whole line also covers what lacked a rule
— it is how "always" answers are learned — but never a construct the judge cannot model,
the control plane, or an ask or deny rule.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from .rules import Rule, collapse_blanks
from .shellmodel import Command, Redirect, Script, SideDoor, Word, words_of
from .shellparse import parse
from .shellpaths import Places, absolute, normal_path, word_trouble
from .shellscreen import screen
from .shellwords import escape, has_glob, is_literal, unescape
from .sidedoors import find_exec_commands, git_dirs, side_doors
from .wrappers import (
    EVALUATORS,
    PURE_OUTPUT,
    SHELLS,
    SUDO,
    deny_forms,
    evaluated,
    inner_command,
    shell_script,
    unwrap,
)

Kind = Literal["allow", "deny", "ask-rule", "protected", "unmodelled", "uncovered"]
MAX_DEPTH = 8
_DEV_WRITE = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/fd/1", "/dev/fd/2"})
_DEV_READ = frozenset({"/dev/null", "/dev/stdin", "/dev/zero", "/dev/fd/0"})


@dataclass(frozen=True)
class Finding:
    """What the judge says about one part of a command line."""

    kind: Kind
    # What the owner is shown: a command as written, a redirection, a construct.
    part: str
    reason: str
    rule: str | None = None

    @property
    def verdict(self) -> Literal["allow", "ask", "deny"]:
        """The verdict this finding stands for."""
        return "allow" if self.kind == "allow" else "deny" if self.kind == "deny" else "ask"


@dataclass(frozen=True)
class ShellRules:
    """What the judge needs from the policy: Bash rules, places and a path judge."""

    allow: tuple[Rule, ...]
    ask: tuple[Rule, ...]
    deny: tuple[Rule, ...]
    home: PurePosixPath
    workdir: PurePosixPath
    protected: tuple[PurePosixPath, ...]
    # Judges `Read`/`Write` of one absolute path with the path rules and the control plane.
    judge_path: Callable[[str, PurePosixPath], Finding]
    # Follows symlinks (the policy's `canonical`); None judges paths as spelled.
    resolve: Callable[[PurePosixPath], PurePosixPath] | None = None
    secret_globs: tuple[str, ...] = ()


def judge(command: str, rules: ShellRules) -> tuple[Finding, ...]:
    """Every finding about one command line, in order."""
    line = command.strip()
    script = parse(command)
    # A first walk finds every folder a `cd` may move to; the judgement then resolves each
    # relative path against all of them (a loop can run a command after a later `cd`).
    scout = _Walker(rules, [rules.workdir])
    scout.script(script, 0)
    walker = _Walker(rules, scout.bases)
    for kind, listed in _restrictive(rules):
        rule = next((r for r in listed if r.matches_command(line)), None)
        if rule is not None:
            walker.add(kind, line, f"`{line}` matches {_verb(kind)} rule {rule.text}", rule.text)
    walker.script(script, 0)
    findings = walker.findings
    if not any(f.kind == "unmodelled" for f in findings):
        # The grammar saw nothing it does not model; the text may still say otherwise.
        findings += [
            Finding("unmodelled", text, f"{reason} (`{text}`)") for text, reason in screen(command)
        ]
    collapsed = collapse_blanks(line)
    exact = next((r for r in rules.allow if r.exact and r.matches_command(collapsed)), None)
    if exact is not None:
        findings = [
            Finding("allow", f.part, f"allowed by {exact.text}", exact.text)
            if f.kind == "uncovered"
            else f
            for f in findings
        ]
    return tuple(findings)


def _restrictive(rules: ShellRules) -> tuple[tuple[Kind, tuple[Rule, ...]], ...]:
    return (("deny", rules.deny), ("ask-rule", rules.ask))


def _verb(kind: str) -> str:
    return "deny" if kind == "deny" else "ask"


class _Walker:
    """Collects findings over one parsed line; tracks the folders relative paths mean."""

    def __init__(self, rules: ShellRules, bases: list[PurePosixPath]) -> None:
        self.rules = rules
        self.findings: list[Finding] = []
        self.bases = list(dict.fromkeys(bases))
        self.places = Places(rules.home, rules.protected, rules.resolve, rules.secret_globs)

    def add(self, kind: Kind, part: str, reason: str, rule: str | None = None) -> None:
        self.findings.append(Finding(kind, part, reason, rule))

    def script(self, script: Script, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.add("unmodelled", "…", "commands nested too deeply to judge")
            return
        for problem in script.problems:
            self.add("unmodelled", problem.text, f"{problem.reason} (`{problem.text}`)")
        for command in script.commands:
            self.command(command, depth)
        for redirect in script.redirects:
            self.redirect(redirect, depth)
        for nested in script.nested:
            self.script(nested, depth + 1)

    def command(self, command: Command, depth: int) -> None:
        for word in words_of(command):
            for sub in word.subs:
                self.script(sub, depth + 1)
        for redirect in command.redirects:
            self.redirect(redirect, depth)
        prefix = [_assignment_word(a.source, a.name, a.value) for a in command.assignments]
        self.call(command.source, prefix, list(command.words), depth)

    def call(self, part: str, prefix: list[Word], words: list[Word], depth: int) -> None:
        """Judge one simple command (or the command a wrapper runs)."""
        if self.restricted(part, prefix, words):
            return
        if not words:
            self.dynamic(part, "assignment", prefix)
            self.paths(part, prefix)
            self.cover(part, prefix, [], [])
            return
        program = words[0].literal
        if program is None:
            reason = f"the program name `{words[0].source}` is only known at run time"
            self.add("unmodelled", part, reason)
            return
        name = posixpath.basename(program)
        args = words[1:]
        if name in EVALUATORS or name in SUDO:
            what = "runs as another user" if name in SUDO else "runs text or files as commands"
            self.add("unmodelled", part, f"`{name}` {what}, which the judge does not follow")
            script, inner = evaluated(name, args)
            if script is not None:
                self.script(parse(script), depth + 1)
            if inner:
                self.call(part, [], inner, depth + 1)
            return
        unwrapped = unwrap(name, args)
        if unwrapped is not None:
            more, inner = unwrapped
            if inner is None:
                self.add("unmodelled", part, f"options of `{name}` the judge does not know")
            elif inner:
                self.call(part, prefix + more, inner, depth)
            else:
                self.cover(part, prefix, words, [])
            return
        found = shell_script(name, args) if name in SHELLS else None
        if found is not None:
            exact, text = found
            if not exact:
                reason = f"`{name} -c` with a script or options the judge cannot follow"
                self.add("unmodelled", part, reason)
            if text is not None:
                self.script(parse(text), depth + 1)
            self.paths(part, prefix + args)
            return
        if name == "xargs":
            inner = inner_command(name, args)
            if inner:
                self.call(part, [], inner, depth + 1)
            else:
                self.add("unmodelled", part, "`xargs` without a command the judge can follow")
            door = SideDoor("xargs", "xargs", "builds arguments from its input, unseen here")
            self.cover(part, prefix, words, [door])
            return
        for exec_words in find_exec_commands(args) if name == "find" else []:
            self.call(part, [], exec_words, depth + 1)
        if name in ("cd", "pushd", "popd"):
            self.chdir(part, name, args)
        for folder in git_dirs(args) if name == "git" else []:
            self.add_base(part, folder)
        if name not in PURE_OUTPUT:
            self.dynamic(part, name, prefix + args)
        self.paths(part, prefix + words)
        self.cover(part, prefix, words, list(side_doors(name, args)))

    def restricted(self, part: str, prefix: list[Word], words: list[Word]) -> bool:
        """Deny and ask rules against every normalised form; True when one matched."""
        forms = deny_forms(prefix, words)
        for kind, listed in _restrictive(self.rules):
            for rule in listed:
                hit = next((f for f in forms if rule.matches_command(f)), None)
                if hit is not None:
                    reason = f"`{hit}` matches {_verb(kind)} rule {rule.text}"
                    self.add(kind, part, reason, rule.text)
                    return True
        return False

    def cover(
        self, part: str, prefix: list[Word], words: list[Word], doors: list[SideDoor]
    ) -> None:
        """An allow finding when a rule covers the command and names its side doors."""
        text = " ".join(w.text for w in prefix + words)
        matching = [r for r in self.rules.allow if r.matches_command(text)]
        rule = next((r for r in matching if all(r.names(d.token) for d in doors)), None)
        if rule is not None:
            self.add("allow", part, f"allowed by {rule.text}", rule.text)
        elif matching:
            door = next(d for d in doors if not matching[0].names(d.token))
            shown = f"`{door.arg}` " if door.arg else ""
            reason = (
                f"`{part}`: {shown}{door.reason}; {matching[0].text} does not name `{door.token}`"
            )
            self.add("uncovered", part, reason)
        else:
            self.add("uncovered", part, f"no allow rule covers `{part}`")

    def dynamic(self, part: str, name: str, words: Sequence[Word]) -> None:
        for word in words:
            if word.dynamic:
                reason = (
                    f"`{word.source}` is only known at run time, so the judge cannot tell "
                    f"what `{name}` will touch"
                )
                self.add("unmodelled", part, reason)
                return

    def paths(self, part: str, words: Sequence[Word]) -> None:
        """Ask about words that may name the control plane or a process's secrets."""
        for word in words:
            trouble = word_trouble(word, self.places, self.bases)
            if trouble is not None:
                self.add("protected" if trouble.protected else "unmodelled", part, trouble.reason)
                return

    def chdir(self, part: str, name: str, args: list[Word]) -> None:
        targets = [a for a in args if not (a.literal or "x").startswith("-")]
        if name == "popd" or (args and args[0].literal == "-"):
            self.add("unmodelled", part, f"`{name}` to a folder the judge cannot tell")
        elif not targets:
            if self.rules.home not in self.bases:
                self.bases.append(self.rules.home)
        else:
            self.add_base(part, targets[0])

    def add_base(self, part: str, folder: Word) -> None:
        spots = absolute(folder.pattern, self.rules.home, self.bases) if folder.pattern else None
        if spots is None or any(not is_literal(s.lstrip("~")) for s in spots):
            self.add("unmodelled", part, f"`{folder.source}`: a folder the judge cannot tell")
            return
        for spot in spots:
            base = normal_path(unescape(spot))
            if base not in self.bases:
                self.bases.append(base)

    def redirect(self, redirect: Redirect, depth: int) -> None:
        target = redirect.target
        for sub in target.subs if target is not None else ():
            self.script(sub, depth + 1)
        if redirect.op in ("<<", "<<-", "<<<", ">&-", "<&-"):
            return
        value = target.literal if target is not None else None
        if redirect.op in (">&", "<&") and (
            target is None or (value is not None and (value.isdigit() or value == "-"))
        ):
            return  # a file descriptor duplicated or closed: no file
        tool = "Read" if redirect.op == "<" else "Write"
        pattern = target.pattern if target is not None else None
        spots = absolute(pattern, self.rules.home, self.bases) if pattern else None
        if spots is None or any(has_glob(s) or not is_literal(s) for s in spots):
            source = target.source if target is not None else redirect.source
            reason = f"the redirection target `{source}` is only known at run time"
            self.add("unmodelled", redirect.source, reason)
            return
        for spot in spots:
            path = normal_path(unescape(spot))
            if str(path) in (_DEV_READ if tool == "Read" else _DEV_WRITE):
                continue
            found = self.rules.judge_path(tool, path)
            if found.kind == "uncovered" and any(r.covers_everything for r in self.rules.allow):
                rule = next(r for r in self.rules.allow if r.covers_everything)
                found = Finding("allow", redirect.source, f"allowed by {rule.text}", rule.text)
            self.add(found.kind, redirect.source, found.reason, found.rule)


def _assignment_word(source: str, name: str, value: Word) -> Word:
    pattern = None if value.pattern is None else escape(name + "=") + value.pattern
    return Word(source, pattern, value.subs)
