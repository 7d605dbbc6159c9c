"""The sandbox's own package caches: where cargo, Go, Maven, pre-commit and npm write what
they fetch during a shell call, since the owner's caches are read-only to every call
(`wall_paths.READONLY_IN_HOME`: code planted there runs at the owner's next build outside).

Every tool here cannot work without writing its cache: cargo and Go fail with "Read-only
file system" on a new dependency, and so do Maven, npm/npx and pre-commit (pip turns its
cache off and goes on, so it is left alone). Each call's environment points them at
folders under one cache folder of the sandbox's own (`default_folder`), which the daemon
binds writable into every call and which no tool of the owner's reads: what a call plants
there runs again only in a later call, inside the sandbox.

The decision is `cache_env`, pure and table-tested. A variable is set only where the
owner's own value (in the call's environment) does not already point inside an allowed
root: an explicit cache in a root is writable already and is kept. A value outside every
root is read-only in the call, so it is replaced.

Download caches are moved only when the network is on: with it off nothing can be fetched,
and the owner's read-only caches still serve an offline build (`cargo build --offline`)
as they did. Go's build cache (`GOCACHE`) holds no fetched code and Go cannot build
without writing it, so it is moved either way.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dispatch_matrix.core.errors import ToolError

# The folder under the home: beside the owner's caches, in no list the wall guards, outside
# the state folder; nothing outside the sandbox reads `dispatch-matrix/sandbox`.
FOLDER = ".cache/dispatch-matrix/sandbox"


@dataclass(frozen=True)
class Cache:
    """One environment variable that moves a tool's cache, and where it points."""

    variable: str
    # Relative to the sandbox's cache folder.
    subpath: str
    # Holds fetched code: moved only when the network is on (see the module docstring).
    fetched: bool = True
    # Other names the owner may have set it under (npm reads its variables in any case).
    aliases: tuple[str, ...] = ()


# cargo has no narrower variable than CARGO_HOME for its registry and git checkouts. The
# owner's `~/.cargo/config.toml` is still read for a project under the home: cargo reads
# `.cargo/config.toml` in every folder above the one it runs in before CARGO_HOME's own.
# `~/.cargo/bin` stays on the PATH the daemon hands on; `cargo install` lands in the
# sandbox's `cargo/bin`, on no one's PATH.
CACHES: tuple[Cache, ...] = (
    Cache("CARGO_HOME", "cargo"),
    # GOPATH too: Go writes the checksum database's latest note under `$GOPATH/pkg/sumdb`,
    # and `go install` into `$GOPATH/bin` (the owner's `~/go/bin` is on the PATH outside).
    Cache("GOPATH", "go"),
    Cache("GOMODCACHE", "go/pkg/mod"),
    Cache("GOCACHE", "go-build", fetched=False),
    Cache("PRE_COMMIT_HOME", "pre-commit"),
    # npm's whole cache, `_npx` (the packages npx runs) included.
    Cache("npm_config_cache", "npm", aliases=("NPM_CONFIG_CACHE",)),
)
# Maven has no variable for its repository: a system property in MAVEN_OPTS, which the
# `mvn` script hands to the JVM (a later `-D` wins over an earlier one).
MAVEN_OPTS = "MAVEN_OPTS"
MAVEN_PROPERTY = "-Dmaven.repo.local="
MAVEN_SUBPATH = "m2/repository"


def _inside(value: str, roots: Iterable[PurePosixPath]) -> bool:
    if not value.startswith("/"):
        return False
    path = PurePosixPath(os.path.normpath(value))
    return any(path.parts[: len(r.parts)] == r.parts for r in roots)


def _maven_repo(opts: str) -> str | None:
    """The last `-Dmaven.repo.local=` value in MAVEN_OPTS (the one the JVM keeps)."""
    found = None
    for word in opts.split():
        if word.startswith(MAVEN_PROPERTY):
            found = word.removeprefix(MAVEN_PROPERTY)
    return found


def cache_env(
    env: Mapping[str, str],
    folder: PurePosixPath,
    roots: Iterable[PurePosixPath],
    network: bool,
) -> dict[str, str]:
    """The variables to set in a call's environment `env` so that its tools write their
    caches under `folder` (canonical, absolute); empty when none is needed. `roots`: the
    call's writable roots, canonical. Pure."""
    roots = list(roots)
    found: dict[str, str] = {}
    for cache in CACHES:
        if cache.fetched and not network:
            continue
        names = (cache.variable, *cache.aliases)
        if any(_inside(env.get(name, ""), roots) for name in names):
            continue
        found[cache.variable] = str(folder / cache.subpath)
        # An alias the owner set to a read-only place would be read too: drop it.
        for alias in cache.aliases:
            if alias in env:
                found[alias] = str(folder / cache.subpath)
    if network:
        opts = env.get(MAVEN_OPTS, "")
        repo = _maven_repo(opts)
        if repo is None or not _inside(repo, roots):
            extra = MAVEN_PROPERTY + str(folder / MAVEN_SUBPATH)
            found[MAVEN_OPTS] = f"{opts} {extra}" if opts.strip() else extra
    return found


def ensure(folder: Path, variables: Mapping[str, str]) -> None:
    """Make `folder` and the folders `variables` name in it, as the call will need them
    (bubblewrap binds only what exists). A failure is a `ToolError` that says which folder
    and why, a full disk by name."""
    wanted = [folder]
    for name, value in variables.items():
        if name == MAVEN_OPTS:
            repo = _maven_repo(value)
            if repo is not None:
                wanted.append(Path(repo))
        else:
            wanted.append(Path(value))
    for path in wanted:
        if not path.is_relative_to(folder):
            continue
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ToolError(
                    f"the disk is full: cannot create the sandbox's cache folder {path}"
                ) from exc
            raise ToolError(
                f"cannot create the sandbox's cache folder {path}: {exc.strerror or exc}"
            ) from exc
    # Bound writable at its target: a link planted in its place (by a call whose root holds
    # ~/.cache) would make that target writable to every later call.
    real = Path(os.path.realpath(folder))
    if real != Path(os.path.realpath(folder.parent)) / folder.name:
        raise ToolError(
            f"the sandbox's cache folder {folder} is a link (to {real}); remove the link"
        )


def default_folder(home: Path) -> Path:
    """The sandbox's cache folder for an owner whose home is `home`."""
    return home / FOLDER
