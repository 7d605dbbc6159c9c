"""The sandbox plan of one call, made fast, decides exactly as the plain definition does.

`Canonical` (guards.py) looks each file system object up once per call and works on
strings; `placeholders`, `survey` and `spec_for` share one. Their plain definitions are
kept here as the oracle: every path looked up on its own with `canonicalize`, every link on
the way found by `lstat` of each ancestor, fresh for every path (as the code did before
it was made fast). Both run over generated home trees (links to folders and files,
dangling links, loops, relative targets with `..`, folders that are files, case variants,
hard links, repositories, worktrees, submodules), and must agree on every lookup, on the
whole spec and on what they create on disk.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from stat import S_ISDIR, S_ISLNK

import pytest

from dispatch_matrix.core.paths import canonicalize, within
from dispatch_matrix.sandbox import spec as spec_module
from dispatch_matrix.sandbox.guards import (
    Canonical,
    _inside,
    guards_for,
    hidden_placeholders,
)
from dispatch_matrix.sandbox.host import _interpreter_paths, default_hidden, spec_for
from dispatch_matrix.sandbox.spec import Hidden, SandboxSpec, plan
from dispatch_matrix.sandbox.wall import home_guards
from dispatch_matrix.sandbox.wall_paths import HIDDEN_IN_HOME, READONLY_IN_TREE, Guard

# --- the oracle: the plain definitions ---------------------------------------------------


def ref_lookup(path: Path) -> tuple[Path, bool]:
    """The canonical path and whether something is there, looked up on its own."""
    path = Path(os.path.normpath(path))
    try:
        st: os.stat_result | None = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        st = None
    if st is not None and S_ISLNK(st.st_mode):
        real = canonicalize(path)
        return real, os.path.lexists(real)
    return canonicalize(path.parent) / path.name, st is not None


def ref_links_to(path: Path) -> list[tuple[Path, str]]:
    """The links on the way to `path`, itself first, each ancestor asked on its own."""
    spelled = os.path.normpath(path)
    found: list[tuple[Path, str]] = []
    while True:
        parent, _, name = spelled.rpartition("/")
        if not name:
            return found
        with contextlib.suppress(OSError):
            if S_ISLNK(os.lstat(spelled).st_mode):
                where = ref_lookup(Path(parent or "/"))[0] / name
                found.append((where, str(Path(spelled).readlink())))
        spelled = parent or "/"


def ref_placeholders(
    guards: Iterable[tuple[Path, Guard]], roots: Iterable[Path]
) -> tuple[list[Path], list[Path], list[tuple[Path, str]]]:
    canonical_roots = []
    for root in roots:
        with contextlib.suppress(OSError):
            canonical_roots.append(PurePosixPath(canonicalize(root.expanduser())))

    def in_root(path: Path) -> bool:
        return any(within(PurePosixPath(path), r) for r in canonical_roots)

    existing: list[Path] = []
    watched: list[Path] = []
    links: list[tuple[Path, str]] = []
    for path, guard in dict(guards).items():
        try:
            real, exists = ref_lookup(path)
            links += [(link, target) for link, target in ref_links_to(path) if in_root(link)]
        except (OSError, ValueError):
            continue
        if exists:
            existing.append(real)
            continue
        if not in_root(real):
            continue
        if not guard.placeholder:
            watched.append(real)
            continue
        try:
            real.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if guard.is_dir:
                real.mkdir(mode=0o700)
            else:
                os.close(os.open(real, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
            existing.append(real)
        except OSError:
            if os.path.lexists(real):
                existing.append(real)
    return existing, watched, links


def ref_survey(paths: Iterable[Path]) -> list[Hidden]:
    found: list[Hidden] = []
    for path in paths:
        try:
            real, exists = ref_lookup(path.expanduser())
            if not exists:
                continue
            st = real.stat()
        except (OSError, ValueError):
            continue
        found.append(Hidden(PurePosixPath(real), S_ISDIR(st.st_mode), st.st_nlink))
    return found


def ref_spec_for(
    roots: Iterable[Path],
    hidden: Iterable[Path],
    env: Mapping[str, str],
    workdir: Path,
    readonly: Iterable[Path],
    home: Path,
) -> SandboxSpec:
    roots = list(roots)
    canonical_roots = []
    for root in roots:
        with contextlib.suppress(OSError):
            canonical_roots.append(PurePosixPath(canonicalize(root.expanduser())))
    guards: list[tuple[Path, Guard]] = [(p, Guard(str(p), True, False)) for p in readonly]
    hidden = list(hidden)
    secret_guards = [(p.expanduser(), Guard(str(p), True, False)) for p in hidden]
    guards += guards_for(home, roots, workdir)
    secret_guards += hidden_placeholders(home)
    _found, watched_hidden, hidden_links = ref_placeholders(secret_guards, roots)
    existing, watched, links = ref_placeholders(guards, roots)
    return plan(
        canonical_roots,
        ref_survey(hidden),
        env,
        True,
        PurePosixPath("/tmp"),
        PurePosixPath(canonicalize(workdir)),
        readonly=[*_interpreter_paths(), *map(PurePosixPath, existing)],
        watched=[PurePosixPath(p) for p in [*watched, *watched_hidden]],
        links=[(PurePosixPath(p), target) for p, target in [*links, *hidden_links]],
    )


def ref_outermost(paths: Iterable[PurePosixPath]) -> list[PurePosixPath]:
    kept: list[PurePosixPath] = []
    for path in sorted(set(paths), key=lambda p: (len(p.parts), str(p))):
        if not any(within(path, k) for k in kept):
            kept.append(path)
    return kept


# --- the generated trees -----------------------------------------------------------------

_GUARDED = sorted(
    {g.path for g in (*HIDDEN_IN_HOME, *home_guards("linux"), *home_guards("darwin"))}
)
_PARENTS = sorted({p.rsplit("/", 1)[0] for p in _GUARDED if "/" in p})


def _case_variant(rel: str, rng: random.Random) -> str:
    head, _, name = rel.rpartition("/")
    flipped = name.upper() if rng.random() < 0.5 else name.capitalize()
    return f"{head}/{flipped}" if head else flipped


def _put(path: Path, kind: str, rng: random.Random, base: Path) -> None:
    """Make `path` one kind of thing; its folders as plain folders unless already there."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if kind == "file":
            path.write_text("x\n")
        elif kind == "dir":
            path.mkdir(exist_ok=True)
        elif kind == "link-dir":
            target = base / "elsewhere" / f"d{rng.randrange(10**6)}"
            target.mkdir(parents=True, exist_ok=True)
            path.symlink_to(target if rng.random() < 0.5 else os.path.relpath(target, path.parent))
        elif kind == "link-file":
            target = base / "home" / f"dotfiles/f{rng.randrange(10**6)}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("y\n")
            path.symlink_to(os.path.relpath(target, path.parent))
        elif kind == "dangling":
            path.symlink_to(rng.choice(["nowhere/x", "../gone", str(base / "missing" / "m")]))
        elif kind == "loop":
            twin = path.with_name(path.name + ".twin")
            path.symlink_to(twin.name)
            twin.symlink_to(path.name)
        elif kind == "odd-spelling":
            # Targets that `pathlib` spells otherwise: `./`, doubled and trailing slashes.
            (base / "elsewhere" / "odd").mkdir(parents=True, exist_ok=True)
            path.symlink_to(rng.choice([f"./{base}//elsewhere/odd/", "./../", "x//y/"]))
        elif kind == "self":
            path.symlink_to(path.name)
        elif kind == "dotdot":
            # A relative target through a link and back up: `..` after a link.
            hop = path.parent / "hop"
            with contextlib.suppress(OSError):
                hop.symlink_to(base / "elsewhere")
            (base / "elsewhere" / "deep").mkdir(parents=True, exist_ok=True)
            path.symlink_to("hop/deep/../deep")
        elif kind == "hardlink":
            path.write_text("secret\n")
            os.link(path, base / "elsewhere" / f"h{rng.randrange(10**6)}")


def build_tree(base: Path, seed: int) -> dict[str, object]:
    """A home folder at `base/home` from `seed`, and the call's roots, workdir and hidden."""
    rng = random.Random(seed)
    home = base / "home"
    home.mkdir(parents=True)
    (base / "elsewhere").mkdir()
    # Some parents are links, files or dangling: their children are found through them.
    for parent in rng.sample(_PARENTS, k=min(len(_PARENTS), rng.randrange(0, 6))):
        kind = rng.choice(["link-dir", "file", "dangling", "dir", "loop", "dotdot"])
        _put(home / parent, kind, rng, base)
    kinds = ["file", "dir", "link-dir", "link-file", "dangling", "loop", "self", "dotdot"]
    kinds += ["hardlink", "odd-spelling"]
    for rel in rng.sample(_GUARDED, k=rng.randrange(20, 80)):
        if rng.random() < 0.1:
            rel = _case_variant(rel, rng)
        _put(home / rel, rng.choice(kinds), rng, base)
    repos = [home / f"proj{i}" for i in range(rng.randrange(0, 4))]
    repos += [home / "src" / f"lib{i}" for i in range(rng.randrange(0, 3))]
    for repo in repos:
        (repo / ".git" / "refs").mkdir(parents=True)
        (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
        for guard in READONLY_IN_TREE:
            if rng.random() < 0.3:
                _put(repo / guard.path, rng.choice(kinds), rng, base)
        if rng.random() < 0.3:
            module = repo / ".git" / "modules" / "sub"
            module.mkdir(parents=True)
            (module / "HEAD").write_text("ref: refs/heads/main\n")
            (repo / "sub").mkdir()
            (repo / "sub" / ".git").write_text("gitdir: ../.git/modules/sub\n")
    if repos and rng.random() < 0.5:
        gitdir = repos[0] / ".git" / "worktrees" / "w"
        gitdir.mkdir(parents=True)
        (gitdir / "commondir").write_text("../..\n")
        (home / "wt").mkdir()
        (home / "wt" / ".git").write_text(f"gitdir: {gitdir}\n")
    if rng.random() < 0.3:
        (home / "linked-proj").symlink_to(home / "proj0" if repos else base / "elsewhere")
    state = base / "state" if rng.random() < 0.5 else home / ".local/state/dm"
    _put(state, "dir", rng, base)
    config = state / "config.toml"
    with contextlib.suppress(OSError):  # the state folder may lie behind a loop
        config.write_text("[matrix]\n")
    roots = rng.choice([[home], [home, base / "elsewhere"], [home / "proj0"], [home / "src"]])
    workdir = rng.choice([home, *repos, home / "wt"])
    if not workdir.is_dir():
        workdir = home
    hidden = [state, config, home / ("n" * 300), *default_hidden(home, os.getuid())]
    readonly = [home / ".bashrc", base / "elsewhere" / "installed"]
    return {"home": home, "roots": roots, "workdir": workdir, "hidden": hidden, "ro": readonly}


def snapshot(base: Path) -> list[tuple[str, str]]:
    """What is on disk under `base`: each entry's path, kind and link target."""
    found = []
    for folder, dirs, files in os.walk(base):
        for name in sorted([*dirs, *files]):
            path = Path(folder, name)
            kind = "link:" + str(path.readlink()) if path.is_symlink() else str(path.is_dir())
            found.append((str(path.relative_to(base)), kind))
    return sorted(found)


def probes(base: Path) -> list[Path]:
    """Paths to look up: everything in the tree, each guard of the home, a child of each,
    and spellings with `.`, `..` and doubled slashes."""
    home = base / "home"
    found = [base, home, *(home / rel for rel in _GUARDED)]
    for folder, dirs, files in os.walk(base):
        for name in [*dirs, *files]:
            found += [Path(folder, name), Path(folder, name, "child")]
    found += [Path(f"{home}/./.config/../.ssh"), Path(f"/{home}/.ssh"), Path("/"), Path("/tmp")]
    # A name too long for the file system: `lstat` fails with neither ENOENT nor ENOTDIR.
    found += [home / ("n" * 300), home / ".config" / ("n" * 300) / "x"]
    return found


SEEDS = range(40)


@pytest.mark.parametrize("seed", SEEDS)
def test_lookups_agree_with_the_plain_definition(tmp_path: Path, seed: int) -> None:
    build_tree(tmp_path, seed)
    canonical = Canonical()
    for path in probes(tmp_path):
        try:
            expected: object = (ref_lookup(path), ref_links_to(path))
        except (OSError, ValueError) as err:
            expected = type(err)
        try:
            got: object = (canonical.lookup(path), canonical.links_to(path))
        except (OSError, ValueError) as err:
            got = type(err)
        assert got == expected, path


def test_relative_and_double_slash_spellings_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_tree(tmp_path, 7)
    monkeypatch.chdir(tmp_path / "home")
    canonical = Canonical()
    spellings = [".", "..", ".ssh", ".config/gh", "proj0/.git/hooks", "nope/x", "//", "//tmp"]
    for spelled in spellings:
        path = Path(spelled)
        assert canonical.lookup(path) == ref_lookup(path), spelled
        assert canonical.links_to(path) == ref_links_to(path), spelled


@pytest.mark.parametrize("seed", SEEDS)
def test_the_whole_plan_agrees_with_the_plain_definition(tmp_path: Path, seed: int) -> None:
    """Same tree at the same place, planned by the oracle, then (rebuilt) by the code:
    the same spec, and the same placeholders made on disk."""
    base = tmp_path / "t"
    outcomes = []
    for planner in ("oracle", "code"):
        call = build_tree(base, seed)
        home, roots, workdir = call["home"], call["roots"], call["workdir"]
        hidden, readonly = call["hidden"], call["ro"]
        assert isinstance(home, Path) and isinstance(workdir, Path)
        assert isinstance(roots, list) and isinstance(hidden, list) and isinstance(readonly, list)
        env = {"PATH": "/usr/bin"}
        if planner == "oracle":
            got = ref_spec_for(roots, hidden, env, workdir, readonly, home)
        else:
            got = spec_for(roots, hidden, env, True, workdir, readonly=readonly, home=home)
        outcomes.append((got, snapshot(base)))
        shutil.rmtree(base)
    assert outcomes[0] == outcomes[1]


def test_the_generated_trees_reach_the_cases(tmp_path: Path) -> None:
    """The trees hold what the comparison is about: links on the way that are loops,
    dangling or through `..`, case variants, hard-linked secrets, placeholders to make."""
    seen: set[str] = set()
    for seed in SEEDS:
        base = tmp_path / str(seed)
        call = build_tree(base, seed)
        for folder, dirs, files in os.walk(base):
            for name in [*dirs, *files]:
                path = Path(folder, name)
                if path.is_symlink():
                    target = str(path.readlink())
                    seen.add("link")
                    seen |= {"loop"} if name.endswith(".twin") else set()
                    seen |= {"dotdot"} if ".." in target else set()
                    seen |= {"dangling"} if not path.exists() else set()
                elif path.is_file() and path.stat().st_nlink > 1:
                    seen.add("hardlink")
                if name != name.lower() and name.lower() in {g.lower() for g in _GUARDED}:
                    seen.add("case")
        home = call["home"]
        assert isinstance(home, Path)
        spec = spec_for([home], [], {}, True, home, home=home)
        seen |= {"watched"} if spec.watched else set()
        seen |= {"links"} if spec.links else set()
    assert seen >= {"link", "loop", "dotdot", "dangling", "hardlink", "case", "watched", "links"}


# --- the pure parts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "root"),
    [
        ("/a/b", "/a"),
        ("/a", "/a"),
        ("/ab", "/a"),
        ("/a", "/a/b"),
        ("/", "/"),
        ("/x/y", "/"),
        ("/a/b/c", "/a/b"),
        ("/a/bc/d", "/a/b"),
        ("/home/u/.config", "/home/u/.conf"),
    ],
)
def test_inside_is_within_for_canonical_paths(path: str, root: str) -> None:
    assert _inside(path, root) == within(PurePosixPath(path), PurePosixPath(root))


@pytest.mark.parametrize("seed", range(200))
def test_outermost_keeps_what_no_other_path_holds(seed: int) -> None:
    rng = random.Random(seed)
    names = ["a", "b", "ab", ".config", "c"]
    paths = [
        PurePosixPath("/" + "/".join(rng.choice(names) for _ in range(rng.randrange(1, 5))))
        for _ in range(rng.randrange(0, 40))
    ]
    assert spec_module._outermost(paths) == ref_outermost(paths)


@pytest.mark.parametrize("seed", range(200))
def test_under_is_within_one_of_the_folders(seed: int) -> None:
    rng = random.Random(seed)
    names = ["a", "b", "ab", ".config", "c"]

    def some_path() -> PurePosixPath:
        return PurePosixPath("/" + "/".join(rng.choice(names) for _ in range(rng.randrange(0, 5))))

    folders = [some_path() for _ in range(rng.randrange(0, 8))]
    under = spec_module._Under(folders)
    for path in [some_path() for _ in range(30)]:
        assert under(path) == any(within(path, f) for f in folders), (path, folders)
