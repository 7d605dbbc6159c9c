"""The wall's decisions, made from its tables (`wall_paths.py`, DESIGN.md §8): which read-only
guards apply under the home folder on this platform, what an MCP server started outside the
sandbox runs (kept read-only), where the daemon's own installation lies, and why the file
tools may not write a path (the same guards the shell calls meet as mounts, `guards.py`).
"""

from __future__ import annotations

import functools
import os
import site
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePath, PurePosixPath

import dispatch_matrix
from dispatch_matrix.core.paths import within_any_case
from dispatch_matrix.sandbox.wall_paths import (
    BARE_HEAD,
    LAUNCHER_CACHES,
    READONLY_IN_HOME,
    READONLY_IN_HOME_MACOS,
    STARTUP_FOLDER_VARIABLES,
    STARTUP_VARIABLES,
    Guard,
)

# Names that the file tools refuse to write at any depth of any root (the shell's view is
# limited to the trees found, the file tools' is not).
_TREE_FOLDERS = frozenset({".vscode", ".idea", ".claude", ".cursor"})
# `commondir` moves where git reads `config` and `hooks` from, in any git folder.
_GIT_FILES = frozenset({"config", "config.worktree", "commondir"})
_CODE_SUFFIXES = frozenset({".js", ".mjs", ".cjs", ".ts", ".py", ".sh", ".rb", ".jar", ".php"})


def server_code(
    home: PurePosixPath,
    workdir: PurePosixPath | None,
    command: str,
    args: Sequence[str],
    cwd: PurePosixPath | None,
) -> list[PurePosixPath]:
    """What an MCP server the daemon starts outside the sandbox runs, for the wall to keep
    read-only: its launcher's cache, the folder of its program and of each script its
    arguments name, its working folder. Paths as spelled (absolute, `~/`, or relative to
    `cwd`); what lies in the workdir, or holds it, is left writable (the owner works there).
    Pure."""

    def place(text: str) -> PurePosixPath | None:
        if text == "~" or text.startswith("~/"):
            return home / text[2:]
        if text.startswith("/"):
            return PurePosixPath(text)
        return cwd / text if cwd is not None else None

    found = [home / cache for cache in LAUNCHER_CACHES.get(PurePosixPath(command).name, ())]
    if cwd is not None:
        found.append(cwd)
    for word in [command, *args]:
        path = place(word) if "/" in word or PurePosixPath(word).suffix in _CODE_SUFFIXES else None
        if path is not None:
            found.append(path.parent)
    return [
        path
        for path in dict.fromkeys(PurePosixPath(os.path.normpath(p)) for p in found)
        if path not in (PurePosixPath("/"), home)
        and (
            workdir is None
            or not (within_any_case(path, workdir) or within_any_case(workdir, path))
        )
    ]


def path_folders(search_path: str, keep: Sequence[PurePosixPath]) -> list[PurePosixPath]:
    """The folders of a `PATH` value: each runs, by the name of the command, whatever a call
    planted there, at the owner's next command in a shell with that `PATH` (the daemon's,
    the owner's own). Absolute entries only, and none that is or holds a folder of `keep`
    (the home, the workdir: they would turn read-only whole). Pure."""
    return _absolute_outside(search_path.split(":"), keep)


def env_files(
    environ: Mapping[str, str], home: PurePosixPath, keep: Sequence[PurePosixPath]
) -> list[PurePosixPath]:
    """The files the owner's environment names for a program to run at its start
    (`STARTUP_VARIABLES`: PYTHONSTARTUP and the like; `STARTUP_FOLDER_VARIABLES`: zsh's
    files in ZDOTDIR), for the wall to keep read-only.
    Absolute values and `~/` ones; a relative one names a file in whatever folder the
    program starts in, nothing fixed. None that is or holds a folder of `keep` (the home,
    the workdir, a root: they would turn read-only whole). Pure."""
    named: list[str] = [environ.get(name, "") for name in STARTUP_VARIABLES]
    for name, files in STARTUP_FOLDER_VARIABLES.items():
        folder = environ.get(name, "")
        if folder:
            named += [f"{folder}/{file}" for file in files]
    expanded = [f"{home}/{value[2:]}" if value.startswith("~/") else value for value in named]
    return _absolute_outside(expanded, keep)


def _absolute_outside(values: Iterable[str], keep: Sequence[PurePosixPath]) -> list[PurePosixPath]:
    """The absolute paths among `values`, normalised, once each in their order, but none
    that is or holds a folder of `keep` (it would turn read-only whole). Pure."""
    found: list[PurePosixPath] = []
    for value in values:
        if not value.startswith("/"):
            continue
        path = PurePosixPath(os.path.normpath(value))
        if not any(within_any_case(kept, path) for kept in keep):
            found.append(path)
    return list(dict.fromkeys(found))


@functools.cache
def home_guards(platform: str = sys.platform) -> tuple[Guard, ...]:
    """The read-only guards under the home folder on this platform (a constant of the
    platform: every shell call asks, so it is made once)."""
    return READONLY_IN_HOME + (READONLY_IN_HOME_MACOS if platform == "darwin" else ())


def installation_paths() -> list[Path]:
    """The daemon's own installation: its environment (where a `.pth` file would run at
    every start), the site-packages folders it reads, and the checkout an editable install
    runs from."""
    found = [Path(sys.prefix), *map(Path, site.getsitepackages())]
    # The user's site-packages is read only outside a virtual environment.
    if site.ENABLE_USER_SITE:
        found.append(Path(site.getusersitepackages()))
    package = Path(dispatch_matrix.__file__).resolve().parent
    if "site-packages" not in package.parts and "dist-packages" not in package.parts:
        found.append(package.parent)
    return list(dict.fromkeys(found))


def write_refusal(real: PurePath, readonly: tuple[PurePath, ...]) -> str | None:
    """Why the file tools may not write `real` (canonical), or None. Pure.

    `readonly`: the home guards and the installation, canonical. The tree guards are matched
    by name at any depth, since a file tool can reach any folder of a root. Names compare in
    any case: a case-insensitive file system (macOS's default) opens `~/.BASHRC` as
    `~/.bashrc`.
    """
    for path in readonly:
        if within_any_case(real, path):
            return f"is inside {path}, which runs later outside the sandbox"
    parts = tuple(part.casefold() for part in real.parts)
    if parts[-1] == BARE_HEAD.path.casefold() and ".git" not in parts:
        return "would make its folder a bare git repository, whose config git obeys later"
    for index, part in enumerate(parts):
        if part in _TREE_FOLDERS:
            return f"is inside a {part} folder (editor or agent settings)"
        if part == ".git":
            rest = parts[index + 1 :]
            if "hooks" in rest or (rest and rest[-1] in _GIT_FILES):
                return "is a git hook or git config, which git runs or obeys later"
    if parts[-1] == ".mcp.json":
        return "is an MCP server list, which an agent may start later"
    return None
