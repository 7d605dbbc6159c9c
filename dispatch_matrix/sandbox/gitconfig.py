"""What git's own configuration points it at, for the wall to keep read-only: the files an
`include.path` or `includeIf.<condition>.path` pulls in, the folder `core.hooksPath` runs
hooks from, the template `init.templateDir` copies into every new repository, and the
scripts that command-valued keys (`core.editor`, `core.fsmonitor`, a diff driver's
`textconv`, a filter, a credential helper, a `!` alias…) name by path. `~/.gitconfig`,
`~/.config/git/config` and a guarded repository's `.git/config` are read-only, but what
they name may lie in an allowed root (a team's shared config, husky's ignored `.husky/_`, a
script in `~/scripts`): a `core.fsmonitor` or a hook planted there runs at the owner's next
git command, or at the next `cd` of a shell whose prompt runs git (attack review 3: each
was planted and ran, with git 2.39).

The list is made from the configs actually present, read by git's own parser (`git config
--file F --list`, which neither follows includes nor runs anything), each include followed
as git follows it. A config is read again only when its file changed (`stat`): the guarded
ones are read-only to calls, so after the first call this costs a few `stat`s.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import stat
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

# git's own limit on nested includes.
MAX_DEPTH = 10
# A bounded memo: one entry per config file seen (the home's two and one per repository).
_MEMO_SIZE = 512
# A repository a call makes in a root has a config the call wrote, read before every later
# call: bounds on what one such config may cost (review 3: an include of a named pipe held
# each later call 10 s per pipe; a 200 MB include would be listed into the daemon's memory;
# thousands of includes each start a git). A config is a few kB; an owner's include chain a
# handful of files.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIGS = 64


@dataclass(frozen=True)
class Named:
    """A path a config names: a file git reads as more config, or a folder of hooks."""

    path: PurePosixPath
    is_dir: bool
    # An include: more config, read in its turn.
    include: bool = field(default=False, compare=False)


# Keys whose value git runs as a command (through `sh -c`): what a word of it names (a
# script in a root, `core.editor = ~/bin2/edit.sh`) runs later. Keys as `git config
# --list` spells them (section and name lower-case). An alias runs only with a leading `!`.
_COMMAND_KEY = re.compile(
    r"^(core\.(editor|pager|fsmonitor|sshcommand|askpass|gitproxy)"
    r"|sequence\.editor|diff\.external|gpg\.program|uploadpack\.packobjectshook"
    r"|(diff|difftool|mergetool|merge|filter|gpg|credential|remote|sendemail)\..*\."
    r"(command|textconv|cmd|driver|clean|smudge|process|program|helper|uploadpack|receivepack"
    r"|smtpserver)"
    r"|credential\.helper|sendemail\.smtpserver|pager\..*|alias\..*)$"
)
# Keys that name a folder: the hooks git runs, the template copied into every new
# repository (its `hooks/` included) at `git init` and `git clone`.
_FOLDER_KEYS = frozenset({"core.hookspath", "init.templatedir"})


def _is_include(name: str) -> bool:
    return name == "include.path" or (name.startswith("includeif.") and name.endswith(".path"))


def _command_paths(value: str, home: PurePosixPath) -> list[PurePosixPath]:
    """The absolute or `~/` paths among the words of a command (and after a word's `=`)."""
    try:
        words = shlex.split(value.removeprefix("!"))
    except ValueError:
        words = value.removeprefix("!").split()
    found: list[PurePosixPath] = []
    for word in words:
        for part in dict.fromkeys((word, word.rsplit("=", 1)[-1])):
            if part.startswith("~/"):
                found.append(home / part[2:])
            elif part.startswith("/") and not part.startswith("//"):
                found.append(PurePosixPath(part))
    return found


def named_paths(
    entries: Sequence[tuple[str, str]],
    config_dir: PurePosixPath,
    home: PurePosixPath,
    trees: Sequence[PurePosixPath],
) -> list[Named]:
    """The paths a config's `entries` (key, value; keys as git lists them) name. Pure.

    An include's relative path is taken from the folder of the config that holds it, as git
    does; a relative `core.hooksPath` from the top of the working tree, so it is one path per
    tree in `trees` (a repository's own config gets its own tree; the home's configs every
    tree); a relative `init.templateDir` from wherever git runs, so it is left out. A
    command's words name files by absolute or `~/` paths (a bare name is found on the PATH,
    whose folders the wall guards). `~/` is the home; `%(prefix)/` (git's installation) is
    left out.
    """
    found: list[Named] = []
    for key, value in entries:
        name = key.casefold()
        if not value or value.startswith("%(prefix)/"):
            continue
        if _COMMAND_KEY.match(name):
            if not name.startswith("alias.") or value.startswith("!"):
                found += [Named(path, False) for path in _command_paths(value, home)]
            continue
        is_include = _is_include(name)
        if not (is_include or name in _FOLDER_KEYS):
            continue
        if value == "~" or value.startswith("~/"):
            bases = [home]
            value = value[2:]
        elif value.startswith("/"):
            bases = [PurePosixPath("/")]
        elif is_include:
            bases = [config_dir]
        else:
            bases = list(trees) if name == "core.hookspath" else []
        for base in bases:
            path = PurePosixPath(os.path.normpath(base / value)) if value else base
            found.append(Named(path, not is_include, include=is_include))
    return list(dict.fromkeys(found))


_memo: dict[str, tuple[tuple[int, int, int, int], list[tuple[str, str]]]] = {}


def entries_of(config: Path) -> list[tuple[str, str]]:
    """The (key, value) entries of one config file, read by git itself without following
    its includes; [] when it is missing or git cannot read it. Remembered while the file
    does not change. Only a regular file of at most `MAX_CONFIG_BYTES` is read: git would
    wait on a named pipe until the timeout, and list a huge file into memory."""
    try:
        st = config.stat()
    except OSError:
        return []
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_CONFIG_BYTES:
        return []
    signature = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    known = _memo.get(str(config))
    if known is not None and known[0] == signature:
        return known[1]
    try:
        done = subprocess.run(
            ["git", "config", "--file", str(config), "--null", "--list"],
            # Run from / with no HOME: git reads no other config and runs nothing here.
            cwd="/",
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_CONFIG_NOSYSTEM": "1"},
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    found: list[tuple[str, str]] = []
    for record in done.stdout.decode(errors="surrogateescape").split("\0"):
        key, _, value = record.partition("\n")
        if key:
            found.append((key, value))
    if len(_memo) >= _MEMO_SIZE:
        _memo.clear()
    _memo[str(config)] = (signature, found)
    return found


def config_named(
    home: Path, configs: Iterable[tuple[Path, Sequence[Path]]], keep: Sequence[Path] = ()
) -> list[Named]:
    """Every path the given configs name, includes followed to git's depth. `configs`: each
    config file with the working trees its relative `core.hooksPath` is taken from. None
    that is or holds a folder of `keep` (the home, the roots: a command's `/` or `~/` would
    otherwise turn them read-only whole). At most `MAX_CONFIGS` files are read from each
    given config: the rest of a chain that long is left unread. The budget is each
    config's own, so a config a call wrote cannot spend that of the owner's home configs."""
    found: dict[Named, None] = {}
    for start, start_trees in configs:
        trees = tuple(PurePosixPath(t) for t in start_trees)
        todo = [(start, 0)]
        seen: set[Path] = set()
        while todo and len(seen) < MAX_CONFIGS:
            config, depth = todo.pop(0)
            if config in seen or depth > MAX_DEPTH:
                continue
            seen.add(config)
            entries = entries_of(config)
            home_posix, folder = PurePosixPath(home), PurePosixPath(config.parent)
            for named in named_paths(entries, folder, home_posix, trees):
                found.setdefault(named, None)
                if named.include:
                    with contextlib.suppress(OSError, ValueError):
                        todo.append((Path(named.path), depth + 1))
    kept = [PurePosixPath(k) for k in keep]
    return [n for n in found if not any(k.is_relative_to(n.path) for k in kept)]


def home_configs(home: Path, env: Mapping[str, str] | None = None) -> list[Path]:
    """The user's own git configs: `~/.gitconfig` and `~/.config/git/config`, and those the
    environment moves them to (`GIT_CONFIG_GLOBAL`, `$XDG_CONFIG_HOME/git/config`): git run
    later with that environment reads them."""
    found = [home / ".gitconfig", home / ".config" / "git" / "config"]
    env = env or {}
    if env.get("XDG_CONFIG_HOME", "").startswith("/"):
        found.append(Path(env["XDG_CONFIG_HOME"]) / "git" / "config")
    moved = env.get("GIT_CONFIG_GLOBAL", "")
    if moved.startswith("/") or moved.startswith("~/"):
        found.append(home / moved[2:] if moved.startswith("~/") else Path(moved))
    return list(dict.fromkeys(found))


def repository_named(home: Path, path: Path, top: Path) -> list[Named]:
    """What the config of the repository holding `path` names (its includes, its hooks
    folder), looking up from `path` no higher than `top` (the root it lies in): for the file
    tools, which may write at any depth of a root."""
    for folder in [path.parent, *path.parent.parents]:
        if (folder / ".git" / "config").is_file():
            return config_named(home, [(folder / ".git" / "config", [folder])])
        if folder == top or len(folder.parts) <= len(top.parts):
            break
    return []
