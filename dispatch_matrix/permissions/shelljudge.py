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
- **Options are an allowlist per program** (`shelloptions.py`): what a wildcard rule does
  not spell must be known to be inert.
- **Paths.** Every argument of a program that may read files is judged as a `Read` of that
  path: a path deny rule, a secret-looking name or a private folder denies, the control
  plane or `/proc` asks; a glob asks when what it may match could reach one of those; a
  program that walks folders (`rg`, `find`, `grep -r`) asks when a denied or private
  folder lies inside the one it walks. Relative paths are tried against the workdir and
  every folder a `cd` in the line names.

A line too long, or with too many or too long words, asks. Any exception inside the
judge becomes a question, never an allow and never a crash.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Literal

from dispatch_matrix.permissions.rules import Rule, collapse_blanks
from dispatch_matrix.permissions.shelloptions import check, words
from dispatch_matrix.permissions.shellread import (
    NotLiteral,
    Redirect,
    Simple,
    Word,
    cross_check,
    simple_commands,
)

if TYPE_CHECKING:
    pass

Kind = Literal["allow", "deny", "ask-rule", "protected", "unmodelled", "uncovered"]
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
# Programs that walk folders, always or when an option says so.
_WALKERS = words("rg find du tree")
_MAY_WALK = words("grep egrep fgrep ls diff")
_PATTERN_FIRST = words("rg grep egrep fgrep")
# Programs that read only names and metadata: a glob may match a secret's name.
_NAMES_ONLY = frozenset({"ls", "du", "stat", "echo"})
_DEV = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/stdin", "/dev/zero"})


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
    """What the judge needs from the policy: Bash rules, places and path judges."""

    allow: tuple[Rule, ...]
    ask: tuple[Rule, ...]
    deny: tuple[Rule, ...]
    home: PurePosixPath
    workdir: PurePosixPath
    protected: tuple[PurePosixPath, ...]
    # Judges `Read`/`Write` of one absolute path with the path rules and the control plane.
    judge_path: Callable[[str, PurePosixPath], Finding]
    # What a glob may match that reading tools may not (a denied or private path).
    reaches_denied: Callable[[PurePosixPath], str | None] = lambda _: None
    # A denied or private folder inside a folder (for programs that walk folders).
    denied_inside: Callable[[PurePosixPath], str | None] = lambda _: None
    secret_globs: tuple[str, ...] = ()


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
        self.bases = [rules.workdir]
        self.program = ""

    def add(self, kind: Kind, part: str, reason: str, rule: str | None = None) -> None:
        self.findings.append(Finding(kind, part, reason, rule))

    def command(self, simple: Simple) -> None:
        part = " ".join(w.raw for w in simple.words)
        for redirect in simple.redirects:
            self.redirect(redirect)
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
        self.program = first.value
        for word in words[1:]:
            if word.glob or name not in _PURE_OUTPUT:
                self.argument(part, word)
        if _recursive(name, words):
            self.recursion(part, words)
        if first.value == "cd":
            self.chdir(part, words[1:])
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
                (r for r in listed if r.matches_command(text) or r.matches_command(base)), None
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

    def argument(self, part: str, word: Word) -> None:
        """Judge each path a word may name as a Read: deny, or ask for the control plane."""
        value = word.value
        candidates = [value]
        if value.startswith("-"):
            attached = value[2:] if "/" in value else ""
            candidates = [value.partition("=")[2] if "=" in value else attached]
        if ":" in value:
            candidates.append(value.rpartition(":")[2])
        for candidate in filter(None, candidates):
            for path in self.places(candidate, word.tilde):
                found = self.read(path, word.glob)
                if found is not None:
                    kind, reason, rule = found
                    self.add(kind, part, reason, rule)
                    return

    def read(self, path: PurePosixPath, glob: bool) -> tuple[Kind, str, str | None] | None:
        rules = self.rules
        # `x*/..` normalised away leaves a literal path, judged as one.
        glob = glob and any("*" in p or "?" in p for p in path.parts)
        base, pattern = _split_glob(path) if glob else (path, "")
        if base.parts[:2] == ("/", "proc"):
            return ("unmodelled", f"{path} may expose a process's environment or memory", None)
        if not glob:
            found = rules.judge_path("Read", path)
            if found.kind == "deny":
                return ("deny", found.reason, found.rule)
        if any(_within(base, p) or (glob and glob_reaches(path, p)) for p in rules.protected):
            return ("protected", _CONTROL_PLANE.format(subject=path), None)
        if glob:
            denied = rules.reaches_denied(path)
            if denied is not None:
                return ("unmodelled", f"`{path}` may match {denied}", None)
            names_only = posixpath.basename(self.program) in _NAMES_ONLY
            if not names_only and may_name_secret(pattern, rules.secret_globs):
                return ("unmodelled", f"`{path}` may match a file that looks like a secret", None)
        return None

    def recursion(self, part: str, words: list[Word]) -> None:
        """A program that walks folders (its operands, or the working folder) may read
        what a deny rule or a private folder inside them holds: it asks."""
        operands = [w for w in words[1:] if not w.value.startswith("-") and not w.glob]
        # With no folder named, the working folder is walked (rg and grep: after a pattern).
        alone = len(operands) <= (1 if posixpath.basename(words[0].value) in _PATTERN_FIRST else 0)
        folders = list(self.bases) if alone else []
        for word in operands:
            folders += self.places(word.value, word.tilde)
        for folder in folders:
            inside = self.rules.denied_inside(folder)
            if inside is not None:
                self.add("unmodelled", part, f"`{part}` walks {folder}, which holds {inside}")
                return

    def places(self, text: str, tilde: bool) -> list[PurePosixPath]:
        if tilde and (text == "~" or text.startswith("~/")):
            spelled = [str(self.rules.home) + text[1:]]
        elif text.startswith("/"):
            spelled = [text]
        else:
            spelled = [f"{b}/{text}" for b in self.bases]
        for path in spelled:
            if _dotdot_after_link(path, (self.rules.home, self.rules.workdir)):
                reason = f"`{text}` goes up (`..`) from a folder that may be a link, as /dev/fd is"
                self.add("unmodelled", text, reason)
        return [normal_path(p) for p in spelled]

    def chdir(self, part: str, args: list[Word]) -> None:
        if not args:
            self.bases.append(self.rules.home)
        elif len(args) > 1 or args[0].value.startswith("-") or args[0].glob:
            self.add("unmodelled", part, f"`{part}`: a folder the judge cannot tell")
        else:
            self.bases += self.places(args[0].value, args[0].tilde)

    def redirect(self, redirect: Redirect) -> None:
        target = redirect.target
        if redirect.op in (">&", "<&") and (target.value.isdigit() or target.value == "-"):
            return  # a file descriptor duplicated or closed: no file
        if target.glob:
            self.add("unmodelled", redirect.text, f"`{target.raw}` is only known at run time")
            return
        tool = "Read" if redirect.op in ("<", "<&") else "Write"
        for path in self.places(target.value, target.tilde):
            if str(path) in _DEV:
                continue
            if path.parts[:2] == ("/", "proc"):
                reason = f"{path} may expose a process's environment or memory"
                self.add("unmodelled", redirect.text, reason)
                continue
            if path.parts[:3] in (("/", "dev", "tcp"), ("/", "dev", "udp")):
                # bash opens a network connection for these names itself (no file exists).
                self.add("unmodelled", redirect.text, f"{path} opens a network connection")
                continue
            found = self.rules.judge_path(tool, path)
            if found.kind == "uncovered" and any(r.covers_everything for r in self.rules.allow):
                rule = next(r for r in self.rules.allow if r.covers_everything)
                found = Finding("allow", redirect.text, f"allowed by {rule.text}", rule.text)
            self.add(found.kind, redirect.text, found.reason, found.rule)


_CONTROL_PLANE = (
    "{subject} is part of the bot's control plane (its config, state, service units or "
    "shell start-up files); changes there always need your approval"
)


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


def _recursive(name: str, words: Sequence[Word]) -> bool:
    """Whether a command walks folders: rg, find, du, tree always; grep, ls, diff when an
    option says so (`-r`, `-R`, `--recursive`, `-d recurse`)."""
    if name in _WALKERS:
        return True
    options = [w.value for w in words[1:] if w.value.startswith("-")]
    return name in _MAY_WALK and any(
        re.fullmatch(r"-[A-Za-z0-9]*[rRd][A-Za-z0-9]*|--(recursive|dereference-recursive)", o)
        or o.startswith("--directories")
        for o in options
    )


def _spelled(rule: Rule, words: Sequence[Word]) -> int:
    """How many leading words of the command the rule spells literally."""
    spec = (rule.spec or "").removesuffix(":*").split(" ")
    count = 0
    for written, word in zip(spec, words, strict=False):
        if "*" in written or written != word.canonical:
            break
        count += 1
    return count


def _split_glob(path: PurePosixPath) -> tuple[PurePosixPath, str]:
    """The literal folder a glob starts from, and the pattern's last segment."""
    parts = path.parts
    index = next((i for i, p in enumerate(parts) if "*" in p or "?" in p), len(parts))
    return PurePosixPath(*parts[:index]), parts[-1]


def may_name_secret(pattern: str, secret_globs: Sequence[str]) -> bool:
    """Whether a glob's last segment may match a secret-looking name (tried on a few
    names each secret glob matches)."""
    if "/" in pattern:
        return True
    samples = [
        s.replace("*", filler).replace("?", "x")
        for s in secret_globs
        for filler in ("", "x", ".x", "-x", ".pub", "_x")
    ]
    # A glob matches a leading dot only when it spells one; a `[` here was quoted.
    return any(
        fnmatch.fnmatchcase(sample, pattern.replace("[", "[[]"))
        for sample in samples
        if pattern.startswith(".") or not sample.startswith(".")
    )


def glob_reaches(glob: PurePosixPath, target: PurePosixPath) -> bool:
    """Whether a glob (`*`, `?` within segments) may match `target` or a path inside it;
    folders above `target` are left to the OS sandbox."""
    pattern, parts = glob.parts, target.parts
    return len(pattern) >= len(parts) and all(
        # A `[` here was quoted (the lexer refuses a bare one): literal, not a class.
        fnmatch.fnmatchcase(name, segment.replace("[", "[[]"))
        and (segment.startswith(".") or not name.startswith(".") or name == segment)
        for name, segment in zip(parts, pattern, strict=False)
    )


def _within(path: PurePosixPath, folder: PurePosixPath) -> bool:
    return path == folder or folder in path.parents


def _dotdot_after_link(path: str, trusted: tuple[PurePosixPath, ...]) -> bool:
    """Whether `path` goes up (`..`) from a folder outside the home and the workdir, where
    a system link may be: the kernel follows a link before `..`, so `/dev/fd/../environ` is
    /proc/self/environ and `/var/run/../proc` is /proc, where lexical normalising sees
    /dev/environ and /var/proc."""
    parts = path.split("/")
    if ".." not in parts:
        return False
    before = normal_path("/".join(parts[: parts.index("..")]) or "/")
    return not any(_within(before, t) for t in trusted)


def normal_path(text: str) -> PurePosixPath:
    """`text` normalised lexically, with a leading `//` read as `/` (as Linux does; POSIX
    would let `os.path.normpath` keep it, and `//home/u` would then escape every check)."""
    normal = os.path.normpath(text)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    return PurePosixPath(normal)
