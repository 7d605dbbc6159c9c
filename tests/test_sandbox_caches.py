"""The sandbox's own package caches (sandbox/caches.py): the owner's cargo, Go, npm, Maven
and pre-commit caches are read-only to shell calls (code planted there runs at the owner's
next build), so a call that fetches a dependency writes to the sandbox's cache instead.
The decision is table-tested; cargo is run for real under bubblewrap, fetching a git
dependency over `file://` (no network needed) into the sandbox's cache where, without it,
it fails on the read-only home."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import pytest

from dispatch_matrix.app.agent_kit import build_tools
from dispatch_matrix.app.config import load_config
from dispatch_matrix.core.errors import ToolError
from dispatch_matrix.sandbox.caches import FOLDER, cache_env, default_folder, ensure
from dispatch_matrix.sandbox.host import Confinement
from dispatch_matrix.toolbox.base import ToolContext, ToolResult
from dispatch_matrix.toolbox.registry import ToolRegistry
from dispatch_matrix.toolbox.shell import BashTool

CACHE = PurePosixPath("/home/o/.cache/dispatch-matrix/sandbox")
ROOTS = (PurePosixPath("/home/o/work"),)
ALL_ON = {
    "CARGO_HOME": f"{CACHE}/cargo",
    "GOPATH": f"{CACHE}/go",
    "GOMODCACHE": f"{CACHE}/go/pkg/mod",
    "GOCACHE": f"{CACHE}/go-build",
    "PRE_COMMIT_HOME": f"{CACHE}/pre-commit",
    "npm_config_cache": f"{CACHE}/npm",
    "MAVEN_OPTS": f"-Dmaven.repo.local={CACHE}/m2/repository",
}


def but(**changes: str | None) -> dict[str, str]:
    """ALL_ON with some variables changed (None: not set)."""
    found = {**ALL_ON, **changes}
    return {k: v for k, v in found.items() if v is not None}


CASES = [
    # (id, the owner's environment, network, what is set)
    ("nothing-set-network-on", {}, True, ALL_ON),
    # Nothing can be fetched: the owner's read-only caches serve offline builds as before;
    # Go's build cache holds no fetched code and Go cannot build without writing it.
    ("nothing-set-network-off", {}, False, {"GOCACHE": f"{CACHE}/go-build"}),
    (
        "cargo-home-in-a-root-kept",
        {"CARGO_HOME": "/home/o/work/.cargo"},
        True,
        but(CARGO_HOME=None),
    ),
    ("cargo-home-is-the-root-kept", {"CARGO_HOME": "/home/o/work"}, True, but(CARGO_HOME=None)),
    ("cargo-home-read-only-moved", {"CARGO_HOME": "/opt/cargo"}, True, ALL_ON),
    ("cargo-home-relative-moved", {"CARGO_HOME": "work/.cargo"}, True, ALL_ON),
    ("cargo-home-escaping-the-root-moved", {"CARGO_HOME": "/home/o/work/../.cargo"}, True, ALL_ON),
    ("cargo-home-sibling-prefix-moved", {"CARGO_HOME": "/home/o/workshop"}, True, ALL_ON),
    ("cargo-home-empty-moved", {"CARGO_HOME": ""}, True, ALL_ON),
    (
        "go-module-cache-in-a-root-kept",
        {"GOMODCACHE": "/home/o/work/mod", "GOPATH": "/home/o/go"},
        True,
        but(GOMODCACHE=None),
    ),
    ("gocache-in-a-root-network-off", {"GOCACHE": "/home/o/work/gb"}, False, {}),
    (
        "gocache-elsewhere-network-off",
        {"GOCACHE": "/var/gb"},
        False,
        {"GOCACHE": f"{CACHE}/go-build"},
    ),
    (
        "pre-commit-home-in-a-root-kept",
        {"PRE_COMMIT_HOME": "/home/o/work/pc"},
        True,
        but(PRE_COMMIT_HOME=None),
    ),
    # npm reads its variables in any case: the owner's upper-case one counts too.
    (
        "npm-cache-upper-case-in-a-root-kept",
        {"NPM_CONFIG_CACHE": "/home/o/work/n"},
        True,
        but(npm_config_cache=None),
    ),
    (
        "npm-cache-upper-case-elsewhere-both-set",
        {"NPM_CONFIG_CACHE": "/home/o/.npm"},
        True,
        but(NPM_CONFIG_CACHE=f"{CACHE}/npm"),
    ),
    (
        "npm-cache-in-a-root-kept",
        {"npm_config_cache": "/home/o/work/n"},
        True,
        but(npm_config_cache=None),
    ),
    (
        "maven-opts-kept-and-extended",
        {"MAVEN_OPTS": "-Xmx1g"},
        True,
        but(MAVEN_OPTS=f"-Xmx1g -Dmaven.repo.local={CACHE}/m2/repository"),
    ),
    (
        "maven-repo-in-a-root-kept",
        {"MAVEN_OPTS": "-Dmaven.repo.local=/home/o/work/m2"},
        True,
        but(MAVEN_OPTS=None),
    ),
    (
        "maven-repo-elsewhere-overridden-by-a-later-d",
        {"MAVEN_OPTS": "-Dmaven.repo.local=/home/o/.m2/repository"},
        True,
        but(
            MAVEN_OPTS=(
                "-Dmaven.repo.local=/home/o/.m2/repository"
                f" -Dmaven.repo.local={CACHE}/m2/repository"
            )
        ),
    ),
    (
        "maven-network-off-untouched",
        {"MAVEN_OPTS": "-Xmx1g"},
        False,
        {"GOCACHE": f"{CACHE}/go-build"},
    ),
    (
        "everything-in-a-root-nothing-set",
        {
            "CARGO_HOME": "/home/o/work/c",
            "GOPATH": "/home/o/work/g",
            "GOMODCACHE": "/home/o/work/g/pkg/mod",
            "GOCACHE": "/home/o/work/gb",
            "PRE_COMMIT_HOME": "/home/o/work/pc",
            "npm_config_cache": "/home/o/work/n",
            "MAVEN_OPTS": "-Dmaven.repo.local=/home/o/work/m2",
        },
        True,
        {},
    ),
]


@pytest.mark.parametrize(
    ("env", "network", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_which_caches_move(env: dict[str, str], network: bool, expected: dict[str, str]) -> None:
    assert cache_env(env, CACHE, ROOTS, network) == expected


def test_the_folder_is_no_place_the_wall_guards_or_the_owner_reads() -> None:
    from dispatch_matrix.sandbox.spec import CREDENTIAL_PATHS
    from dispatch_matrix.sandbox.wall import home_guards

    home = Path("/home/o")
    folder = default_folder(home)
    assert folder == home / ".cache/dispatch-matrix/sandbox"
    guarded = [
        *CREDENTIAL_PATHS,
        *(g.path for g in home_guards("linux")),
        *(g.path for g in home_guards("darwin")),
    ]
    for rel in guarded:
        assert not folder.is_relative_to(home / rel), rel
        assert not (home / rel).is_relative_to(folder), rel


def test_ensure_makes_the_folders_named(tmp_path: Path) -> None:
    folder = tmp_path / FOLDER
    variables = cache_env({}, PurePosixPath(folder), (), True)
    ensure(folder, variables)
    for sub in ("cargo", "go/pkg/mod", "go-build", "pre-commit", "npm", "m2/repository"):
        assert (folder / sub).is_dir(), sub
    # Again: already there is fine.
    ensure(folder, variables)
    # What lies outside the folder (the owner's own, kept) is not made.
    ensure(folder, {"CARGO_HOME": str(tmp_path / "elsewhere")})
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize(
    ("code", "said"),
    [
        (errno.ENOSPC, "the disk is full"),
        (errno.EDQUOT, "the disk is full"),
        (errno.EACCES, "cannot create"),
    ],
)
def test_ensure_says_why_it_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, said: str
) -> None:
    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code), str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(ToolError) as raised:
        ensure(tmp_path / "cache", {"GOCACHE": str(tmp_path / "cache/go-build")})
    assert said in str(raised.value)
    assert str(tmp_path / "cache") in str(raised.value)


def test_ensure_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache/go-build").write_text("")
    with pytest.raises(ToolError, match="cannot create"):
        ensure(tmp_path / "cache", {"GOCACHE": str(tmp_path / "cache/go-build")})


def test_ensure_refuses_a_link_in_place_of_the_folder(tmp_path: Path) -> None:
    # A call whose root holds ~/.cache could plant it: its target would be bound writable.
    target = tmp_path / "owner-registry"
    target.mkdir()
    (tmp_path / "cache").symlink_to(target)
    with pytest.raises(ToolError, match="is a link"):
        ensure(tmp_path / "cache", {})


# -- for real, under bubblewrap -------------------------------------------------------------


def text(result: ToolResult) -> str:
    return "\n".join(block["text"] for block in result.content if block["type"] == "text")


@dataclass
class Machine:
    home: Path
    # The allowed root, and the cargo project in it (the workdir).
    root: Path
    work: Path

    def context(self, **extra: object) -> ToolContext:
        env = {
            "HOME": str(self.home),
            "PATH": f"{self.home}/.cargo/bin:/root/.cargo/bin:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
        }
        # rustup's proxies find their toolchains here; it is read, never written.
        rustup = os.environ.get("RUSTUP_HOME", str(Path.home() / ".rustup"))
        env["RUSTUP_HOME"] = rustup
        ctx = ToolContext(
            workdir=self.work,
            allowed_roots=(self.root,),
            bash_timeout_s=120,
            env=env,
            guard_home=True,
            readonly_paths=(self.home / ".cargo/registry", self.home / ".cargo/git"),
            sandbox_cache=default_folder(self.home),
        )
        return replace(ctx, **extra)  # type: ignore[arg-type]


@pytest.fixture
def machine() -> Iterator[Machine]:
    # Outside /tmp, which every call sees as a private, empty one: the home must be the
    # owner's, read-only to the call, as it is on a real machine.
    base = Path(tempfile.mkdtemp(prefix="dm-caches-", dir="/var/tmp"))
    home, root = base / "home", base / "home/work"
    work, dep = root / "app", root / "dep"
    # The owner's cargo as rustup leaves it: ~/.cargo with an empty registry.
    (home / ".cargo/registry").mkdir(parents=True)
    (dep / "src").mkdir(parents=True)
    (dep / "Cargo.toml").write_text(
        '[package]\nname = "dep"\nversion = "0.1.0"\nedition = "2021"\n'
    )
    (dep / "src/lib.rs").write_text("pub fn one() -> u8 { 1 }\n")
    git = ["git", "-C", str(dep), "-c", "user.email=o@example.org", "-c", "user.name=o"]
    subprocess.run(["git", "init", "-q", str(dep)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "dep"], check=True)
    (work / "src").mkdir(parents=True)
    (work / "Cargo.toml").write_text(
        '[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n'
        f'[dependencies]\ndep = {{ git = "file://{dep}" }}\n'
    )
    (work / "src/main.rs").write_text('fn main() { println!("{}", dep::one()); }\n')
    yield Machine(home, root, work)
    shutil.rmtree(base, ignore_errors=True)


def needs_cargo() -> None:
    if shutil.which("cargo", path=f"/root/.cargo/bin:{os.environ.get('PATH', '')}") is None:
        pytest.skip("cargo is not installed")


async def sh(confinement: Confinement, ctx: ToolContext, command: str) -> str:
    return text(await ToolRegistry([BashTool(confinement)]).run("bash", {"command": command}, ctx))


async def test_cargo_fetches_a_new_dependency_into_the_sandbox_cache(
    bwrap: Confinement, machine: Machine
) -> None:
    needs_cargo()
    on = replace(bwrap, network=True)
    output = await sh(on, machine.context(), "cargo fetch && echo FETCHED")
    assert "FETCHED" in output, output
    cache = default_folder(machine.home)
    assert any((cache / "cargo/git/db").iterdir()), output
    assert (machine.work / "Cargo.lock").is_file()
    # The owner's own cargo folder got nothing.
    assert sorted(p.name for p in (machine.home / ".cargo").iterdir()) == ["registry"]
    # A later call builds from it, offline.
    output = await sh(on, machine.context(), "cargo run -q --offline")
    assert output.strip().startswith("1"), output


async def test_without_the_sandbox_cache_cargo_meets_the_read_only_home(
    bwrap: Confinement, machine: Machine
) -> None:
    # The everyday failure this fixes, kept as the control row.
    needs_cargo()
    on = replace(bwrap, network=True)
    output = await sh(on, machine.context(sandbox_cache=None), "cargo fetch && echo FETCHED")
    assert "FETCHED" not in output
    assert "Read-only file system" in output, output
    assert not default_folder(machine.home).exists()


async def test_an_explicit_cargo_home_in_a_root_is_kept(
    bwrap: Confinement, machine: Machine
) -> None:
    needs_cargo()
    on = replace(bwrap, network=True)
    ctx = machine.context()
    mine = machine.work / ".cargo-home"
    ctx = replace(ctx, env={**ctx.env, "CARGO_HOME": str(mine)})
    output = await sh(on, ctx, 'echo "home=$CARGO_HOME" && cargo fetch && echo FETCHED')
    assert f"home={mine}" in output and "FETCHED" in output, output
    assert any((mine / "git/db").iterdir())
    assert not (default_folder(machine.home) / "cargo").exists()


@pytest.mark.parametrize("network", [True, False])
async def test_the_call_sees_and_writes_its_caches(
    bwrap: Confinement, machine: Machine, network: bool
) -> None:
    # Go is not installed here: what the call is handed, and that it may write there and
    # not in the owner's module cache.
    (machine.home / "go/pkg/mod").mkdir(parents=True)
    confinement = replace(bwrap, network=network)
    ctx = machine.context(readonly_paths=(machine.home / "go/pkg/mod",))
    command = (
        'echo "mod=$GOMODCACHE build=$GOCACHE"; '
        'mkdir -p "$GOCACHE/x" && echo BUILD-OK; '
        'touch "$GOMODCACHE/m" && echo MOD-OK; '
        "touch ~/go/pkg/mod/m 2>&1"
    )
    output = await sh(confinement, ctx, command)
    cache = default_folder(machine.home)
    assert f"build={cache}/go-build" in output and "BUILD-OK" in output, output
    assert ("MOD-OK" in output) is network, output
    assert (f"mod={cache}/go/pkg/mod" in output) is network, output
    assert "Read-only file system" in output, output
    assert not (machine.home / "go/pkg/mod/m").exists()


async def test_a_folder_the_sandbox_hides_is_not_used(bwrap: Confinement, machine: Machine) -> None:
    # The owner moved the state folder there: hidden wins, the call gets no caches.
    cache = default_folder(machine.home)
    ctx = machine.context(denied_paths=(machine.home / ".cache/dispatch-matrix",))
    output = await sh(replace(bwrap, network=True), ctx, 'echo "go=[$GOCACHE]"')
    assert "go=[]" in output, output
    assert not cache.exists()


def test_the_daemon_hands_the_folder_to_every_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    config_path = tmp_path / "config.toml"
    config_path.write_text(
        '[matrix]\nhomeserver = "http://127.0.0.1:1"\nuser_id = "@bot:localhost"\n'
        'password = "p"\nowners = ["@o:localhost"]\n'
        f'[store]\npath = "{tmp_path / "state"}"\n'
    )
    config = load_config(config_path)
    _policy, _tools, ctx = build_tools(config, home, [home])
    assert ctx.sandbox_cache == home / ".cache/dispatch-matrix/sandbox"
    for path in (*ctx.denied_paths, *ctx.readonly_paths):
        assert not ctx.sandbox_cache.is_relative_to(path), path


async def test_the_owners_cargo_config_still_applies_under_the_home(
    bwrap: Confinement, machine: Machine
) -> None:
    # cargo reads `.cargo/config.toml` in every folder above the project before CARGO_HOME's
    # own, so the owner's ~/.cargo/config.toml still counts for a project under the home.
    # (Linking it into the sandbox's CARGO_HOME would read it twice: list values, such as
    # an alias's words, would be doubled.)
    needs_cargo()
    (machine.home / ".cargo/config.toml").write_text(
        '[alias]\nowner-alias = ["metadata", "--format-version", "1", "--no-deps"]\n'
    )
    output = await sh(replace(bwrap, network=True), machine.context(), "cargo owner-alias")
    assert '"name":"app"' in output, output
    assert not (default_folder(machine.home) / "cargo/config.toml").exists()


async def test_a_full_disk_is_said_and_the_call_still_runs(
    bwrap: Confinement, machine: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The call that finds out why (`df`) must still run; what it could not get is said.
    cache = default_folder(machine.home)
    mkdir = Path.mkdir

    def full(self: Path, *args: object, **kwargs: object) -> None:
        if self.is_relative_to(cache):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", full)
    result = await ToolRegistry([BashTool(replace(bwrap, network=True))]).run(
        "bash", {"command": 'echo "ran cargo=[$CARGO_HOME]"'}, machine.context()
    )
    output = text(result)
    assert not result.is_error, output
    assert "ran cargo=[]" in output, output
    assert f"the disk is full: cannot create the sandbox's cache folder {cache}" in output
    assert "could not write a cache in this call" in output


async def test_a_link_planted_as_the_folder_is_not_bound(
    bwrap: Confinement, machine: Machine
) -> None:
    # Its target (a folder of the owner's outside every root) must not turn writable.
    cache = default_folder(machine.home)
    documents = machine.home / "Documents"
    documents.mkdir()
    cache.parent.mkdir(parents=True)
    cache.symlink_to(documents)
    output = await sh(
        replace(bwrap, network=True),
        machine.context(),
        'echo "cargo=[$CARGO_HOME]"; touch ~/Documents/planted 2>&1',
    )
    assert "cargo=[]" in output and "is a link" in output, output
    assert "Read-only file system" in output, output
    assert not (documents / "planted").exists()
