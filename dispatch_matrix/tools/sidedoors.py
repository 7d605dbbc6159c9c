"""Options that turn a reading command into a writer or a runner ("side doors"). Pure.

`side_doors(program, args)` lists the arguments of one command that write files, run other
programs or read their instructions from somewhere the judge cannot see. The judge lets an
allow rule cover such a command only when the rule names the door (`Bash(sed -i:*)` covers
`sed -i s/a/b/ f`; `Bash(sed:*)` does not), so a broad rule for a command does not open its
side doors. What is covered, by program:

- git: global options other than a few harmless ones (`-c`, `--exec-path`, `--git-dir`,
  `--work-tree`, `--config-env`, `-p`…), every subcommand outside a small read-only set
  (`commit`, `checkout`, `push`, `config`, aliases…: they run hooks, reach the network or
  change state), and `--output`, `--ext-diff`, `--open-files-in-pager`/`-O`, `--upload-pack`.
  Not covered, and not coverable by any parser: a repository's own `.git/config` can name
  programs that even `git status` runs (`core.fsmonitor`, `core.pager`, diff drivers,
  hooks). The OS sandbox is the wall for that; these rules only keep the model from writing
  such config through git itself.
- sort (`--compress-program`, `-o`, `-T`, `--files0-from`), find (`-exec*`, `-ok*`,
  `-delete`, `-fprint*`, `-fls`, `-files0-from`), sed (`-i`, `-f`, and any script that is
  not a plain literal made only of commands that neither write nor run: `w`, `W`, `r`,
  `R`, `e` and the `s///e`/`s///w` flags are doors), awk (`-f`, unknown options, programs
  with `system`, `|`, `>`, `getline` or `@`), tar (`--to-command`, `--use-compress-program`,
  `-I`, `-F`, `--checkpoint-action`, …), rsync (`-e`, `--rsh`, `--rsync-path`, `-M`, …), rg
  (`--pre`), zip (`-TT`), wc/du (`--files0-from`), printf `-v`, `test -v` and arithmetic
  tests, uniq/xxd with an output file, `tree -o`, and pagers and editors (`less`, `more`,
  `man`, `vim`, …: each can run a shell; `less +cmd`, `man -P` too).
- For these programs a glob argument that starts with a wildcard is a door too: a file named
  `--output=x` in the folder would become an option.

Long options are matched by prefix, as GNU tools accept abbreviations (`--compress-p`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .scriptdoors import awk, sed
from .shellmodel import SideDoor, Word
from .shellwords import has_glob, long_option

_RUNS = "runs another program"
_WRITES = "writes a file"
_HIDDEN = "reads instructions from a file the judge does not see"
_UNKNOWN = "is an option the judge does not know"

_GIT_READ_ONLY = frozenset(
    {
        "status",
        "diff",
        "log",
        "show",
        "blame",
        "annotate",
        "rev-parse",
        "ls-files",
        "ls-tree",
        "cat-file",
        "shortlog",
        "describe",
        "grep",
        "rev-list",
        "merge-base",
        "name-rev",
        "show-ref",
        "for-each-ref",
        "count-objects",
        "whatchanged",
        "version",
        "show-branch",
        "diff-tree",
        "diff-files",
        "diff-index",
        "check-ignore",
        "check-attr",
        "range-diff",
        "cherry",
        "reflog",
    }
)
_GIT_SAFE_GLOBAL = frozenset(
    {
        "--no-pager",
        "-P",
        "--no-replace-objects",
        "--literal-pathspecs",
        "--glob-pathspecs",
        "--noglob-pathspecs",
        "--icase-pathspecs",
        "--no-optional-locks",
        "--no-advice",
        "--bare",
        "--version",
    }
)
_GIT_GLOBAL_VALUE = frozenset({"-c", "--config-env", "--git-dir", "--work-tree", "--namespace"})
_GIT_GLOBAL = {
    "-c": "sets configuration, which can name programs for git to run",
    "--config-env": "sets configuration, which can name programs for git to run",
    "--exec-path": "chooses the programs git runs",
    "--git-dir": "points git at another repository and its configuration",
    "--work-tree": "points git at another work tree",
    "-p": "runs a pager",
    "--paginate": "runs a pager",
    "--help": "opens a pager or a browser",
}
_GIT_LONG = {
    "--output": _WRITES,
    "--output-directory": _WRITES,
    "--ext-diff": "runs the configured external diff program",
    "--open-files-in-pager": _RUNS,
    "--upload-pack": _RUNS,
    "--receive-pack": _RUNS,
    "--exec": _RUNS,
}
_BRANCH_WRITES = frozenset("dDmMcCfut")
_SORT_LONG = {
    "--compress-program": _RUNS,
    "--output": _WRITES,
    "--temporary-directory": _WRITES,
    "--files0-from": _HIDDEN,
}
_FIND = {
    "-exec": _RUNS,
    "-execdir": _RUNS,
    "-ok": _RUNS,
    "-okdir": _RUNS,
    "-delete": "deletes files",
    "-fprint": _WRITES,
    "-fprint0": _WRITES,
    "-fprintf": _WRITES,
    "-fls": _WRITES,
    "-files0-from": _HIDDEN,
}
_TAR_LONG = {
    "--to-command": _RUNS,
    "--use-compress-program": _RUNS,
    "--checkpoint-action": _RUNS,
    "--info-script": _RUNS,
    "--new-volume-script": _RUNS,
    "--rsh-command": _RUNS,
    "--rmt-command": _RUNS,
    "--index-file": _WRITES,
}
_RSYNC_LONG = {
    "--rsh": _RUNS,
    "--rsync-path": _RUNS,
    "--remote-option": _RUNS,
    "--log-file": _WRITES,
    "--write-batch": _WRITES,
    "--only-write-batch": _WRITES,
    "--read-batch": _HIDDEN,
    "--config": _HIDDEN,
    "--daemon": _RUNS,
}
RUNNERS = frozenset(
    {"less", "more", "most", "pg", "man", "info", "vi", "vim", "nvim", "view", "vimdiff"}
    | {"gvim", "emacs", "nano", "ed", "ex", "w3m", "lynx", "links", "elinks", "mutt"}
)
_TEST_RISKY = frozenset({"-v", "-eq", "-ne", "-lt", "-le", "-gt", "-ge"})


def side_doors(program: str, args: Sequence[Word]) -> tuple[SideDoor, ...]:
    """The side doors of `program` (a bare name) called with `args`."""
    texts = [_text(w) for w in args]
    doors: list[SideDoor] = []
    if program in RUNNERS:
        doors.append(SideDoor(program, program, "can run commands of its own (a shell escape)"))
    checker = _CHECKERS.get(program)
    if checker is None:
        return tuple(doors)
    doors.extend(checker(texts, list(args)))
    for word, text in zip(args, texts, strict=True):
        if text == "--":
            break
        pattern = word.pattern
        if pattern and has_glob(pattern) and pattern[0] in "*?[":
            reason = "matches file names, and a file named like an option would become one"
            doors.append(SideDoor(text, text, reason))
    return tuple(doors)


def has_checker(program: str) -> bool:
    """Whether `program` has side doors the judge looks for."""
    return program in _CHECKERS or program in RUNNERS


def find_exec_commands(args: Sequence[Word]) -> list[list[Word]]:
    """The commands `find … -exec … ;` (and -execdir, -ok, -okdir) would run."""
    commands: list[list[Word]] = []
    i = 0
    while i < len(args):
        if _text(args[i]) in ("-exec", "-execdir", "-ok", "-okdir"):
            end = next(
                (j for j in range(i + 1, len(args)) if _text(args[j]) in (";", "+")), len(args)
            )
            if end > i + 1:
                commands.append(list(args[i + 1 : end]))
            i = end
        i += 1
    return commands


def git_dirs(args: Sequence[Word]) -> list[Word]:
    """The folders `git -C DIR` changes into before running."""
    dirs: list[Word] = []
    for i, word in enumerate(args[:-1]):
        if _text(word) == "-C":
            dirs.append(args[i + 1])
    return dirs


def _text(word: Word) -> str:
    literal = word.literal
    return literal if literal is not None else word.source


def _git(args: list[str], _: list[Word]) -> list[SideDoor]:
    doors: list[SideDoor] = []
    i = 0
    while i < len(args) and args[i].startswith("-"):
        arg = args[i]
        key = arg.split("=", 1)[0]
        if arg == "-C":
            i += 2
            continue
        if arg not in _GIT_SAFE_GLOBAL:
            doors.append(SideDoor(key, arg, _GIT_GLOBAL.get(key, _UNKNOWN)))
            if key in _GIT_GLOBAL_VALUE and "=" not in arg:
                i += 1
        i += 1
    if i >= len(args):
        return doors
    sub, rest = args[i], args[i + 1 :]
    if not _git_read_only(sub, rest):
        reason = "can change the repository, reach the network or run hooks and programs"
        doors.append(SideDoor(sub, "", f"`git {sub}` {reason}"))
    for arg in rest:
        if arg == "--":
            break
        hit = long_option(arg, tuple(_GIT_LONG))
        if hit is not None:
            doors.append(SideDoor(hit, arg, _GIT_LONG[hit]))
        elif sub == "grep" and arg.startswith("-") and not arg.startswith("--") and "O" in arg:
            doors.append(SideDoor("-O", arg, _RUNS))
    return doors


def _git_read_only(sub: str, rest: list[str]) -> bool:
    if sub == "reflog":
        return not rest or rest[0] == "show" or rest[0].startswith("-")
    if sub in _GIT_READ_ONLY:
        return True
    if sub == "branch":
        listing = "--list" in rest or "-l" in rest
        for arg in rest:
            if arg.startswith("--"):
                if arg.split("=", 1)[0] in ("--delete", "--move", "--copy", "--force", "--track"):
                    return False
                if arg.startswith(("--set-upstream", "--unset-upstream", "--edit-desc")):
                    return False
            elif arg.startswith("-"):
                if any(c in _BRANCH_WRITES for c in arg[1:]):
                    return False
            elif not listing:
                return False
        return True
    if sub == "tag":
        return not rest or rest[0] in ("-l", "--list")
    if sub == "remote":
        return all(a in ("-v", "--verbose") for a in rest)
    if sub == "stash":
        return bool(rest) and rest[0] in ("list", "show")
    return False


def _sort(args: list[str], _: list[Word]) -> list[SideDoor]:
    doors: list[SideDoor] = []
    for arg in args:
        if arg == "--":
            break
        if arg.startswith("--"):
            hit = long_option(arg, tuple(_SORT_LONG))
            if hit is not None:
                doors.append(SideDoor(hit, arg, _SORT_LONG[hit]))
        elif arg.startswith("-"):
            for c in arg[1:]:
                if c in "oT":
                    doors.append(SideDoor("-" + c, arg, _WRITES))
                    break
                if c in "ktS":
                    break
    return doors


def _find(args: list[str], _: list[Word]) -> list[SideDoor]:
    return [SideDoor(a, a, _FIND[a]) for a in args if a in _FIND]


def _tar(args: list[str], _: list[Word]) -> list[SideDoor]:
    doors: list[SideDoor] = []
    for k, arg in enumerate(args):
        if arg == "--":
            break
        if arg.startswith("--"):
            hit = long_option(arg, tuple(_TAR_LONG))
            if hit is not None:
                doors.append(SideDoor(hit, arg, _TAR_LONG[hit]))
        elif (arg.startswith("-") or k == 0) and any(c in "IF" for c in arg):
            doors.append(SideDoor("-I", arg, _RUNS))
    return doors


def _rsync(args: list[str], _: list[Word]) -> list[SideDoor]:
    doors: list[SideDoor] = []
    for arg in args:
        if arg.startswith("--"):
            hit = long_option(arg, tuple(_RSYNC_LONG))
            if hit is not None:
                doors.append(SideDoor(hit, arg, _RSYNC_LONG[hit]))
        elif arg.startswith("-") and any(c in "eM" for c in arg[1:]):
            doors.append(SideDoor("-e", arg, _RUNS))
    return doors


def _options(table: dict[str, str]) -> Callable[[list[str], list[Word]], list[SideDoor]]:
    """A checker for options that are doors whether spelled whole, abbreviated or attached."""

    def check(args: list[str], _: list[Word]) -> list[SideDoor]:
        doors: list[SideDoor] = []
        for arg in args:
            if arg == "--":
                break
            longs = [k for k in table if k.startswith("--")]
            hit = long_option(arg, longs) if arg.startswith("--") else None
            short = next((k for k in table if not k.startswith("--") and arg.startswith(k)), None)
            key = hit or short
            if key is not None:
                doors.append(SideDoor(key, arg, table[key]))
        return doors

    return check


def _output_operand(args: list[str], _: list[Word]) -> list[SideDoor]:
    """uniq and xxd write their second operand."""
    operands = [a for a in args if not a.startswith("-") or a == "-"]
    return [SideDoor("output file", operands[1], _WRITES)] if len(operands) > 1 else []


def _test(args: list[str], _: list[Word]) -> list[SideDoor]:
    reason = "evaluates its operands as arithmetic or array subscripts, which can run commands"
    return [SideDoor(a, a, reason) for a in args if a in _TEST_RISKY]


_CHECKERS: dict[str, Callable[[list[str], list[Word]], list[SideDoor]]] = {
    "git": _git,
    "sort": _sort,
    "find": _find,
    "sed": sed,
    "gsed": sed,
    "awk": awk,
    "gawk": awk,
    "mawk": awk,
    "nawk": awk,
    "tar": _tar,
    "gtar": _tar,
    "rsync": _rsync,
    "rg": _options({"--pre": _RUNS}),
    "zip": _options({"-TT": _RUNS, "--unzip-command": _RUNS}),
    "wc": _options({"--files0-from": _HIDDEN}),
    "du": _options({"--files0-from": _HIDDEN}),
    "printf": _options({"-v": "assigns a shell variable"}),
    "less": _options({"+": _RUNS, "-k": _HIDDEN, "--lesskey": _HIDDEN}),
    "more": _options({"+": _RUNS}),
    "man": _options({"-P": _RUNS, "--pager": _RUNS, "-H": _RUNS, "--html": _RUNS}),
    "tree": _options({"-o": _WRITES}),
    "uniq": _output_operand,
    "xxd": _output_operand,
    "test": _test,
    "[": _test,
}
