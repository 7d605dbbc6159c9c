"""Where a literal shell command may read or write: every path its words and redirections
may name, judged for the shell judge (`shelljudge.py`). Pure.

- Every argument of a program that may read files is judged as a `Read` of that path: a
  path deny rule, a secret-looking name or a private folder denies, the control plane or
  `/proc` asks; a glob asks when what it may match could reach one of those.
- A program that walks folders (`rg`, `find`, `grep -r`) asks when a denied or private
  folder lies inside the one it walks.
- A redirection is judged as a `Write` (or `Read`) of its literal target; `/dev/tcp`
  and `/proc` ask.
- Relative paths are tried against the workdir and every folder a `cd` in the line names;
  `..` after a folder that may be a system link asks (the kernel follows the link first).
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Protocol

from dispatch_matrix.core.paths import within_any_case
from dispatch_matrix.permissions.shellfindings import Kind, ShellRules
from dispatch_matrix.permissions.shelloptions import words
from dispatch_matrix.permissions.shellread import Redirect, Word

# Programs that walk folders, always or when an option says so.
_WALKERS = words("rg find du tree")
_MAY_WALK = words("grep egrep fgrep ls diff")
_PATTERN_FIRST = words("rg grep egrep fgrep")
# Programs that read only names and metadata: a glob may match a secret's name.
_NAMES_ONLY = frozenset({"ls", "du", "stat", "echo"})
# Past this many letters an option cluster asks, and past this many in a line (each tail
# is judged as a path, ~0.5 ms each: 1000 cost about half a second).
_MAX_CLUSTER = 64
_MAX_TAILS = 1000
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_DEV = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/stdin", "/dev/zero"})

# Also what the policy says of a write there: one wording for both.
CONTROL_PLANE = (
    "{subject} is part of the bot's control plane (its config, state, service units or "
    "shell start-up files); changes there always need your approval"
)


class FindingSink(Protocol):
    """Where the path checks put a finding: the judge's list."""

    def __call__(self, kind: Kind, part: str, reason: str, rule: str | None = None) -> None:
        """Record one finding about `part`."""


class Paths:
    """The paths one literal line may touch, judged part by part; tracks the folders
    relative paths mean (the workdir, then each folder a `cd` names). Each finding goes to
    `add` (kind, part, reason, rule)."""

    def __init__(self, rules: ShellRules, add: FindingSink) -> None:
        self.rules = rules
        self.add = add
        self.bases = [rules.workdir]
        # The program of the command being judged (a glob may name secrets unless it only
        # lists names).
        self.program = ""
        # Option-cluster tails judged so far in the line (see `_MAX_TAILS`).
        self.tails = 0

    def argument(self, part: str, word: Word) -> None:
        """Judge each path a word may name as a Read: deny, or ask for the control plane."""
        value = word.value
        candidates = [value]
        if value.startswith("--"):
            candidates = [value.partition("=")[2]]
        elif value.startswith("-"):
            candidates = attached_values(value)
            self.tails += len(candidates)
            if len(candidates) > _MAX_CLUSTER or self.tails > _MAX_TAILS:
                reason = f"`{value[:40]}…`: too many option letters to judge"
                self.add("unmodelled", part, reason)
                return
            if "=" in value:
                candidates.append(value.partition("=")[2])
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
        """What reading `path` (a glob when `glob`) would meet: a finding's kind, reason
        and rule, or None when nothing stands in the way."""
        rules = self.rules
        # `x*/..` normalised away leaves a literal path, judged as one.
        glob = glob and any("*" in p or "?" in p for p in path.parts)
        base, pattern = split_glob(path) if glob else (path, "")
        if base.parts[:2] == ("/", "proc") or _inherited_fd(base):
            return ("unmodelled", f"{path} may expose a process's environment or memory", None)
        if base.parts[1:2] in (("inet",), ("inet4",), ("inet6",)):
            # gawk opens these names as network connections, data files included.
            return ("unmodelled", f"{path} opens a network connection in gawk", None)
        if not glob:
            found = rules.judge_path("Read", path)
            if found.kind == "deny":
                return ("deny", found.reason, found.rule)
        if any(
            within_any_case(base, p) or (glob and glob_reaches(path, p)) for p in rules.protected
        ):
            return ("protected", CONTROL_PLANE.format(subject=path), None)
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
        """The absolute paths a word may name: from the home folder (`~`), as written, or
        under each folder a relative path may mean."""
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
        """A `cd`: its folder is one more that later relative paths may mean."""
        if not args:
            self.bases.append(self.rules.home)
        elif len(args) > 1 or args[0].value.startswith("-") or args[0].glob:
            self.add("unmodelled", part, f"`{part}`: a folder the judge cannot tell")
        else:
            self.bases += self.places(args[0].value, args[0].tilde)

    def redirect(self, redirect: Redirect) -> None:
        """A redirection judged as a `Write` (or `Read`) of its literal target."""
        target = redirect.target
        if redirect.op in (">&", "<&") and (target.value.isdigit() or target.value == "-"):
            if target.value.isdigit() and int(target.value) > 2:
                # As /dev/fd/3: a descriptor the line did not open, one the daemon may
                # have left open (`cat <&3`).
                reason = f"`{redirect.text}` uses a descriptor the line did not open"
                self.add("unmodelled", redirect.text, reason)
            return  # a file descriptor duplicated or closed: no file
        if target.glob:
            self.add("unmodelled", redirect.text, f"`{target.raw}` is only known at run time")
            return
        tool = "Read" if redirect.op in ("<", "<&") else "Write"
        for path in self.places(target.value, target.tilde):
            if str(path) in _DEV:
                continue
            if path.parts[:2] == ("/", "proc") or _inherited_fd(path):
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
                self.add("allow", redirect.text, f"allowed by {rule.text}", rule.text)
            else:
                self.add(found.kind, redirect.text, found.reason, found.rule)


def attached_values(word: str) -> list[str]:
    """What a short option cluster may carry as an attached value, a path maybe: the
    value starts after any of its leading letters (`-tvf.env`: `.env` after `f`,
    `-rf/home/u/x`: `/home/u/x`), so every such tail is one."""
    letters = len(word) - len(word[1:].lstrip(_LETTERS)) if len(word) > 1 else 1
    return [word[k:] for k in range(2, max(letters, 1) + 1) if word[k:]]


def _inherited_fd(path: PurePosixPath) -> bool:
    # /dev/fd is /proc/self/fd: past stdin, stdout and stderr, a descriptor the daemon may
    # have left open.
    parts = path.parts
    return parts[:3] == ("/", "dev", "fd") and len(parts) > 3 and parts[3] not in ("0", "1", "2")


def recursive(name: str, words: Sequence[Word]) -> bool:
    """Whether a command walks folders: rg, find, du, tree always; grep, ls, diff when an
    option says so (`-r`, `-R`, `--recursive`, `-d recurse`)."""
    if name in _WALKERS:
        return True
    options = [w.value for w in words[1:] if w.value.startswith("-")]
    return name in _MAY_WALK and any(
        re.fullmatch(r"-[A-Za-z0-9]*[rRd][A-Za-z0-9]*", o) or _walk_option(o) for o in options
    )


def _walk_option(word: str) -> bool:
    # GNU programs take any unambiguous prefix of a long option: `grep --rec` and
    # `ls --recur` walk, `grep --dir=recurse` too. Any prefix counts, ambiguous or not.
    name = word.partition("=")[0]
    return len(name) >= 3 and any(
        w.startswith(name) for w in ("--recursive", "--dereference-recursive", "--directories")
    )


def split_glob(path: PurePosixPath) -> tuple[PurePosixPath, str]:
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
