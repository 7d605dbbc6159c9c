"""Attack review 3: what a shell call could plant for later, outside the sandbox, that the
earlier reviews left open. Git configuration git obeys when the owner (or the git prompt of
the owner's shell, at every `cd`) runs git: each row plants through the real bash tool under
bubblewrap, then real git runs outside as the owner would, and the planted command must not
have run. Package caches and tool installs whose code the owner's next build or command
runs, and the folders on the PATH: each row plants, and the file must not be there after."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest
from harness.owner import Owner, build_owner, evil, text

from dispatch_matrix.sandbox.gitconfig import Named, named_paths
from dispatch_matrix.sandbox.host import Confinement
from dispatch_matrix.sandbox.wall import env_files, path_folders


@pytest.fixture
def make_owner(
    bwrap: Confinement, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Owner]:
    return build_owner(bwrap, tmp_path, monkeypatch)


# (what is there before: files, repositories, roots, workdir; what the call plants; the
# folder where the owner runs git later). Every row was tried; a comment says which broke.
GIT_LATER: list[tuple[str, dict[str, str], tuple[str, ...], tuple[str, ...], str, str]] = [
    # 1. A `.git` made at the top of an allowed root that is no repository: git obeys its
    #    config in every folder below that is in no repository of its own.
    (
        "root top is no repository",
        {"docs/notes/a.txt": "x\n"},
        (),
        ("docs",),
        "git init -q ~/docs && git -C ~/docs config core.fsmonitor 'EVIL'",
        "docs/notes",
    ),
    (
        "workdir top is no repository (the home is the root)",
        {"work/notes/a.txt": "x\n"},
        (),
        ("",),
        "git init -q ~/work && git -C ~/work config core.fsmonitor 'EVIL'",
        "work/notes",
    ),
    (
        "root top, planted by hand (no git in the call)",
        {"docs/notes/a.txt": "x\n"},
        (),
        ("docs",),
        "mkdir -p ~/docs/.git/objects ~/docs/.git/refs && echo 'ref: refs/heads/main' > "
        "~/docs/.git/HEAD && printf '[core]\\n\\tfsmonitor = EVIL\\n' > ~/docs/.git/config",
        "docs/notes",
    ),
    (
        "root top: a .git file naming a git folder elsewhere",
        {"docs/notes/a.txt": "x\n"},
        (),
        ("docs",),
        "git init -q --separate-git-dir ~/docs/.g ~/docs && git -C ~/docs config "
        "core.fsmonitor 'EVIL'",
        "docs/notes",
    ),
    # 2. Configuration files git reads through an include of a read-only config, or a hooks
    #    folder that a read-only config names, lying where a call may write.
    (
        "~/.gitconfig includes a file in a root",
        {
            ".gitconfig": "[include]\n\tpath = HOME/work/team.gitconfig\n",
            "work/team.gitconfig": "[user]\n\tname = me\n",
        },
        ("work",),
        ("",),
        "printf '[core]\\n\\tfsmonitor = EVIL\\n' >> ~/work/team.gitconfig",
        "work",
    ),
    (
        "~/.gitconfig includes a missing file in a root, relative to the home",
        {".gitconfig": "[include]\n\tpath = dotfiles/git.inc\n"},
        ("work",),
        ("",),
        "mkdir -p ~/dotfiles && printf '[core]\\n\\teditor = EVIL\\n' > ~/dotfiles/git.inc",
        "work",
    ),
    (
        "~/.gitconfig includes by ~, conditionally on the folder",
        {".gitconfig": '[includeIf "gitdir:~/work/"]\n\tpath = ~/work.inc\n'},
        ("work",),
        ("",),
        "printf '[core]\\n\\tfsmonitor = EVIL\\n' > ~/work.inc",
        "work",
    ),
    (
        "an included file includes another",
        {
            ".gitconfig": "[include]\n\tpath = ~/.config/git/extra\n",
            ".config/git/extra": "[include]\n\tpath = ~/shared/more.inc\n",
            "shared/more.inc": "\n",
        },
        ("work",),
        ("",),
        "printf '[core]\\n\\tfsmonitor = EVIL\\n' >> ~/shared/more.inc",
        "work",
    ),
    (
        "~/.config/git/config includes a file in a root",
        {".config/git/config": "[include]\n\tpath = ../../gitinc/x\n", "gitinc/x": "\n"},
        ("work",),
        ("",),
        "printf '[core]\\n\\tfsmonitor = EVIL\\n' >> ~/gitinc/x",
        "work",
    ),
    (
        "a repository's config includes a file in its tree (a team's shared config)",
        {"work/.gitconfig-team": "[user]\n\tname = me\n"},
        ("work",),
        ("",),
        "printf '[core]\\n\\tfsmonitor = EVIL\\n' >> ~/work/.gitconfig-team",
        "work",
    ),
    (
        "~/.gitconfig's hooksPath is a folder in a root",
        {".gitconfig": "[core]\n\thooksPath = ~/githooks\n", "githooks/README": "mine\n"},
        ("work",),
        ("",),
        "printf '#!/bin/sh\\nEVIL\\n' > ~/githooks/post-checkout && "
        "chmod +x ~/githooks/post-checkout",
        "work",
    ),
    (
        "~/.gitconfig's editor is a script in a root",
        {".gitconfig": "[core]\n\teditor = ~/scripts/edit.sh\n", "scripts/edit.sh": "true\n"},
        ("work",),
        ("",),
        "printf '#!/bin/sh\\nEVIL\\n' > ~/scripts/edit.sh; chmod +x ~/scripts/edit.sh",
        "work",
    ),
    (
        "~/.gitconfig's template folder is in a root (copied into every clone)",
        {".gitconfig": "[init]\n\ttemplateDir = ~/gittemplate\n", "gittemplate/description": "x\n"},
        ("work",),
        ("",),
        "mkdir -p ~/gittemplate/hooks && printf '#!/bin/sh\\nEVIL\\n' > "
        "~/gittemplate/hooks/post-checkout && chmod +x ~/gittemplate/hooks/post-checkout",
        "work",
    ),
    (
        "a repository's hooksPath is an ignored folder in its tree (husky's .husky/_)",
        {"work/.husky/_/h": "#!/bin/sh\n"},
        ("work",),
        ("",),
        "printf '#!/bin/sh\\nEVIL\\n' > ~/work/.husky/_/post-checkout && "
        "chmod +x ~/work/.husky/_/post-checkout",
        "work",
    ),
]

# Rows whose repository config is set up by the owner before the call.
_REPO_CONFIG = {
    "a repository's config includes a file in its tree (a team's shared config)": (
        "include.path",
        "../.gitconfig-team",
    ),
    "a repository's hooksPath is an ignored folder in its tree (husky's .husky/_)": (
        "core.hooksPath",
        ".husky/_",
    ),
}


@pytest.mark.parametrize(
    ("name", "files", "repos", "roots", "plant", "where"), GIT_LATER, ids=[r[0] for r in GIT_LATER]
)
async def test_git_run_later_obeys_nothing_a_call_planted(
    make_owner: Callable[..., Owner],
    name: str,
    files: dict[str, str],
    repos: tuple[str, ...],
    roots: tuple[str, ...],
    plant: str,
    where: str,
) -> None:
    owner = make_owner(files, repos, roots, workdir=roots[0] or "work")
    if name in _REPO_CONFIG:
        key, value = _REPO_CONFIG[name]
        subprocess.run(["git", "-C", str(owner.home / "work"), "config", key, value], check=True)
    output = await owner.sh(plant.replace("EVIL", evil(owner.home)))
    # The owner's git in that folder (fsmonitor), a commit and a checkout (hooks).
    owner.git(where, "status")
    owner.git(
        where,
        "-c",
        "user.name=o",
        "-c",
        "user.email=o@x",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "o",
    )
    owner.git(where, "checkout", "-q", "-b", "other")
    # A commit without a message starts the editor (a pager needs a terminal).
    owner.git(where, "-c", "user.name=o", "-c", "user.email=o@x", "commit", "--allow-empty")
    # And a clone, which copies the template and checks out (post-checkout).
    owner.git("", "clone", "-q", str(owner.home / "work"), str(owner.home / "cloned"))
    assert not owner.pwned(), output


H = PurePosixPath("/h")
T = PurePosixPath("/h/work")


@pytest.mark.parametrize(
    ("entries", "config_dir", "trees", "expected"),
    [
        ([("include.path", "x.inc")], H, (), [Named(H / "x.inc", False)]),
        ([("include.path", "~/a/b")], PurePosixPath("/etc"), (), [Named(H / "a/b", False)]),
        ([("include.path", "/abs/c")], H, (), [Named(PurePosixPath("/abs/c"), False)]),
        ([("include.path", "../up")], T / ".git", (), [Named(T / "up", False)]),
        ([("includeIf.gitdir:~/w/.path", "y")], H, (), [Named(H / "y", False)]),
        ([("includeif.hasconfig:remote.*.url:x.path", "z")], H, (), [Named(H / "z", False)]),
        # Keys are listed lower-case, but a subsection keeps its case.
        ([("includeIf.GitDir/i:~/W/.path", "y")], H, (), [Named(H / "y", False)]),
        ([("core.hookspath", "~/hooks")], H, (T,), [Named(H / "hooks", True)]),
        ([("core.hookspath", ".husky/_")], T / ".git", (T,), [Named(T / ".husky/_", True)]),
        (
            [("core.hookspath", "h")],
            H,
            (T, H / "b"),
            [Named(T / "h", True), Named(H / "b/h", True)],
        ),
        # git's own installation, an empty value, other keys: nothing.
        ([("include.path", "%(prefix)/etc/x")], H, (), []),
        ([("include.path", "")], H, (), []),
        ([("core.fsmonitor", "true"), ("user.name", "me"), ("core.editor", "vim")], H, (T,), []),
        # A command's words that are paths: a script in a root runs later.
        ([("core.fsmonitor", "/h/x")], H, (T,), [Named(H / "x", False)]),
        ([("core.editor", "~/bin2/edit.sh -w")], H, (), [Named(H / "bin2/edit.sh", False)]),
        (
            [("diff.pdf.textconv", "sh '/h/my tools/pdf.sh'")],
            H,
            (),
            [Named(H / "my tools/pdf.sh", False)],
        ),
        (
            [("filter.lfs.process", "/h/f --rc=/h/rc")],
            H,
            (),
            [Named(H / "f", False), Named(H / "rc", False)],
        ),
        ([("alias.up", "!~/a.sh")], H, (), [Named(H / "a.sh", False)]),
        ([("alias.st", "status ~/not-run")], H, (), []),
        ([("credential.https://x.helper", "/h/helper")], H, (), [Named(H / "helper", False)]),
        ([("pager.log", "~/p")], H, (), [Named(H / "p", False)]),
        # The template copied into every new repository; relative: from wherever git runs.
        ([("init.templatedir", "~/tmpl")], H, (), [Named(H / "tmpl", True)]),
        ([("init.templatedir", "tmpl")], H, (T,), []),
        ([("include.pathx", "a"), ("xinclude.path", "b")], H, (), []),
    ],
)
def test_the_paths_a_git_config_names(
    entries: list[tuple[str, str]],
    config_dir: PurePosixPath,
    trees: tuple[PurePosixPath, ...],
    expected: list[Named],
) -> None:
    assert named_paths(entries, config_dir, H, trees) == expected


async def test_the_file_tools_refuse_a_file_the_gitconfig_includes(
    make_owner: Callable[..., Owner],
) -> None:
    owner = make_owner(
        {
            ".gitconfig": "[include]\n\tpath = ~/work/team.gitconfig\n",
            "work/team.gitconfig": "[user]\n\tname = me\n",
        }
    )
    write = await owner.write("~/work/team.gitconfig", "[core]\n\tfsmonitor = x\n")
    assert write.is_error, text(write)
    assert (owner.home / "work" / "team.gitconfig").read_text() == "[user]\n\tname = me\n"


# What a call plants (`mkdir -p` its folder, then write it), under the home (the default
# root). Each lies where a package manager or a tool the owner runs later takes code from as
# found, without checking it.
CACHES = [
    # pip installs a wheel it built once from its cache at the next install of that sdist.
    ".cache/pip/wheels/ab/cd/x-1.0-py3-none-any.whl",
    # npx runs a package it fetched once from here, at the owner's next `npx prettier`.
    ".npm/_npx/2b/node_modules/.bin/prettier",
    # cargo builds an unpacked crate as found (its build.rs runs) at the next build.
    ".cargo/registry/src/index-1/serde-1.0.0/build.rs",
    ".cargo/git/checkouts/x-1/abc/build.rs",
    # pre-commit runs its hook repositories' code at every commit.
    ".cache/pre-commit/repoabc/hook.py",
    "go/pkg/mod/github.com/x/y@v1.0.0/init.go",
    ".m2/repository/org/x/1.0/x-1.0.jar",
    # pipx's and uv's tools run from their own folders through links in ~/.local/bin.
    ".local/share/pipx/venvs/black/bin/black",
    ".local/share/uv/tools/ruff/bin/ruff",
    ".local/share/uv/python/cpython-3.12/bin/python3",
    ".bun/install/cache/x@1.0.0/index.js",
    ".cache/deno/npm/x/index.js",
    # A folder of the home on the PATH (not one the wall names): a planted `ls` would win.
    "tools/bin/ls",
]


@pytest.mark.parametrize("target", CACHES)
async def test_no_cache_or_tool_the_owner_runs_later_is_planted(
    make_owner: Callable[..., Owner], target: str
) -> None:
    # Each exists, with something in it, as on a machine that used the tool.
    parts = Path(target).parts
    top = "/".join(
        parts[:2]
        if parts[0] in (".cache", ".local", ".cargo", "go", ".bun", ".npm", ".m2")
        else parts[:1]
    )
    owner = make_owner({f"{top}/owner.txt": "the owner's\n"}, on_path=("tools/bin",))
    output = await owner.sh(f"mkdir -p ~/{Path(target).parent}; echo evil > ~/{target}")
    assert not (owner.home / target).exists(), output
    assert (owner.home / top / "owner.txt").read_text() == "the owner's\n"


async def test_a_tool_cache_left_writable_stays_writable(make_owner: Callable[..., Owner]) -> None:
    """Decided, not missed: caches an ordinary install in a shell call must write stay
    writable. npm's content-addressed `_cacache` (npm checks each entry against the lock
    file's integrity); uv's cache (uv takes its lock there for every `uv run`, so read-only
    it would stop them; a wheel planted there is installed by the owner's next sync of that
    exact version); a project's `.venv` (the agent installs into it). README's sandbox
    section lists them as left open."""
    owner = make_owner({".npm/_cacache/x": "", ".cache/uv/x": "", "work/.venv/bin/x": ""})
    output = await owner.sh(
        "echo a > ~/.npm/_cacache/y && echo b > ~/.cache/uv/y && echo c > ~/work/.venv/bin/y "
        "&& echo written"
    )
    assert output.splitlines()[0] == "written", output


def a_wheel(folder: Path) -> Path:
    """The smallest wheel pip installs, built by hand (no network, no build backend)."""
    wheel = folder / "probe-1.0-py3-none-any.whl"
    info = "probe-1.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("probe.py", "VALUE = 42\n")
        archive.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: probe\nVersion: 1.0\n")
        archive.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{info}/RECORD", "")
    return wheel


async def test_pip_install_in_a_shell_call_works_with_its_cache_read_only(
    make_owner: Callable[..., Owner],
) -> None:
    owner = make_owner({".cache/pip/http/x": "cached\n"})
    wheel = a_wheel(owner.home / "work")
    output = await owner.sh(
        "python3 -m venv ~/work/.venv && ~/work/.venv/bin/pip install -q --no-index "
        f"{wheel} 2>&1; ~/work/.venv/bin/python -c 'import probe; print(probe.VALUE)'"
    )
    assert output.splitlines()[-2:] == ["42", "[exit code 0]"], output
    assert sorted(p.name for p in (owner.home / ".cache" / "pip").iterdir()) == ["http"]


@pytest.mark.parametrize(
    ("search_path", "expected"),
    [
        ("/h/.local/bin:/usr/bin:/bin", ["/h/.local/bin", "/usr/bin", "/bin"]),
        ("/h/tools/bin/:/h/tools/bin", ["/h/tools/bin"]),
        # Relative and empty entries (the current folder) mean nothing fixed.
        (".:bin::/opt/x/bin", ["/opt/x/bin"]),
        # Never the home, the workdir, or a folder that holds one: they would turn read-only.
        ("/h:/:/h/work:/h/work/.venv/bin", ["/h/work/.venv/bin"]),
        ("/H/Work", []),
    ],
)
def test_the_folders_on_the_path(search_path: str, expected: list[str]) -> None:
    keep = [PurePosixPath("/h"), PurePosixPath("/h/work")]
    assert path_folders(search_path, keep) == [PurePosixPath(p) for p in expected]


@pytest.mark.parametrize(
    ("key", "value", "target"),
    [
        ("include.path", "../.gitconfig-team", "~/work/.gitconfig-team"),
        ("core.hooksPath", ".husky/_", "~/work/.husky/_/pre-commit"),
        ("include.path", "../cfg/deep.inc", "~/work/cfg/deep.inc"),
    ],
)
async def test_the_file_tools_refuse_what_a_repository_config_names(
    make_owner: Callable[..., Owner], key: str, value: str, target: str
) -> None:
    """Attack review 3: the shell's wall covered these, the file tools wrote them."""
    owner = make_owner({"work/.gitconfig-team": "[user]\n\tname = me\n"})
    subprocess.run(["git", "-C", str(owner.home / "work"), "config", key, value], check=True)
    write = await owner.write(target, "[core]\n\tfsmonitor = x\n")
    assert write.is_error and "git config" in text(write), text(write)
    ordinary = await owner.write("~/work/notes.md", "fine\n")
    assert not ordinary.is_error, text(ordinary)


async def test_a_command_naming_the_home_or_a_root_leaves_them_writable(
    make_owner: Callable[..., Owner],
) -> None:
    """`core.pager = less -R ~/` (a folder as an argument) must not turn the home, the
    default root, read-only whole: only what lies below it is taken for a script."""
    owner = make_owner({".gitconfig": "[core]\n\tpager = less ~/ /\n\teditor = ~/work/e.sh\n"})
    output = await owner.sh(
        "echo fine > ~/work/notes.md && echo x > ~/work/e.sh; cat ~/work/notes.md"
    )
    assert output.startswith("fine"), output
    assert not (owner.home / "work" / "e.sh").exists(), output


# Tried and left open (README: "a repository a call creates below a root's top, or inside
# a repository"): finding a `.git` made anywhere in a root would mean walking the whole root
# after every call. Kept as rows that must fail, so that a fix shows.
NESTED = [
    ("inside a repository", ("work",), "work/src", "git init -q ~/work/src"),
    ("below a root's top", (), "docs/a/b", "git init -q ~/docs/a"),
]


@pytest.mark.xfail(strict=True, reason="left open: a repository a call creates below a top")
@pytest.mark.parametrize(("name", "repos", "where", "made"), NESTED, ids=[n[0] for n in NESTED])
async def test_a_repository_a_call_creates_below_a_top(
    make_owner: Callable[..., Owner], name: str, repos: tuple[str, ...], where: str, made: str
) -> None:
    owner = make_owner({f"{where}/a.txt": "x\n"}, repos=repos)
    folder = made.split()[-1]
    await owner.sh(f"{made} && git -C {folder} config core.fsmonitor '{evil(owner.home)}'")
    owner.git(where, "status")
    assert not owner.pwned(), name


def _outside_roots() -> list[Path]:
    """Byte-code folders of installed Python outside any root: the system's, the daemon's
    own site-packages, its base interpreter's."""
    found = [
        Path("/usr/lib/python3.11/__pycache__"),
        Path(sysconfig.get_paths()["purelib"]),
        Path(sys.base_prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}",
    ]
    return [folder for folder in found if folder.is_dir()]


@pytest.mark.parametrize("folder", _outside_roots(), ids=str)
async def test_installed_python_outside_the_roots_takes_no_planted_byte_code(
    make_owner: Callable[..., Owner], folder: Path
) -> None:
    """Held: a `.pyc` planted beside installed packages would run at their next import,
    but outside the roots everything is read-only (even to a root daemon: the sandbox has
    no capabilities and `/` is mounted read-only)."""
    owner = make_owner()
    planted = folder / "__pycache__" / "dispatch_attack3_probe.cpython-311.pyc"
    output = await owner.sh(f"mkdir -p {planted.parent}; echo evil > {planted}")
    assert not planted.exists(), output


@pytest.mark.parametrize("variable", ["GIT_CONFIG_GLOBAL", "XDG_CONFIG_HOME"])
async def test_a_global_git_config_the_environment_moves_into_a_root_is_read_only(
    make_owner: Callable[..., Owner], monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """Attack review 3: the owner keeps the global config in a root (GIT_CONFIG_GLOBAL =
    ~/dotfiles/gitconfig, or XDG_CONFIG_HOME = ~/dotfiles): git run later with that
    environment obeyed a `core.fsmonitor` a call appended."""
    values = {"GIT_CONFIG_GLOBAL": "dotfiles/gitconfig", "XDG_CONFIG_HOME": "dotfiles"}
    config = {"GIT_CONFIG_GLOBAL": "dotfiles/gitconfig", "XDG_CONFIG_HOME": "dotfiles/git/config"}

    def prepare(home: Path) -> None:
        monkeypatch.setenv(variable, str(home / values[variable]))

    owner = make_owner({config[variable]: "[user]\n\tname = me\n"}, prepare=prepare)
    owner.git_env = {variable: str(owner.home / values[variable])}
    output = await owner.sh(
        f"printf '[core]\\n\\tfsmonitor = {evil(owner.home)}\\n' >> ~/{config[variable]}"
    )
    owner.git("work", "status")
    assert not owner.pwned(), output


# Review of the shell's wall (wall-git): git folders the owner's git reaches through a
# `.git` file (a separate git dir, a worktree, a submodule) and bare repositories a push
# runs hooks in. (name; what the owner made before, run outside as bash in the home; what
# the call plants; what the owner runs later, outside, as bash in the home.) The home is
# the root, `work` the workdir. Every row was tried; a comment says which broke.
OWNER_GIT = "git -c user.name=o -c user.email=o@x"
# The owner adds a local repository as a submodule of ~/work at `path`.
SUBMODULE = (
    f"{OWNER_GIT} init -q ~/upstream && cd ~/upstream && {OWNER_GIT} commit -q --allow-empty "
    f"-m u && cd ~/work && {OWNER_GIT} -c protocol.file.allow=always submodule -q add "
    "~/upstream {path}"
)
SEPARATE: list[tuple[str, str, str, str]] = [
    # Broke: the separate git dir's hooks were written (found only at a root's top).
    (
        "a separate git dir's hook, the repository inside the workdir's",
        "git init -q --separate-git-dir ~/work/sep.git ~/work/sepwork",
        "printf '#!/bin/sh\\nEVIL\\n' > ~/work/sep.git/hooks/pre-commit && "
        "chmod +x ~/work/sep.git/hooks/pre-commit",
        f"cd ~/work/sepwork && {OWNER_GIT} commit -q --allow-empty -m o",
    ),
    (
        "a separate git dir's config, the repository inside the workdir's",
        "git init -q --separate-git-dir ~/work/sep.git ~/work/sepwork",
        "printf '[core]\\n\\tfsmonitor = EVIL\\n' >> ~/work/sep.git/config",
        "cd ~/work/sepwork && git status",
    ),
    (
        "a separate git dir's hook, the repository at the root's top",
        "git init -q --separate-git-dir ~/sep.git ~/proj",
        "printf '#!/bin/sh\\nEVIL\\n' > ~/sep.git/hooks/pre-commit && "
        "chmod +x ~/sep.git/hooks/pre-commit",
        f"cd ~/proj && {OWNER_GIT} commit -q --allow-empty -m o",
    ),
    (
        "a relative separate git dir's config",
        "git init -q --separate-git-dir ~/sep.git ~/proj && "
        "echo 'gitdir: ../sep.git' > ~/proj/.git",
        "printf '[core]\\n\\tfsmonitor = EVIL\\n' >> ~/sep.git/config",
        "cd ~/proj && git status",
    ),
    # Broke: the `.git` file itself was writable, pointed at a git folder of the call's.
    (
        "a separate git dir's pointer, pointed elsewhere",
        "git init -q --separate-git-dir ~/sep.git ~/proj",
        "git init -q --bare ~/mine.git && git -C ~/mine.git config core.bare false && "
        "git -C ~/mine.git config core.fsmonitor 'EVIL' && echo \"gitdir: $HOME/mine.git\" "
        "> ~/proj/.git",
        "cd ~/proj && git status",
    ),
    (
        "a worktree's pointer, pointed elsewhere",
        f"cd ~/work && {OWNER_GIT} commit -q --allow-empty -m o && git worktree add -q ~/wt",
        "git init -q --bare ~/mine.git && git -C ~/mine.git config core.bare false && "
        "git -C ~/mine.git config core.fsmonitor 'EVIL' && echo \"gitdir: $HOME/mine.git\" "
        "> ~/wt/.git",
        "cd ~/wt && git status",
    ),
    (
        "a worktree's own git folder's config.worktree",
        f"cd ~/work && {OWNER_GIT} commit -q --allow-empty -m o && git worktree add -q ~/wt "
        "&& git config extensions.worktreeConfig true",
        "printf '[core]\\n\\tfsmonitor = EVIL\\n' > ~/work/.git/worktrees/wt/config.worktree",
        "cd ~/wt && git status",
    ),
    (
        "a worktree outside the roots, its git folder's commondir repointed",
        f"cd ~/work && {OWNER_GIT} commit -q --allow-empty -m o && git worktree add -q "
        "~/../outside-wt",
        "git init -q --bare ~/mine.git && git -C ~/mine.git config core.bare false && "
        "git -C ~/mine.git config core.fsmonitor 'EVIL' && echo \"$HOME/mine.git\" > "
        "~/work/.git/worktrees/outside-wt/commondir",
        "cd ~/../outside-wt && git status",
    ),
    # Broke: a bare repository's hooks run at a push to it.
    (
        "a bare repository's pre-receive hook at the root's top",
        f"git init -q --bare ~/remote.git && cd ~/work && {OWNER_GIT} commit -q --allow-empty -m o",
        "printf '#!/bin/sh\\nEVIL\\n' > ~/remote.git/hooks/pre-receive && "
        "chmod +x ~/remote.git/hooks/pre-receive",
        "cd ~/work && git push -q ~/remote.git HEAD:refs/heads/x",
    ),
    (
        "a bare repository's config names a hooks folder of the call's",
        f"git init -q --bare ~/remote.git && cd ~/work && {OWNER_GIT} commit -q --allow-empty -m o",
        "mkdir -p ~/h && printf '#!/bin/sh\\nEVIL\\n' > ~/h/post-receive && chmod +x "
        "~/h/post-receive && git -C ~/remote.git config core.hooksPath ~/h",
        "cd ~/work && git push -q ~/remote.git HEAD:refs/heads/x",
    ),
    (
        "a bare repository's post-receive hook inside the workdir's repository",
        f"git init -q --bare ~/work/remote.git && cd ~/work && {OWNER_GIT} commit -q "
        "--allow-empty -m o",
        "printf '#!/bin/sh\\nEVIL\\n' > ~/work/remote.git/hooks/post-receive && "
        "chmod +x ~/work/remote.git/hooks/post-receive",
        "cd ~/work && git push -q ./remote.git HEAD:refs/heads/x",
    ),
    # A submodule: its git folder lies in the parent's `.git/modules/<name>`, where the
    # name is its path by default (`lib/dep`, one folder deeper), and `git status` in the
    # parent runs git in each submodule.
    (
        "a submodule's pointer, pointed elsewhere",
        SUBMODULE.format(path="dep"),
        "git init -q --bare ~/mine.git && git -C ~/mine.git config core.bare false && "
        "git -C ~/mine.git config core.fsmonitor 'EVIL' && echo \"gitdir: $HOME/mine.git\" "
        "> ~/work/dep/.git",
        "cd ~/work && git status",
    ),
    (
        "a submodule's hook, its name a path two folders deep",
        SUBMODULE.format(path="lib/dep"),
        "printf '#!/bin/sh\\nEVIL\\n' > ~/work/.git/modules/lib/dep/hooks/post-checkout && "
        "chmod +x ~/work/.git/modules/lib/dep/hooks/post-checkout",
        "cd ~/work/lib/dep && git checkout -q -b other",
    ),
    (
        "a submodule's config, its name a path two folders deep",
        SUBMODULE.format(path="lib/dep"),
        "printf '[core]\\n\\tfsmonitor = EVIL\\n' >> ~/work/.git/modules/lib/dep/config",
        "cd ~/work/lib/dep && git status",
    ),
    (
        "a bare repository's hook two levels in",
        f"git init -q --bare ~/srv/git/remote.git && cd ~/work && {OWNER_GIT} commit -q "
        "--allow-empty -m o",
        "printf '#!/bin/sh\\nEVIL\\n' > ~/srv/git/remote.git/hooks/pre-receive && "
        "chmod +x ~/srv/git/remote.git/hooks/pre-receive",
        "cd ~/work && git push -q ~/srv/git/remote.git HEAD:refs/heads/x",
    ),
]


def _owner_bash(owner: Owner, script: str, *, check: bool = False) -> str:
    """Run `script` outside the sandbox, in the home, as the owner would; its output."""
    env = {"HOME": str(owner.home), "PATH": "/usr/bin:/bin", "PAGER": "cat"}
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=owner.home,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=check,
    )
    return done.stdout + done.stderr


@pytest.mark.parametrize(
    ("name", "before", "plant", "later"), SEPARATE, ids=[r[0] for r in SEPARATE]
)
async def test_git_reached_through_a_git_file_or_a_push_obeys_nothing_planted(
    make_owner: Callable[..., Owner], name: str, before: str, plant: str, later: str
) -> None:
    owner = make_owner()
    _owner_bash(owner, before, check=True)
    output = await owner.sh(plant.replace("EVIL", evil(owner.home)))
    after = _owner_bash(owner, later)
    assert not owner.pwned(), (output, after)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"PYTHONSTARTUP": "/h/dotfiles/startup.py"}, ["/h/dotfiles/startup.py"]),
        (
            {"PYTHONSTARTUP": "~/py/rc.py", "BASH_ENV": "/h/x/../env.sh"},
            ["/h/py/rc.py", "/h/env.sh"],
        ),
        (
            {"ENV": "/h/.shinit", "LESSKEY_SRC": "/h/.config/lesskey.src"},
            ["/h/.shinit", "/h/.config/lesskey.src"],
        ),
        # Relative: a file in whatever folder the program starts in, nothing fixed.
        ({"PYTHONSTARTUP": ".pythonrc", "BASH_ENV": ""}, []),
        # Never the home, the workdir, or a folder that holds one.
        ({"PYTHONSTARTUP": "/h", "BASH_ENV": "/", "ENV": "/h/work/"}, []),
        # zsh's start-up files in the folder ZDOTDIR names (a relative one: nothing).
        (
            {"ZDOTDIR": "/h/.config/zsh/"},
            [
                f"/h/.config/zsh/{f}"
                for f in (".zshenv", ".zprofile", ".zshrc", ".zlogin", ".zlogout")
            ],
        ),
        ({"ZDOTDIR": "zsh"}, []),
        # Other variables name no start-up file.
        ({"PYTHONPATH": "/h/lib", "EDITOR": "/h/bin/e"}, []),
    ],
)
def test_the_start_up_files_the_environment_names(
    environ: dict[str, str], expected: list[str]
) -> None:
    keep = [PurePosixPath("/h"), PurePosixPath("/h/work")]
    assert env_files(environ, PurePosixPath("/h"), keep) == [PurePosixPath(p) for p in expected]


@pytest.mark.parametrize("where", ["dotfiles/startup.py", ".pythonrc.py", "work/tools/rc.py"])
async def test_the_file_pythonstartup_names_is_read_only(
    make_owner: Callable[..., Owner], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Review of the shell's wall: python runs the file PYTHONSTARTUP names at every
    interactive start outside; a call appended to it. Wherever it lies, even in the
    workdir, it is kept read-only, to the shell and to the file tools."""

    def prepare(home: Path) -> None:
        monkeypatch.setenv("PYTHONSTARTUP", str(home / where))

    owner = make_owner({where: "import os\n"}, prepare=prepare)
    output = await owner.sh(f'echo \'open("{owner.home}/PWNED", "w")\' >> ~/{where}; cat ~/{where}')
    write = await owner.write(f"~/{where}", "open('x', 'w')\n")
    env = {
        "HOME": str(owner.home),
        "PATH": "/usr/bin:/bin",
        "PYTHONSTARTUP": str(owner.home / where),
    }
    # In the home: a startup file the file tool did write would leave its file there.
    subprocess.run(
        [sys.executable, "-i"],
        stdin=subprocess.DEVNULL,
        cwd=owner.home,
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert not owner.pwned(), output
    assert write.is_error, text(write)
    assert (owner.home / where).read_text() == "import os\n"


def test_bare_repositories_are_found_where_repositories_are(tmp_path: Path) -> None:
    """A folder holding `HEAD`, `config` and `objects/` is a bare repository, at the same
    depths and within the same budget as a repository; a `HEAD` alone makes none."""
    from dispatch_matrix.sandbox import guards

    for rel in ("a.git", "srv/git/b.git", ".hidden.git", "x/y/z/too-deep.git", "w/.git/c.git"):
        (tmp_path / rel / "objects").mkdir(parents=True)
        (tmp_path / rel / "HEAD").write_text("ref: refs/heads/main\n")
        (tmp_path / rel / "config").write_text("[core]\n\tbare = true\n")
    (tmp_path / "w" / ".git" / "objects").mkdir(parents=True)
    (tmp_path / "notes" / "HEAD").parent.mkdir()
    (tmp_path / "notes" / "HEAD").write_text("a file named HEAD\n")
    repositories, bare = guards._search(tmp_path)
    assert repositories == [tmp_path / "w"]
    assert bare == [tmp_path / p for p in (".hidden.git", "a.git", "srv/git/b.git")]


def test_submodules_git_folders_are_found_at_any_depth_of_their_names(tmp_path: Path) -> None:
    """`.git/modules/<name>` where the name is a path (`lib/dep`), and a submodule's own
    submodules in its `modules/`."""
    from dispatch_matrix.sandbox import guards

    modules = tmp_path / ".git" / "modules"
    for rel in ("top", "lib/dep", "lib/dep/modules/inner", "a/b/c/d"):
        (modules / rel).mkdir(parents=True)
        (modules / rel / "HEAD").write_text("x\n")
    (modules / "lib" / "empty").mkdir()
    assert guards._git_folders(tmp_path) == [
        tmp_path / ".git",
        *(modules / p for p in ("a/b/c/d", "lib/dep", "lib/dep/modules/inner", "top")),
    ]
    assert guards._git_folders(tmp_path / "none") == []


async def test_zsh_start_up_files_in_the_folder_zdotdir_names_are_read_only(
    make_owner: Callable[..., Owner], monkeypatch: pytest.MonkeyPatch
) -> None:
    """zsh reads its start-up files from ZDOTDIR: there, an existing `.zshrc` is kept as it
    was and a `.zshenv` a call makes is moved aside after the call."""

    def prepare(home: Path) -> None:
        monkeypatch.setenv("ZDOTDIR", str(home / "dotfiles" / "zsh"))

    owner = make_owner({"dotfiles/zsh/.zshrc": "# mine\n"}, prepare=prepare)
    output = await owner.sh(
        "echo evil >> ~/dotfiles/zsh/.zshrc; echo evil > ~/dotfiles/zsh/.zshenv; "
        "echo fine > ~/dotfiles/zsh/notes && echo written"
    )
    assert (owner.home / "dotfiles/zsh/.zshrc").read_text() == "# mine\n", output
    assert not (owner.home / "dotfiles/zsh/.zshenv").exists(), output
    assert (owner.home / "dotfiles/zsh/notes").read_text() == "fine\n", output
