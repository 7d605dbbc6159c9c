"""The shell judge: every part of a command line allowed, asked about or denied. Pure.

Fail closed by construction: the judge does not model bash, it recognises a small literal
subset and asks about everything else.

- **Literal words only.** A line can be allowed only if it is made of simple commands
  joined by `&&`, `||`, `;`, `|` and newlines, whose words are plain characters, '…'
  strings, "…" strings without `$` or backquotes, and `\\x` escapes; `*` and `?` globs
  only where a program's table says its operands are files it reads (`shelloptions.py`);
  redirections only to or from a literal path (judged as `Write(path)` / `Read(path)`)
  or a file descriptor. Any expansion (`$X`, `~user`, `{a,b}`, `$(…)`, backquotes,
  arithmetic, `$'…'`), assignment, here-document, subshell, group, function, loop, `&`,
  bracket glob, odd or invisible character, or anything the lexer below does not know asks.
  tree-sitter-bash is a second opinion on the structure: a line it reads with any node
  outside a short whitelist, or with another number of commands, asks.
- **Deny and ask rules see through everything.** They are matched against every word-ish
  token of the raw text (split at every shell metacharacter and quote, with and without
  the quotes removed, paths cut to their base name), so a denied program named inside a
  substitution, a quoted expansion, `bash -c`, `xargs` or a wrapper is denied. This may
  deny too much (`grep rm notes` under `Bash(rm:*)`); it never misses a spelled name.
  On a literal command a rule's words also match in order with others between them
  (`make -s deploy` under `Bash(make deploy:*)`).
- **Options are an allowlist per program** (`shelloptions.py`): what a wildcard rule does
  not spell must be known to be inert.
- **Paths** (`shellpaths.py`). Every argument of a program that may read files is judged
  as a `Read` of that path: a path deny rule, a secret-looking name or a private folder
  denies, the control plane or `/proc` asks; a glob asks when what it may match could
  reach one of those; a program that walks folders (`rg`, `find`, `grep -r`) asks when a
  denied or private folder lies inside the one it walks. Relative paths are tried against
  the workdir and every folder a `cd` in the line names.

A line too long, or with too many or too long words, asks. Any exception inside the
judge becomes a question, never an allow and never a crash.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator, Sequence

from dispatch_matrix.permissions.rules import Rule, collapse_blanks
from dispatch_matrix.permissions.shellfindings import Finding, Kind, ShellRules
from dispatch_matrix.permissions.shelloptions import check, words
from dispatch_matrix.permissions.shellpaths import Paths, recursive
from dispatch_matrix.permissions.shellread import (
    NotLiteral,
    Simple,
    Word,
    cross_check,
    simple_commands,
)

MAX_LENGTH = 100_000
_RESERVED = words("if then else elif fi case esac for select while until do done in function")

_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\+?=|\[)")
# Programs that only print their arguments: their words are not paths they read.
_PURE_OUTPUT = frozenset({"echo", "printf", "true", "false", "which", "pwd", "date"})
# Builtins that change the shell itself or run text as commands: never covered by a rule.
# And programs that run as another user.
_UNJUDGED = words("""eval source . exec builtin command trap alias unalias export declare typeset
local readonly unset shopt set enable hash let mapfile readarray read ulimit umask coproc sudo
doas su runuser pkexec""")


def judge(command: str, rules: ShellRules) -> tuple[Finding, ...]:
    """Every finding about one command line, in order. Never raises: what the judge cannot
    read is a question."""
    line = command.strip()
    try:
        return _judge(line, rules)
    except Exception:  # noqa: BLE001 - fail closed: any internal error is a question
        return (Finding("unmodelled", line, "the judge could not read this line"),)


def _judge(line: str, rules: ShellRules) -> tuple[Finding, ...]:
    findings = list(_restricted(line, rules))
    try:
        if len(line) > MAX_LENGTH:
            raise NotLiteral(line[:80] + "…", "the line is too long to judge")
        commands = simple_commands(line)
        cross_check(line, len(commands))
    except NotLiteral as err:
        reason = f"{err.reason} (`{err.piece}`); only literal words can be allowed"
        return (*findings, Finding("unmodelled", err.piece, reason))
    walker = _Walker(rules)
    for simple in commands:
        walker.command(simple)
    # A rule the walk matched names its command; the raw scan stays when it saw more.
    named = {f.kind for f in walker.findings}
    findings = [f for f in findings if f.kind not in named] + walker.findings
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


# --- Deny and ask rules: every token of the raw text ---------------------------------

_SPLIT = re.compile(r"[\s;&|()<>`'\"$\\{}=,:!]+")
_SPLIT_UNQUOTED = re.compile(r"[\s;&|()<>`${}=,:!]+")


def _restricted(line: str, rules: ShellRules) -> Iterator[Finding]:
    """Deny, then ask, rules matched anywhere in the line (fail toward deny)."""
    sequences = [
        [t for t in _SPLIT.split(line) if t],
        [t for t in _SPLIT_UNQUOTED.split(re.sub(r"['\"\\]", "", line)) if t],
    ]
    restrictive: tuple[tuple[Kind, tuple[Rule, ...]], ...] = (
        ("deny", rules.deny),
        ("ask-rule", rules.ask),
    )
    for kind, listed in restrictive:
        for rule in listed:
            hit = _scan(rule, sequences, line)
            if hit is not None:
                verb = "deny" if kind == "deny" else "ask"
                yield Finding(kind, line, f"`{hit}` matches {verb} rule {rule.text}", rule.text)
                return


def _scan(rule: Rule, sequences: list[list[str]], line: str) -> str | None:
    if rule.matches_command(collapse_blanks(line)):
        return line
    first = (rule.spec or "*").removesuffix(":*").split(" ")[0]
    for tokens in sequences:
        for i, token in enumerate(tokens):
            # `${x:-rm}` names rm too: operator characters cut off the front.
            base = posixpath.basename(token.rstrip("/")).lstrip("-+?=%#@~^") or token
            if not any(_fits(first, t) for t in (token, base)):
                continue
            rest = tokens[i + 1 :]
            # A rule may spell the program by its path (`Bash(/usr/bin/curl:*)`).
            names = {token, base} | ({first} if "*" not in first else set())
            for end in [*range(min(len(rest), 24) + 1), len(rest)]:
                for name in names:
                    candidate = " ".join([name, *rest[:end]])
                    if rule.matches_command(candidate):
                        return candidate
    return None


def _fits(pattern: str, token: str) -> bool:
    if "*" not in pattern:
        return pattern == token or posixpath.basename(pattern) == token
    regex = ".*".join(re.escape(p) for p in pattern.split("*"))
    return re.fullmatch(regex, token) is not None


# --- Judging literal commands -----------------------------------------------------------


class _Walker:
    """Collects findings over one literal line; tracks the folders relative paths mean."""

    def __init__(self, rules: ShellRules) -> None:
        self.rules = rules
        self.findings: list[Finding] = []
        self.paths = Paths(rules, self.add)

    def add(self, kind: Kind, part: str, reason: str, rule: str | None = None) -> None:
        self.findings.append(Finding(kind, part, reason, rule))

    def command(self, simple: Simple) -> None:
        part = " ".join(w.raw for w in simple.words)
        for redirect in simple.redirects:
            self.paths.redirect(redirect)
        words = _unwrap(simple.words)
        if words is None:
            self.add(
                "unmodelled", part, f"`{part}`: a wrapper with options the judge does not know"
            )
            return
        first = words[0]
        if first.raw in _RESERVED or _ASSIGNMENT.match(first.raw) or first.raw == "time":
            self.add("unmodelled", part, f"`{first.raw}`: a keyword or assignment")
            return
        if first.glob:
            self.add("unmodelled", part, f"the program name `{first.raw}` is a pattern")
            return
        name = posixpath.basename(first.value)
        if name in _UNJUDGED:
            reason = f"`{name}` changes the shell or runs text as commands"
            self.add("unmodelled", part, reason)
            return
        if self.restricted(part, words):
            return
        self.paths.program = first.value
        for word in words[1:]:
            if word.glob or name not in _PURE_OUTPUT:
                self.paths.argument(part, word)
        if recursive(name, words):
            self.paths.recursion(part, words)
        # pushd changes the folder as cd does; popd returns to one the line already named.
        if first.value in ("cd", "pushd"):
            self.paths.chdir(part, words[1:])
        self.cover(part, words)

    def restricted(self, part: str, words: list[Word]) -> bool:
        """Deny, then ask, rules against the command as spelled and by its base name."""
        text = " ".join(w.canonical for w in words)
        base = " ".join([posixpath.basename(words[0].value), *(w.canonical for w in words[1:])])
        restrictive: tuple[tuple[Kind, tuple[Rule, ...]], ...] = (
            ("deny", self.rules.deny),
            ("ask-rule", self.rules.ask),
        )
        for kind, listed in restrictive:
            rule = next(
                (
                    r
                    for r in listed
                    if r.matches_command(text) or r.matches_command(base) or _in_order(r, words)
                ),
                None,
            )
            if rule is not None:
                verb = "deny" if kind == "deny" else "ask"
                self.add(kind, part, f"`{part}` matches {verb} rule {rule.text}", rule.text)
                return True
        return False

    def cover(self, part: str, words: list[Word]) -> None:
        """An allow finding when a rule covers the command and its options are inert."""
        text = " ".join(w.canonical for w in words)
        refused: tuple[Rule, str] | None = None
        for rule in self.rules.allow:
            if not rule.matches_command(text):
                continue
            if rule.covers_everything or rule.exact:
                self.add("allow", part, f"allowed by {rule.text}", rule.text)
                return
            named = frozenset(
                w.partition("=")[0]
                for w in (rule.spec or "").removesuffix(":*").split(" ")
                if w.startswith("-")
            )
            # Tables see what bash passes: a leading `~` is the home folder (`sed -n ~`).
            args = [
                (str(self.rules.home) + w.value[1:] if w.tilde else w.value, w.glob) for w in words
            ]
            problem = check(args, _spelled(rule, words), named)
            if problem is None:
                self.add("allow", part, f"allowed by {rule.text}", rule.text)
                return
            refused = refused or (rule, problem)
        if refused is not None:
            reason = f"`{part}`: {refused[1]}; {refused[0].text} does not spell it out"
            self.add("uncovered", part, reason)
        else:
            self.add("uncovered", part, f"no allow rule covers `{part}`")


def _in_order(rule: Rule, words: list[Word]) -> bool:
    """Whether a deny or ask rule's words all appear in the command, in order, the program
    first: an option or another operand between them (`make -s deploy`, `npm run -- deploy`,
    `make build deploy` under `Bash(make deploy:*)`) hides nothing. Fails toward the rule:
    `npm run build -- deploy` is held too. Rules with a wildcard or a quote inside keep to
    their pattern alone."""
    spec = (rule.spec or "").removesuffix(":*").removesuffix(" *").strip()
    parts = spec.split(" ")
    if not spec or any(c in spec for c in "*'\"\\"):
        return False
    program = words[0].value
    if parts[0] not in (program, words[0].canonical) and posixpath.basename(
        parts[0]
    ) != posixpath.basename(program):
        return False
    # GNU make drops a leading `./` from a target (`make ./deploy` is `make deploy`): a
    # word is also compared in its normal form.
    rest = iter(
        (w.canonical, w.value if w.value.startswith("-") else posixpath.normpath(w.value))
        for w in words[1:]
    )
    return all(any(part in forms for forms in rest) for part in parts[1:])


def _unwrap(words: list[Word]) -> list[Word] | None:
    """The command inside `time [-p]`, `nice [-n N]` and `timeout DURATION` (None when
    a wrapper has options the judge does not know)."""
    while words:
        name = words[0].raw
        if name == "time":
            words = words[2:] if len(words) > 1 and words[1].raw == "-p" else words[1:]
        elif name == "nice":
            words = words[3:] if len(words) > 2 and words[1].raw == "-n" else words[1:]
        elif name == "timeout" and len(words) > 1:
            if not re.fullmatch(r"\d+(?:\.\d+)?[smhd]?", words[1].raw):
                return None
            words = words[2:]
        else:
            return words
        if words and words[0].raw.startswith("-"):
            return None
    return None


def _spelled(rule: Rule, words: Sequence[Word]) -> int:
    """How many leading words of the command the rule spells literally."""
    spec = (rule.spec or "").removesuffix(":*").split(" ")
    count = 0
    for written, word in zip(spec, words, strict=False):
        if "*" in written or written != word.canonical:
            break
        count += 1
    return count
