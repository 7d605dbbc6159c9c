"""The wall's lists applied to the disk for one shell call: which trees (roots, the
workdir, repositories up to three levels in) get their `.git/hooks`, `.git/config` and
editor folders guarded, which guards exist (mounted read-only), which missing folders
are created empty so they can be, which missing paths are watched, and moving aside what
a call planted at one of those. The lists themselves are data in `wall_paths.py`; the mounts
are `sandbox.plan`'s.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from stat import S_ISLNK

from dispatch_matrix.core.paths import canonicalize
from dispatch_matrix.sandbox.gitconfig import config_named, home_configs
from dispatch_matrix.sandbox.spec import within
from dispatch_matrix.sandbox.wall import home_guards
from dispatch_matrix.sandbox.wall_paths import (
    BARE_HEAD,
    GIT_HOOKS,
    HIDDEN_IN_HOME,
    READONLY_IN_TREE,
    Guard,
)


def _git_folders(tree: Path) -> list[Path]:
    """The git folders of the repository at `tree`: its `.git`, or for a worktree (a `.git`
    file) the folder it names and that folder's common one."""
    dot_git = tree / ".git"
    if dot_git.is_dir():
        # A submodule's git folder lies in the parent's `.git/modules/<name>`: its hooks run
        # as soon as the owner works in the submodule. A worktree's lies in
        # `.git/worktrees/<name>`, wherever the worktree is (outside every root too): its
        # `commondir`, repointed, would move `config` and `hooks` to a folder of the call's.
        worktrees: list[Path] = []
        with contextlib.suppress(OSError), os.scandir(dot_git / "worktrees") as entries:
            worktrees = sorted(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
        return [dot_git, *_modules(dot_git), *worktrees]
    try:
        line = dot_git.read_text(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        return []
    if not line.startswith("gitdir:"):
        return []
    gitdir = (tree / line.removeprefix("gitdir:").strip()).resolve()
    found = [gitdir]
    with contextlib.suppress(OSError, IndexError):
        common = (gitdir / "commondir").read_text().splitlines()[0].strip()
        found.append((gitdir / common).resolve())
    return found


# How deep submodules' git folders are looked for in a `.git/modules`: a name is the
# submodule's path by default (`third_party/lib/x` is three folders), and a submodule's own
# submodules lie in its `modules/`. And how many folders of it one call may look at.
MODULES_DEPTH = 6
MODULES_BUDGET = 500


def _modules(gitdir: Path) -> list[Path]:
    """The submodules' git folders in `gitdir/modules`, at any depth of their names and
    nested (a folder holding `HEAD` is one, with its own `modules/`; any other is a part
    of a name), breadth first within `MODULES_DEPTH` levels and `MODULES_BUDGET` folders."""
    found: list[Path] = []
    level, budget = [gitdir / "modules"], MODULES_BUDGET
    for _depth in range(MODULES_DEPTH):
        below: list[Path] = []
        for folder in level:
            with contextlib.suppress(OSError), os.scandir(folder) as entries:
                for entry in entries:
                    budget -= 1
                    if budget < 0:
                        return sorted(found)
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    if os.path.lexists(f"{entry.path}/HEAD"):
                        found.append(Path(entry.path))
                        below.append(Path(entry.path) / "modules")
                    else:
                        below.append(Path(entry.path))
        level = sorted(below)
    return sorted(found)


# How far below a root repositories are looked for (`~/code/org/repo` is three levels), and
# how many folder entries one call may look at: a per-call cost, bounded.
SEARCH_DEPTH = 3
SEARCH_BUDGET = 20_000
# Folders that hold no repository of the owner's and may be huge.
_NOT_SEARCHED = frozenset({"node_modules", "__pycache__", "site-packages", "target"})


def _is_bare(folder: str) -> bool:
    """Whether `folder` is a bare repository (`git init --bare`, a push's target): git takes
    a folder holding `HEAD`, `config` and `objects/` for one, and runs its hooks at a push.
    `HEAD` first: most folders have none, and one look settles them."""
    if not os.path.lexists(f"{folder}/HEAD"):
        return False
    top = Path(folder)
    return (top / "HEAD").is_file() and (top / "config").is_file() and (top / "objects").is_dir()


def _search(root: Path, depth: int = SEARCH_DEPTH) -> tuple[list[Path], list[Path]]:
    """The repositories up to `depth` levels inside `root` (a `.git` folder or file in
    them), and the bare repositories at the same depths, breadth first: all of those one
    level in, the deeper ones within `SEARCH_BUDGET` entries (a call that makes that many
    folders can hide a deeper one from the next calls). Hidden folders are checked but not
    entered (`~/.cache`, `~/.local` would eat the budget), nor are repositories."""
    found: list[Path] = []
    bare: list[Path] = []
    level, budget = [root], SEARCH_BUDGET
    for level_depth in range(depth):
        below: list[Path] = []
        for folder in level:
            with contextlib.suppress(OSError), os.scandir(folder) as entries:
                for entry in entries:
                    # The root's own entries are all looked at, whatever their number: a
                    # call that fills the root with folders must not unguard the
                    # repositories in it.
                    budget -= level_depth > 0
                    if budget < 0:
                        return sorted(found), sorted(bare)
                    if entry.name == ".git" or not entry.is_dir(follow_symlinks=False):
                        continue
                    if os.path.lexists(f"{entry.path}/.git"):
                        found.append(Path(entry.path))
                    elif _is_bare(entry.path):
                        bare.append(Path(entry.path))
                    elif not entry.name.startswith(".") and entry.name not in _NOT_SEARCHED:
                        below.append(Path(entry.path))
        level = sorted(below)
    return sorted(found), sorted(bare)


def _repositories(root: Path) -> list[Path]:
    """The repositories up to `SEARCH_DEPTH` levels inside `root` (`_search`)."""
    return _search(root)[0]


def trees(roots: Iterable[Path], workdir: Path) -> tuple[list[Path], list[Path]]:
    """The folders whose `.git/hooks`, `.git/config` and editor folders are kept read-only:
    each root, the workdir, the repository the workdir is in, each repository up to
    `SEARCH_DEPTH` levels inside a root (within a budget: a per-call cost on every call)
    and each one level inside the workdir and its repository (a `git init
    --separate-git-dir` or a worktree made there); the file tools refuse writing them at
    any depth. And the bare repositories at the same places, whose hooks a push runs."""
    found: list[Path] = []
    bare: list[Path] = []
    canonical_roots = []
    for root in roots:
        with contextlib.suppress(OSError):
            canonical_roots.append(canonicalize(root.expanduser()))
    for root in canonical_roots:
        found.append(root)
        repositories, bare_ones = _search(root)
        found += repositories
        bare += bare_ones
    with contextlib.suppress(OSError):
        here = canonicalize(workdir)
        found.append(here)
        tops = [here]
        for parent in [here, *here.parents]:
            if not any(within(PurePosixPath(parent), PurePosixPath(r)) for r in canonical_roots):
                break
            if (parent / ".git").exists():
                found.append(parent)
                tops.append(parent)
                break
        # The search enters no repository; the one the owner works in is looked into a
        # level deep (one folder read), unless a root's search already did.
        for top in dict.fromkeys(t for t in tops if t not in canonical_roots):
            repositories, bare_ones = _search(top, depth=1)
            found += repositories
            bare += bare_ones
    return list(dict.fromkeys(found)), list(dict.fromkeys(bare))


def guards_for(home: Path, roots: Iterable[Path], workdir: Path) -> list[tuple[Path, Guard]]:
    """Every read-only guard of one call, as paths: the home's, and each tree's."""
    paths = list(_under_home(home, hidden=False))
    found, bare = trees(roots, workdir)
    for top in [home, *found]:
        if not os.path.lexists(top / ".git"):
            # A repository made of the home, a root or the workdir would rule, with its
            # config and hooks, every git call in a folder below that is in no repository
            # of its own (a shell prompt runs one at every `cd`): watched, never made by a
            # call. So would a bare repository made of the folder itself (`HEAD`,
            # `objects/`, `refs/` and a `config` with a `core.pager`): git looks for one in
            # every folder it walks up through. Without its `HEAD` it is none.
            paths.append((top / ".git", Guard(".git", True, placeholder=False)))
            paths.append((top / BARE_HEAD.path, BARE_HEAD))
    configs: list[tuple[Path, list[Path]]] = [(c, found) for c in home_configs(home)]
    for tree in found:
        if (tree / ".git").is_file():
            # The pointer to the git folder (a separate git dir, a worktree, a submodule):
            # pointed at a git folder of the call's, its config and hooks would rule.
            paths.append((tree / ".git", Guard(".git", False, False)))
        for gitdir in _git_folders(tree):
            configs += [(gitdir / "config", [tree]), (gitdir / "config.worktree", [tree])]
            paths += _git_folder_guards(gitdir)
        paths += [(tree / g.path, g) for g in READONLY_IN_TREE if not g.path.startswith(".git/")]
    for gitdir in bare:
        # A push to it runs its `pre-receive`, `update` and `post-receive` hooks.
        configs.append((gitdir / "config", [gitdir]))
        paths += _git_folder_guards(gitdir)
    # What those configs include, and the hooks folders they name, wherever they lie.
    for named in config_named(home, configs, keep=[home, *found]):
        paths.append((Path(named.path), Guard(str(named.path), named.is_dir, placeholder=False)))
    return paths


def _git_folder_guards(gitdir: Path) -> list[tuple[Path, Guard]]:
    """The guards of one git folder (a `.git`, a separate or bare one): what git runs or
    obeys from it."""
    return [
        (gitdir / "hooks", GIT_HOOKS),
        (gitdir / "config", Guard(".git/config", False, False)),
        # A worktree's own settings, read when the config sets `extensions.worktreeConfig`.
        (gitdir / "config.worktree", Guard(".git/config.worktree", False, False)),
        # Git reads `commondir` in every git folder, not only a worktree's: a planted one
        # moves `config` (an fsmonitor command) and `hooks` to a folder of the call's.
        (gitdir / "commondir", Guard(".git/commondir", False, False)),
    ]


class Canonical:
    """`canonicalize` for the many paths of one call, each file system object looked up
    once: the guards of one call share most of their parents (a repository's five guards,
    the home's hundreds under `~/.config` and `~/.local/share`).

    The looked-up state is a snapshot: `forget` drops it when the call's own planning
    changed the disk (a placeholder made). Paths are handled as strings; `pathlib` objects
    cost more than the `lstat` under them.
    """

    def __init__(self) -> None:
        # `lstat` of each spelling asked; None: nothing there (ENOENT, ENOTDIR).
        self._stats: dict[str, os.stat_result | None] = {}
        # `canonicalize` of each spelling asked, as a string.
        self._reals: dict[str, str] = {}
        self._links: dict[str, tuple[tuple[Path, str], ...]] = {}

    def forget(self) -> None:
        """Drop every lookup: something was created on disk since."""
        self._stats.clear()
        self._reals.clear()
        self._links.clear()

    def _lstat(self, spelled: str) -> os.stat_result | None:
        try:
            return self._stats[spelled]
        except KeyError:
            pass
        try:
            st: os.stat_result | None = os.lstat(spelled)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        # Other errors (a loop, no permission) are raised, and not kept: each asker sees them.
        self._stats[spelled] = st
        return st

    def _exists(self, spelled: str) -> bool:
        # `os.path.lexists`: any error means no.
        try:
            return self._lstat(spelled) is not None
        except OSError:
            return False

    def real(self, spelled: str) -> str:
        """`canonicalize` of an absolute, normalised path, as a string.

        A folder that is no link is its canonical parent plus its name, and so is a path
        that does not exist (`canonicalize` keeps a missing tail as spelled); only a link
        is followed, by `canonicalize` itself. So each folder on the way is resolved once
        per call, not once per path below it.
        """
        known = self._reals.get(spelled)
        if known is not None:
            return known
        if spelled == "/" or not spelled.startswith("/") or spelled.startswith("//"):
            # The root, and spellings the split below does not model (relative, `//`).
            real = str(canonicalize(Path(spelled)))
        else:
            st = self._lstat(spelled)
            if st is not None and S_ISLNK(st.st_mode):
                real = str(canonicalize(Path(spelled)))
            else:
                parent, _, name = spelled.rpartition("/")
                above = self.real(parent or "/")
                real = f"{above}/{name}" if above != "/" else f"/{name}"
        self._reals[spelled] = real
        return real

    def lookup(self, path: Path) -> tuple[Path, bool]:
        """The canonical path and whether something (a link included) is there."""
        real, exists = self.find(os.path.normpath(path))
        return Path(real), exists

    def find(self, spelled: str) -> tuple[str, bool]:
        """`lookup` of a normalised spelling, as strings: a link is followed to its end;
        anything else is its name in its folder's canonical form."""
        st = self._lstat(spelled)
        if st is not None and S_ISLNK(st.st_mode):
            real = self.real(spelled)
            return real, self._exists(real)
        if not spelled.startswith("/") or spelled.startswith("//"):
            # Spellings `real` does not split (relative, `//`): as `pathlib` splits them.
            path = Path(spelled)
            return str(canonicalize(path.parent) / path.name), st is not None
        parent, _, name = spelled.rpartition("/")
        folder = self.real(parent or "/")
        if not name:
            return folder, st is not None
        return (f"{folder}/{name}" if folder != "/" else f"/{name}"), st is not None

    def links_to(self, path: str | os.PathLike[str]) -> list[tuple[Path, str]]:
        """The symbolic links on the way to `path`, itself included, each as (where the
        link is, canonical; its target as written): the mounts land on the targets, so a
        link could be swapped for a folder of the call's own."""
        return list(self._links_to(os.path.normpath(path)))

    def _links_to(self, spelled: str) -> tuple[tuple[Path, str], ...]:
        # Memoised per folder: a call's guards share nearly all of their ancestors.
        known = self._links.get(spelled)
        if known is not None:
            return known
        parent, _, name = spelled.rpartition("/")
        found = self._links_to(parent or "/") if name else ()
        with contextlib.suppress(OSError):
            st = self._lstat(spelled) if name else None
            if st is not None and S_ISLNK(st.st_mode):
                where = self.lookup(Path(parent or "/"))[0] / name
                found = ((where, str(Path(spelled).readlink())), *found)
        self._links[spelled] = found
        return found


# The same few hundred guard paths are planned on every call: their pure forms (no disk in
# them) are kept rather than parsed again, parts and all.
_pure = functools.lru_cache(maxsize=4096)(PurePosixPath)


def _inside(path: str, root: str) -> bool:
    """`within` for canonical paths as strings (absolute, normalised, one leading slash)."""
    return path == root or path.startswith(root if root.endswith("/") else f"{root}/")


def placeholders(
    guards: Iterable[tuple[Path, Guard]],
    roots: Iterable[Path],
    canonical: Canonical | None = None,
) -> tuple[list[PurePosixPath], list[PurePosixPath], list[tuple[PurePosixPath, str]]]:
    """Make ready the guards inside a writable root: an existing one stays as it is, a
    missing folder whose empty form is harmless is created empty (bubblewrap mounts only
    over what exists). Returns the guards that exist now (canonical), the missing ones to
    watch, and the guards that are symbolic links inside a root with their targets: the
    mount lands on the target, so the link itself could be replaced (`restore_links`).
    `canonical`: the call's lookups, shared with its other plans."""
    canonical_roots = []
    for root in roots:
        with contextlib.suppress(OSError):
            canonical_roots.append(str(canonicalize(root.expanduser())))

    def in_root(path: str) -> bool:
        return any(_inside(path, r) for r in canonical_roots)

    if canonical is None:
        canonical = Canonical()
    existing: list[PurePosixPath] = []
    watched: list[PurePosixPath] = []
    links: list[tuple[PurePosixPath, str]] = []
    # One entry per path, in the order first named, the guard last named (as `dict` of the
    # pairs does); keyed by spelling, which is cheaper to hash than the path.
    unique = {os.fspath(path): guard for path, guard in guards}
    for spelled_as, guard in unique.items():
        try:
            spelled = os.path.normpath(spelled_as)
            real, exists = canonical.find(spelled)
            on_the_way = canonical.links_to(spelled)
        except (OSError, ValueError):
            continue
        links += [(_pure(str(at)), target) for at, target in on_the_way if in_root(str(at))]
        if exists:
            existing.append(_pure(real))
            continue
        if not in_root(real):
            continue
        if not guard.placeholder:
            watched.append(_pure(real))
            continue
        made = Path(real)
        try:
            made.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if guard.is_dir:
                made.mkdir(mode=0o700)
            else:
                os.close(os.open(made, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
            existing.append(PurePosixPath(made))
        except OSError:
            # Another process made it meanwhile (fine: it exists), or the folder is not
            # writable (then no command can create it either).
            if os.path.lexists(made):
                existing.append(PurePosixPath(made))
        finally:
            # The disk changed under what was looked up.
            canonical.forget()
    return existing, watched, links


def hidden_placeholders(home: Path) -> list[tuple[Path, Guard]]:
    """The credential stores, as guards: a missing one inside a root is watched, since a
    command could plant one there (an `.ssh/authorized_keys`, an `.npmrc` that runs a
    script)."""
    return list(_under_home(home, hidden=True))


@functools.lru_cache(maxsize=16)
def _under_home(home: Path, *, hidden: bool) -> tuple[tuple[Path, Guard], ...]:
    # The paths of the home's guards (the hidden ones, or the read-only ones): spelling
    # only, no disk. Every call asks, and a few hundred `Path`s cost more than the lookups
    # they lead to.
    guards = HIDDEN_IN_HOME if hidden else home_guards()
    return tuple((home / g.path, g) for g in guards)


def quarantine(watched: Iterable[PurePosixPath], stamp: str) -> list[Path]:
    """Move aside what a call created at a watched path (one that runs later outside the
    sandbox and could not be masked); the paths moved. Runs after the call: nothing of the
    sandbox is left to race with."""
    moved: list[Path] = []
    for path in map(Path, watched):
        try:
            if not os.path.lexists(path) or canonicalize(path.parent) != path.parent:
                # Absent; or a folder on the way became a link, and the rename would land
                # wherever the call pointed it: the path is not where it was watched.
                continue
            target = path.with_name(f"{path.name}.quarantined-{stamp}-{secrets.token_hex(3)}")
            path.rename(target)
        except OSError:
            continue
        moved.append(target)
    return moved


def restore_links(links: Iterable[tuple[PurePosixPath, str]], stamp: str) -> list[Path]:
    """Put back each guarded symbolic link a call replaced (a dotfile kept elsewhere, as
    GNU Stow does it: `rm ~/.bashrc; echo … > ~/.bashrc` replaces the link, not its
    read-only target); what the call left there is moved aside. The links put back."""
    restored: list[Path] = []
    for path, target in links:
        where = Path(path)
        try:
            if where.is_symlink() and str(where.readlink()) == target:
                continue
            if canonicalize(where.parent) != where.parent:
                continue
            if os.path.lexists(where):
                where.rename(
                    where.with_name(f"{where.name}.quarantined-{stamp}-{secrets.token_hex(3)}")
                )
            where.symlink_to(target)
        except OSError:
            continue
        restored.append(where)
    return restored


def note_watched(
    folder: Path, watched: Iterable[PurePosixPath], links: Iterable[tuple[PurePosixPath, str]]
) -> Path:
    """Write down the paths one call watches and the links it must leave alone, so that a
    restart after a crash mid-call can still undo what it planted (`recover_watched`); the
    note, removed after the call."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    note = folder / f"call-{secrets.token_hex(6)}"
    fd = os.open(note, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        body = {"watched": [str(p) for p in watched], "links": [[str(p), t] for p, t in links]}
        out.write(json.dumps(body))
        out.flush()
        os.fsync(out.fileno())
    return note


def recover_watched(folder: Path, stamp: str) -> list[Path]:
    """At start: the notes of calls that never finished (the daemon died mid-call); what lies
    at their watched paths now is moved aside and their links put back, as the call's end
    would have done. The paths changed."""
    changed: list[Path] = []
    with contextlib.suppress(FileNotFoundError):
        for note in sorted(folder.glob("call-*")):
            with contextlib.suppress(OSError, ValueError, TypeError):
                body = json.loads(note.read_text())
                changed += quarantine(map(PurePosixPath, body["watched"]), stamp)
                links = [(PurePosixPath(p), str(t)) for p, t in body["links"]]
                changed += restore_links(links, stamp)
                note.unlink()
    return changed
