"""Which options and operands of a program a wildcard rule may let through. Pure data.

A rule such as `Bash(pytest:*)` or `Bash(git log:*)` names a program but not its options,
and many programs have options that run a command or write a file (`rg --pre=prog`,
`make --eval=…`, `pytest --basetemp=DIR`, `git diff --output=F`). So options are an
allowlist per program: an option this table does not list as inert asks, unless the rule
itself spells it. A program with no table here accepts no option the rule does not spell.
Some programs also check their operands: sed and awk programs (print-only scripts), jq
filters (no environment), make targets (no `VAR=value`), git's read-only subcommands.

`check` returns why a command is not covered, or None. It sees literal words only (the
judge asks about anything else before it gets here).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

# A word as the table sees it: its value after quote removal, and whether it is a glob.
Arg = tuple[str, bool]
Check = Callable[[list[str]], str | None]


@dataclass(frozen=True)
class Options:
    """The inert options of one program (or subcommand), and checks on its operands."""

    # Short options without a value; they may be combined (`-la`).
    flags: str = ""
    # Short options taking a value, attached (`-n5`) or as the next word (`-n 5`).
    valued: str = ""
    # Long options (and whole single-dash words when `whole`) with no value or `=value`.
    long: frozenset[str] = frozenset()
    # Long options taking a value, `--x=v` or `--x v`.
    long_valued: frozenset[str] = frozenset()
    # `-20` (head, tail, git log).
    numeric: bool = False
    # Every option the program has only reads or prints: any option passes.
    any_option: bool = False
    # Glob operands are fine: even one that expands to an option's name (a file named
    # `--pre=x`) would only make the program read or print something else.
    globs: bool = False
    # Options are whole words after one dash (`find -name`, `go test -run`).
    whole: bool = False
    subcommands: Mapping[str, Options] = field(default_factory=dict)
    # What `--` switches to: None means only operands follow.
    after_dashdash: Options | None = None
    # False when `--` ends only the leading options and options still follow it (find
    # reads `find -- . -exec cmd ;` as a start point, then its expression).
    dashdash_ends_options: bool = True
    # Options whose value is a script for `script` to check (sed's `-e`).
    script_options: frozenset[str] = frozenset()
    script: Callable[[str], bool] | None = None
    operands: Check | None = None
    # Checks the value of a valued option (its name, its value): tar's `-f host:file`.
    values: Callable[[str, str], str | None] | None = None


NO_TABLE = Options()


def words(names: str) -> frozenset[str]:
    """A set of words written as one blank-separated string."""
    return frozenset(names.split())


def check(args: Sequence[Arg], spelled: int, named: frozenset[str] = frozenset()) -> str | None:
    """Why the options or operands of a command (its words, the program first) are not
    known to be inert; None when they are. The first `spelled` words are spelled by the
    rule that matched, and options it `named` (`--output` in `Bash(git diff --output=*)`)
    pass wherever they are."""
    program = posixpath.basename(args[0][0]) if args else ""
    if program in RUNNERS:
        return f"`{program}` runs its arguments as a command"
    spec = TABLES.get(program, NO_TABLE)
    operands: list[str] = []
    scripts: list[str] = []
    only_operands = switched = False
    i = 1
    while i < len(args):
        word, glob = args[i]
        free = i >= spelled
        i += 1
        if not only_operands and not operands and word in spec.subcommands:
            spec = spec.subcommands[word]
            continue
        if spec.subcommands and not only_operands and not operands and not word.startswith("-"):
            if free:
                return f"`{word}` is not a subcommand known to be read-only"
            spec = NO_TABLE
            continue
        if only_operands or word == "-" or not word.startswith("-"):
            if glob and not spec.globs:
                return f"`{word}` is a pattern, and a file named like an option would become one"
            if word.startswith("+") and spec is NO_TABLE and free:
                return f"`{word}` may be a command for the program (as `less +cmd`)"
            operands.append(word)
            continue
        if word == "--":
            if spec.subcommands and free:
                # `git -- log …`: where the subcommand starts is the program's to read.
                return "`--` comes before the subcommand"
            if not spec.dashdash_ends_options:
                continue
            if spec.after_dashdash is not None:
                spec, switched = spec.after_dashdash, True
            elif not switched:
                # Past the arguments a script gets (`npm test -- …`), a second `--` still
                # leaves options to be checked: the test runner may read them.
                only_operands = True
            continue
        if glob and not spec.globs:
            return f"`{word}` is an option spelled with a pattern"
        if spec.any_option:
            unseen = _reaches_unseen(program, word)
            if unseen is not None:
                return f"`{word}` {unseen}"
            continue
        name, value, consumed, problem = _option(spec, word, args[i][0] if i < len(args) else None)
        if problem is not None and free and word.partition("=")[0] not in named:
            return problem
        if consumed and value is not None and value.startswith("-") and value != "-" and free:
            # The table takes the next word as the value; a program whose option only
            # takes an attached value (`git diff -U5`) reads `-U --output=F` as two options.
            return f"`{value}` after `{word}` may be read as an option, not as its value"
        if name in spec.script_options and value is not None:
            scripts.append(value)
        if spec.values is not None and value is not None:
            refused = spec.values(name, value)
            if refused is not None and free:
                return refused
        i += consumed
    if spec.script is not None:
        if not scripts:
            if not operands:
                return None
            scripts.append(operands.pop(0))
        bad = next((s for s in scripts if not spec.script(s)), None)
        if bad is not None:
            return f"the script `{bad}` may do more than read and print"
    return spec.operands(operands) if spec.operands is not None else None


def _option(
    spec: Options, word: str, following: str | None
) -> tuple[str, str | None, int, str | None]:
    """Parse one option word: (its name, its value if it takes one, how many following
    words it consumes, why it is refused)."""
    unknown = f"`{word}` is not an option known to be inert"
    if spec.whole or word.startswith("--"):
        name, eq, value = word.partition("=")
        if name in spec.long:
            return name, (value if eq else None), 0, None
        if name in spec.long_valued:
            if eq:
                return name, value, 0, None
            return name, following, int(following is not None), None
        return name, None, 0, unknown
    if spec.numeric and word[1:].isdigit():
        return word, None, 0, None
    for j, letter in enumerate(word[1:], start=1):
        if letter in spec.valued:
            if j + 1 < len(word):
                return "-" + letter, word[j + 1 :], 0, None
            return "-" + letter, following, int(following is not None), None
        if letter not in spec.flags:
            return word, None, 0, f"`-{letter}` (in `{word}`) is not an option known to be inert"
    return word, None, 0, None


# --- Scripts and operands --------------------------------------------------------------

# sed: addresses (numbers, `$`, `first~step`, `/regex/` without `[`, so that no bracket
# expression can hide a delimiter: GNU sed reads `/[/]/` as one regex) and the commands p,
# =, l, d. No labels, branches, `e`, `w`, `r`, `s` (GNU sed ends a label at a blank and
# opens `w` files when it compiles the script, even unreachable ones).
_ADDRESS = r"(?:\d+(?:~\d+)?|\$|/(?:[^/\\\n\[]|\\[^\n])*/[IM]*)"
_RANGE = rf"{_ADDRESS}(?:[ \t]*,[ \t]*(?:{_ADDRESS}|[+~]\d+))?"
# `s/regex/replacement/flags` with `/` as the delimiter and no `e` or `w` flag.
_SUBSTITUTE = r"s/(?:[^/\\\n\[]|\\[^\n])*/(?:[^/\\\n]|\\[^\n])*/[gpiIm0-9]*"
_SED_COMMAND = re.compile(rf"[ \t]*(?:{_RANGE})?[ \t]*!?[ \t]*(?:[p=ld]|{_SUBSTITUTE})[ \t]*")


def sed_script_is_safe(script: str) -> bool:
    """Whether a sed script only selects lines and prints (or deletes) them."""
    pieces = [p for p in re.split(r"[;\n]", script) if p.strip()]
    return bool(pieces) and all(_SED_COMMAND.fullmatch(p) for p in pieces)


# awk: nothing that runs a command, writes, reads a file the line does not name, loads
# code or reads the environment. Conservative: any of these characters or names asks.
# ARGV/ARGC name files to read at run time (`ARGV[1]="/home/u/.netrc"`); gawk's SYMTAB and
# FUNCTAB reach any variable or function by a computed name (`SYMTAB["ENV" "IRON"]`).
_AWK_BAD = re.compile(
    r"[|>@`\\]|system|getline|close|ENVIRON|PROCINFO|fflush|ARGV|ARGC|SYMTAB|FUNCTAB"
)


def awk_program_is_safe(program: str) -> bool:
    """Whether an awk program can only compute and print."""
    return not _AWK_BAD.search(program)


def _jq(operands: list[str]) -> str | None:
    # `import "x" as $d` reads x.json from anywhere: a read the judge would not see.
    if operands and re.search(r"env|input|import|include|\$__", operands[0], re.IGNORECASE):
        return f"the jq filter `{operands[0]}` reads the environment, a module or other input"
    return None


def _no_assignments(operands: list[str]) -> str | None:
    bad = next((o for o in operands if "=" in o), None)
    return None if bad is None else f"`{bad}` sets a make variable (it can run commands)"


def _no_mode(operands: list[str]) -> str | None:
    # `tar xf a.tar`: the first operand may be the mode, written without a dash.
    # Digits too: `-[0-7]` are tape-density options in some builds (`tar x0f a.tar`).
    bad = next((o for o in operands if re.fullmatch(r"[A-Za-z0-9]+", o)), None)
    return None if bad is None else f"`{bad}` may be a tar mode (extract, create)"


def _remote_archive(name: str, value: str) -> str | None:
    # GNU tar reads `host:file` (or `user@host:file`) through `rsh`: a program and a
    # network connection the line does not name.
    if name == "-f" and ":" in value:
        return f"`{value}` may name a remote archive (tar would run rsh to reach it)"
    return None


def _no_options(operands: list[str]) -> str | None:
    # pytest looks for `-p MODULE` in all its arguments, past `--` too, to load plugins early.
    bad = next((o for o in operands if o.startswith("-")), None)
    return None if bad is None else f"`{bad}` may still be read as an option"


def _at_most_one(operands: list[str]) -> str | None:
    return f"`{operands[1]}` would be written to" if len(operands) > 1 else None


def _none(what: str) -> Check:
    def refuse(operands: list[str]) -> str | None:
        return f"`{operands[0]}` {what}" if operands else None

    return refuse


# Programs that run their operands as a command: only a rule that spells it all covers.
RUNNERS = words(
    """env xargs sudo doas su runuser nohup stdbuf ionice chroot watch strace ltrace flock
setsid unbuffer script parallel bash sh zsh dash ksh fish csh tcsh busybox ssh node perl
ruby php deno bun npx lua osascript xdg-open open nice timeout time"""
)
# Options of the readers that reach files the judge does not see: a list of file names
# read from a file (`--files0-from`), the files a check list names (`md5sum -c list`),
# every link under a walked folder (`grep -R`, `diff -r`, as `rg -L` and `find -L` are not
# in their tables): the policy resolves the links a line names, not those a walk meets.
# (long options, short letters, why). GNU programs accept any unambiguous prefix of a long
# option (`--files0`, `--ch`, `--deref`): any prefix counts.
_LIST = "reads a list of files the judge does not see"
_FILES0 = (("--files0-from",), "", _LIST)
_CHECKS = (("--check",), "c", _LIST)
_FOLLOWS = (
    ("--dereference-recursive",),
    "R",
    "follows every link in the folders it walks, to files the judge does not see",
)
_UNSEEN: Mapping[str, tuple[tuple[str, ...], str, str]] = {
    "wc": _FILES0,
    "du": _FILES0,
    **dict.fromkeys(
        ("md5sum", "sha1sum", "sha256sum", "sha224sum", "sha384sum", "sha512sum"), _CHECKS
    ),
    **dict.fromkeys(("grep", "egrep", "fgrep"), _FOLLOWS),
    # GNU diff follows links while it walks (measured: `diff -rN src empty` printed a
    # linked folder's files, diffutils 3.8).
    "diff": (("--recursive",), "r", _FOLLOWS[2]),
}


def _reaches_unseen(program: str, word: str) -> str | None:
    """Why an option word of a reader makes it read files the judge does not see."""
    longs, letters, why = _UNSEEN.get(program, ((), "", ""))
    if word.startswith("--"):
        name = word.partition("=")[0]
        hit = len(name) >= 3 and any(r.startswith(name) for r in longs)
    else:
        hit = any(letter in word[1:] for letter in letters)
    return why if hit else None


# Programs whose every option only reads files or prints: any option, glob operands too.
_READERS = words("""cat head tail wc ls grep egrep fgrep du stat nl cut diff cmp md5sum sha1sum
sha256sum realpath basename dirname readlink echo""")
# Programs whose every option is inert, but that take no files: no globs.
_PRINTERS = words("test which tr true false df uname whoami id")

_DIFF = words("""--stat --shortstat --numstat --name-only --name-status --cached --staged
--color --no-color --word-diff --ignore-all-space --patch --ignore-space-change --minimal
--patience --histogram --summary --check --no-ext-diff --raw --relative --merge-base
--exit-code --quiet --unified --dirstat --abbrev --no-prefix --find-renames""")


def _pathspecs(operands: list[str]) -> str | None:
    # git reads paths as patterns: `.e[n]v`, `.en?`, `.e\nv` and `:(icase).ENV` all name
    # `.env`, where the path checks see other names. An exclusion (`:!x`, `:^x`) only
    # takes paths away: any pattern in it is fine.
    bad = next(
        (o for o in operands if not re.match(r":[!^]", o) and re.search(r"[*?\[\\]|^:[(/]", o)),
        None,
    )
    return None if bad is None else f"`{bad}` is a git pathspec pattern or magic"


_GIT_DIFF = Options(
    flags="puswbRaz",
    valued="U",
    long=_DIFF,
    long_valued=words("--diff-filter"),
    operands=_pathspecs,
)
_GIT_LOG = Options(
    flags="psuz",
    valued="nSG",
    numeric=True,
    long=_DIFF
    | words("""--oneline --graph --all --decorate --no-merges --merges --reverse --first-parent
--follow --abbrev-commit --date --format --pretty --since --until --after --before --author
--grep --max-count --left-right --source --topo-order --date-order --no-decorate --branches
--tags --remotes --full-history --no-patch"""),
    long_valued=words("--diff-filter --author --grep --since --until --format"),
    operands=_pathspecs,
)
_GIT = Options(
    long=words("--no-pager"),
    subcommands={
        "status": Options(flags="sbvz", long=words("--short --branch --porcelain --long")),
        "diff": _GIT_DIFF,
        "log": _GIT_LOG,
        "show": _GIT_LOG,
        "branch": Options(
            flags="arvl",
            long=words("--list --all --remotes --show-current --verbose --merged"),
            long_valued=words("--contains --sort --format"),
            operands=_none("would create or change a branch"),
        ),
        "rev-parse": Options(long=words("--short --abbrev-ref --show-toplevel --verify")),
        "ls-files": Options(flags="comd", long=words("--others --modified --cached")),
        "blame": Options(flags="wsle", valued="L"),
        "shortlog": Options(flags="sne", long=words("--summary --numbered --email")),
        "describe": Options(long=words("--tags --always --abbrev --dirty")),
        "remote": Options(flags="v", operands=_none("would change a remote")),
        "cat-file": Options(flags="pts"),
        "ls-tree": Options(flags="rtdl", long=words("--name-only --full-tree")),
    },
)
_PYTEST = Options(
    flags="qvxsl",
    valued="kmnr",
    long=words("""--lf --last-failed --ff --failed-first --nf --sw --stepwise --co
--collect-only --no-header --disable-warnings --showlocals --quiet --verbose --exitfirst
--strict-markers --runxfail --tb --maxfail --durations --color --capture --setup-show"""),
    long_valued=words("--tb --maxfail --durations --deselect --ignore"),
    operands=_no_options,
)
_JS_TEST_ARGS = Options(
    flags="tu",
    long=words("""--watch --watchAll --coverage --ci --runInBand --verbose --bail
--passWithNoTests --silent --run --testNamePattern"""),
)
_NPM_TEST = Options(flags="s", long=words("--silent --if-present"), after_dashdash=_JS_TEST_ARGS)


def _npm_script(operands: list[str]) -> str | None:
    # `npm run env` is npm's own command when package.json has no `env` script: it prints
    # the whole environment, passed-through secrets included.
    if operands and operands[0] == "env":
        return "`npm run env` prints the environment"
    return None


_NPM_RUN = replace(
    _NPM_TEST, operands=_npm_script, after_dashdash=replace(_JS_TEST_ARGS, operands=_npm_script)
)
_CARGO = Options(
    flags="qv",
    valued="pj",
    long=words("""--release --lib --bins --all --workspace --no-fail-fast --doc --quiet
--all-targets --tests --locked --offline"""),
    long_valued=words("--package --test --features --bin --jobs --example"),
    after_dashdash=Options(
        long=words("--nocapture --ignored --include-ignored --exact --quiet --show-output"),
        long_valued=words("--test-threads --skip"),
    ),
)
# Unverified here how go test and tree read words after `--`: the options there are
# still checked (none is known to be inert), so `go test -- -exec=./x` asks.
_STILL_OPTIONS = Options()
_GO_TEST = Options(
    whole=True,
    after_dashdash=_STILL_OPTIONS,
    long=words("-v -race -short -cover -failfast -json -count -vet"),
    long_valued=words("-run -count -timeout -bench -skip -tags -cpu"),
)
_FIND = Options(
    whole=True,
    dashdash_ends_options=False,
    long=words("""-print -print0 -prune -o -a -not -and -or -empty -xdev -mount -readable
-writable -executable -ls -depth -true -false -nouser -nogroup -daystart -P"""),
    long_valued=words("""-name -iname -path -ipath -wholename -type -xtype -maxdepth -mindepth
-mtime -mmin -atime -amin -ctime -cmin -newer -size -regex -iregex -regextype -user -group
-perm -printf -links -inum -samefile -uid -gid"""),
)
_PYTHON = Options(
    subcommands={"-m": Options(subcommands={"pytest": _PYTEST}, operands=_none("runs code"))},
    operands=_none("is a script: running it runs any code"),
)

TABLES: Mapping[str, Options] = {
    **{name: Options(any_option=True, globs=True) for name in _READERS},
    **{name: Options(any_option=True) for name in _PRINTERS},
    "printf": Options(),
    "pwd": Options(flags="LP"),
    "date": Options(flags="uR", valued="d", long=words("--utc --iso-8601 --rfc-3339")),
    "sort": Options(flags="bdfgihMnRrsuVcz", valued="ktS", long=words("--unique --numeric-sort")),
    "uniq": Options(flags="cdiuzD", valued="fsw", operands=_at_most_one),
    "jq": Options(
        flags="rcnsSjaeCM",
        long=words("--raw-output --compact-output --slurp --sort-keys --tab"),
        long_valued=words("--indent"),
        operands=_jq,
    ),
    "tree": Options(flags="adfhlsLpugDFJCNQr", valued="LIP", after_dashdash=_STILL_OPTIONS),
    "file": Options(flags="bLizkhN", long=words("--mime --mime-type --brief")),
    "sed": Options(
        flags="nEsuzr",
        valued="le",
        long=words("""--quiet --silent --regexp-extended --posix --separate --null-data
--unbuffered --debug --sandbox"""),
        long_valued=words("--expression"),
        script_options=words("-e --expression"),
        script=sed_script_is_safe,
    ),
    "awk": Options(valued="Fv", script=awk_program_is_safe),
    "find": _FIND,
    "git": _GIT,
    "pytest": _PYTEST,
    "python": _PYTHON,
    "python3": _PYTHON,
    "make": Options(
        flags="ksiqBwnj0123456789",
        long=words("--keep-going --silent --quiet --no-print-directory --jobs"),
        operands=_no_assignments,
    ),
    "npm": Options(
        subcommands={
            **dict.fromkeys(("test", "t"), _NPM_TEST),
            **dict.fromkeys(("run", "run-script"), _NPM_RUN),
        }
    ),
    "cargo": Options(subcommands=dict.fromkeys(("test", "build", "check"), _CARGO)),
    "go": Options(subcommands={"test": _GO_TEST, "vet": _GO_TEST}),
    "rg": Options(
        flags="iIlcwvFsSuhHNnoUax0qp",
        valued="egtTABCmMjrEd",
        long=words("""--hidden --no-ignore --files --json --count --files-with-matches
--line-number --no-heading --heading --column --vimgrep --smart-case --ignore-case
--fixed-strings --word-regexp --stats --multiline --trim --only-matching
--invert-match --no-messages --null --unrestricted --color --sort --glob --type
--max-depth --context --max-count --no-line-number"""),
        long_valued=words("--glob --type --type-not --max-depth --context --sort"),
    ),
    "ruff": Options(
        subcommands={
            "check": Options(
                flags="q",
                long=words("--statistics --quiet --no-cache --show-fixes --preview"),
                long_valued=words("--select --ignore --extend-select --output-format"),
            ),
        }
    ),
    "mypy": Options(
        valued="pm",
        long=words("""--strict --pretty --show-error-codes --ignore-missing-imports
--no-incremental --no-error-summary --check-untyped-defs --warn-unused-ignores"""),
    ),
    "cd": Options(operands=_at_most_one),
    # BSD-style `ps e` prints each process's environment: operands ask. No `-x`: procps
    # has no such UNIX option and reads a dash word it cannot parse as BSD options, so
    # `ps -axe` is `ps axe` (measured on procps-ng 4.0.2: every `-x` cluster with `e`).
    "ps": Options(flags="AaefFlLjwH", valued="opUC", operands=_none("may show environments")),
    "tar": Options(flags="tvzjJaO", valued="f", operands=_no_mode, values=_remote_archive),
}
