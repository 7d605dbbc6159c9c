"""What git's own configuration points it at, for the wall to keep read-only: the files an
`include.path` or `includeIf.<condition>.path` pulls in and the folder `core.hooksPath`
runs hooks from. `~/.gitconfig`, `~/.config/git/config` and a guarded repository's
`.git/config` are read-only, but a file they include, or a hooks folder they name, may lie
in an allowed root (a team's shared config, husky's ignored `.husky/_`): a `core.fsmonitor`
or a hook planted there runs at the owner's next git command, or at the next `cd` of a
shell whose prompt runs git (attack review 3: each was planted and ran, with git 2.39).

The list is made from the configs actually present, read by git's own parser (`git config
--file F --list`, which neither follows includes nor runs anything), each include followed
as git follows it. A config is read again only when its file changed (`stat`): the guarded
ones are read-only to calls, so after the first call this costs a few `stat`s.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# git's own limit on nested includes.
MAX_DEPTH = 10
# A bounded memo: one entry per config file seen (the home's two and one per repository).
_MEMO_SIZE = 512


@dataclass(frozen=True)
class Named:
    """A path a config names: a file git reads as more config, or a folder of hooks."""

    path: PurePosixPath
    is_dir: bool


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
    tree). `~/` is the home; `%(prefix)/` (git's installation) is left out.
    """
    found: list[Named] = []
    for key, value in entries:
        name = key.casefold()
        is_include = name == "include.path" or (
            name.startswith("includeif.") and name.endswith(".path")
        )
        if not (is_include or name == "core.hookspath") or not value:
            continue
        if value.startswith("%(prefix)/"):
            continue
        if value == "~" or value.startswith("~/"):
            bases = [home]
            value = value[2:]
        elif value.startswith("/"):
            bases = [PurePosixPath("/")]
        else:
            bases = [config_dir] if is_include else list(trees)
        for base in bases:
            path = PurePosixPath(os.path.normpath(base / value)) if value else base
            found.append(Named(path, not is_include))
    return list(dict.fromkeys(found))


_memo: dict[str, tuple[tuple[int, int, int, int], list[tuple[str, str]]]] = {}


def entries_of(config: Path) -> list[tuple[str, str]]:
    """The (key, value) entries of one config file, read by git itself without following
    its includes; [] when it is missing or git cannot read it. Remembered while the file
    does not change."""
    try:
        st = config.stat()
    except OSError:
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


def config_named(home: Path, configs: Iterable[tuple[Path, Sequence[Path]]]) -> list[Named]:
    """Every path the given configs name, includes followed to git's depth. `configs`: each
    config file with the working trees its relative `core.hooksPath` is taken from."""
    found: dict[Named, None] = {}
    todo = [(config, tuple(PurePosixPath(t) for t in trees), 0) for config, trees in configs]
    seen: set[Path] = set()
    while todo:
        config, trees, depth = todo.pop()
        if config in seen or depth > MAX_DEPTH:
            continue
        seen.add(config)
        entries = entries_of(config)
        for named in named_paths(entries, PurePosixPath(config.parent), PurePosixPath(home), trees):
            found.setdefault(named, None)
            if not named.is_dir:
                with contextlib.suppress(OSError, ValueError):
                    todo.append((Path(named.path), trees, depth + 1))
    return list(found)


def home_configs(home: Path) -> list[Path]:
    """The user's own git configs: `~/.gitconfig` and `~/.config/git/config`."""
    return [home / ".gitconfig", home / ".config" / "git" / "config"]


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
