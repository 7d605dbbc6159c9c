"""The OS sandbox's rules as data, table-tested: the spec (`plan`), bubblewrap's options,
the macOS profile's text, the diagnosis when bubblewrap cannot start, and what `auto`
means. The escape attempts through the real sandbox are in tests/test_sandbox.py."""

from __future__ import annotations

import sys
from pathlib import Path, PurePosixPath

import pytest

from dispatch_matrix.core.errors import ConfigError
from dispatch_matrix.sandbox import choice as sandbox_host
from dispatch_matrix.sandbox.choice import check_sandbox, diagnose, platform_default
from dispatch_matrix.sandbox.host import Confinement, default_hidden, survey
from dispatch_matrix.sandbox.macos import profile
from dispatch_matrix.sandbox.spec import Hidden, Limits, Sandbox, SandboxSpec, bwrap_args, plan
from dispatch_matrix.sandbox.wall import home_guards, server_code, write_refusal
from dispatch_matrix.sandbox.wall_paths import HIDDEN_IN_HOME

P = PurePosixPath
TMP = P("/tmp")


def spec(
    roots: list[str],
    dirs: list[str] = (),  # type: ignore[assignment]
    files: list[str] = (),  # type: ignore[assignment]
    env: dict[str, str] | None = None,
    network: bool = True,
    workdir: str = "/home/u/work",
) -> SandboxSpec:
    hidden = [Hidden(P(d), True) for d in dirs] + [Hidden(P(f), False) for f in files]
    return plan([P(r) for r in roots], hidden, env or {}, network, TMP, P(workdir))


# --- the rules: plan() ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("roots", "dirs", "files", "writable", "hidden_dirs", "hidden_files", "pinned", "dropped"),
    [
        # The ordinary case: state and credentials outside the one root.
        (
            ["/home/u/work"],
            ["/home/u/.config/dm/state", "/home/u/.ssh"],
            ["/home/u/.netrc"],
            ["/home/u/work"],
            ["/home/u/.ssh", "/home/u/.config/dm/state"],
            ["/home/u/.netrc"],
            [],
            [],
        ),
        # ~ as the root: the credentials lie inside it; the folders on the way are pinned.
        (
            ["/home/u"],
            ["/home/u/.ssh", "/home/u/.config/gh"],
            ["/home/u/.docker/config.json"],
            ["/home/u"],
            ["/home/u/.ssh", "/home/u/.config/gh"],
            ["/home/u/.docker/config.json"],
            ["/home/u/.config", "/home/u/.docker"],
            [],
        ),
        # The state folder deep in a root: every folder between is pinned.
        (
            ["/srv/w"],
            ["/srv/w/a/b/state"],
            [],
            ["/srv/w"],
            ["/srv/w/a/b/state"],
            [],
            ["/srv/w/a", "/srv/w/a/b"],
            [],
        ),
        # A root inside a hidden folder is dropped: hidden wins.
        (
            ["/home/u/work", "/home/u/.ssh/keys"],
            ["/home/u/.ssh"],
            [],
            ["/home/u/work"],
            ["/home/u/.ssh"],
            [],
            [],
            ["/home/u/.ssh/keys"],
        ),
        # Nested roots collapse; a file inside a hidden folder collapses into it.
        (
            ["/w", "/w/sub", "/w"],
            ["/s"],
            ["/s/config.toml"],
            ["/w"],
            ["/s"],
            [],
            [],
            [],
        ),
        # Under the private /tmp and in no root: invisible anyway, so no mask.
        (
            ["/tmp/t/work"],
            ["/tmp/t/state", "/tmp/t/work/state"],
            ["/tmp/t/config.toml", "/tmp/t/work/pw"],
            ["/tmp/t/work"],
            ["/tmp/t/work/state"],
            ["/tmp/t/work/pw"],
            [],
            [],
        ),
        # The kernel's file systems are the sandbox's own.
        (["/w"], ["/proc/1", "/dev/shm"], ["/dev/null"], ["/w"], [], [], [], []),
        # The hidden path is the root itself: the root goes.
        (["/w"], ["/w"], [], [], ["/w"], [], [], ["/w"]),
    ],
)
def test_plan_hides_what_must_be_hidden(
    roots: list[str],
    dirs: list[str],
    files: list[str],
    writable: list[str],
    hidden_dirs: list[str],
    hidden_files: list[str],
    pinned: list[str],
    dropped: list[str],
) -> None:
    got = spec(roots, dirs, files)
    assert [str(p) for p in got.writable] == writable
    assert sorted(str(p) for p in got.hidden_dirs) == sorted(hidden_dirs)
    assert [str(p) for p in got.hidden_files] == hidden_files
    assert [str(p) for p in got.pinned] == pinned
    assert [str(p) for p in got.dropped_roots] == dropped


def test_plan_names_hidden_files_with_other_names() -> None:
    hidden = [
        Hidden(P("/s/config.toml"), False, links=2),
        Hidden(P("/home/u/.netrc"), False),
        Hidden(P("/home/u/.ssh"), True, links=3),
    ]
    got = plan([P("/w")], hidden, {}, True, TMP, P("/w"))
    assert got.unmaskable == (P("/s/config.toml"),)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, [("TMPDIR", "/tmp")]),
        ({"TMPDIR": "/var/folders/x", "PATH": "/bin"}, [("PATH", "/bin"), ("TMPDIR", "/tmp")]),
        ({"A=B": "x", "": "y", "NUL": "a\x00b", "OK": ""}, [("OK", ""), ("TMPDIR", "/tmp")]),
    ],
)
def test_plan_keeps_only_a_clean_environment(
    env: dict[str, str], expected: list[tuple[str, str]]
) -> None:
    assert list(spec(["/w"], env=env).env) == expected


# --- the rules: bwrap_args() ----------------------------------------------------------


def mount_ops(args: list[str]) -> list[tuple[str, ...]]:
    """The mount operations of a bwrap option list, in order."""
    arity = {"--bind": 2, "--ro-bind": 2, "--tmpfs": 1, "--remount-ro": 1, "--dev": 1}
    arity["--proc"] = 1
    ops: list[tuple[str, ...]] = []
    i = 0
    while i < len(args):
        flag = args[i]
        if flag in arity:
            ops.append((flag, *args[i + 1 : i + 1 + arity[flag]]))
            i += 1 + arity[flag]
        elif flag in ("--setenv",):
            i += 3
        elif flag in ("--chdir", "--cap-drop"):
            i += 2
        else:
            i += 1
    return ops


def test_bwrap_mounts_parents_before_children_and_masks_last() -> None:
    roots = ["/tmp/t/work", "/home/u"]
    args = bwrap_args(spec(roots, ["/home/u/.ssh", "/tmp/t/work/a/state"], ["/home/u/.netrc"]))
    assert mount_ops(args) == [
        ("--ro-bind", "/", "/"),
        ("--dev", "/dev"),
        ("--proc", "/proc"),
        ("--tmpfs", "/tmp"),
        ("--bind", "/home/u", "/home/u"),
        ("--bind", "/tmp/t/work", "/tmp/t/work"),
        ("--tmpfs", "/home/u/.ssh"),
        ("--remount-ro", "/home/u/.ssh"),
        ("--ro-bind", "/dev/null", "/home/u/.netrc"),
        ("--bind", "/tmp/t/work/a", "/tmp/t/work/a"),
        ("--tmpfs", "/tmp/t/work/a/state"),
        ("--remount-ro", "/tmp/t/work/a/state"),
    ]


@pytest.mark.parametrize(
    ("network", "user_namespace", "present", "absent"),
    [
        (True, True, ["--unshare-user"], ["--unshare-net"]),
        (False, True, ["--unshare-user", "--unshare-net"], []),
        (True, False, [], ["--unshare-user", "--unshare-net"]),
    ],
)
def test_bwrap_namespaces_and_privileges(
    network: bool, user_namespace: bool, present: list[str], absent: list[str]
) -> None:
    args = bwrap_args(spec(["/w"], network=network), user_namespace=user_namespace)
    for flag in ["--unshare-pid", "--unshare-ipc", "--die-with-parent", "--new-session"]:
        assert flag in args
    for flag in present:
        assert flag in args
    for flag in absent:
        assert flag not in args
    # Root hands the command every capability unless told otherwise: CAP_SYS_ADMIN unmounts.
    assert args[args.index("--cap-drop") + 1] == "ALL"
    # The environment starts empty and holds only what the spec lists.
    assert args.index("--clearenv") < args.index("--setenv")
    assert args[-2:] == ["--chdir", "/home/u/work"]


# --- the rules: the macOS profile -----------------------------------------------------


def test_the_macos_profile_says_the_same_rules() -> None:
    text = profile(
        spec(
            ["/Users/u/work"],
            ["/Users/u/.ssh", "/Users/u/work/a/state"],
            ['/Users/u/we"ird'],
            network=False,
        )
    )
    assert text.startswith("(version 1)\n(allow default)\n")
    assert text.count("(") == text.count(")")
    lines = text.splitlines()
    deny_writes = lines.index("(deny file-write*)")
    allow_roots = next(i for i, line in enumerate(lines) if line.startswith("(allow file-write* "))
    hide = next(
        i for i, line in enumerate(lines) if line.startswith("(deny file-read* file-write*")
    )
    # Last match wins: the masks come after the roots they lie in.
    assert deny_writes < allow_roots < hide
    assert '(subpath "/Users/u/work")' in lines[allow_roots]
    assert '(subpath "/tmp")' in lines[allow_roots]
    assert '(subpath "/Users/u/.ssh")' in lines[hide]
    assert '(subpath "/Users/u/work/a/state")' in lines[hide]
    assert '(literal "/Users/u/we\\"ird")' in lines[hide]
    unlink = next(line for line in lines if line.startswith("(deny file-write-unlink"))
    assert '(literal "/Users/u/work/a")' in unlink and '(literal "/Users")' in unlink
    assert "(deny process-info* (require-not (target same-sandbox)))" in lines
    assert "(deny appleevent-send)" in lines and "(deny lsopen)" in lines
    assert lines[-1] == "(deny network*)"
    assert "(deny network*)" not in profile(spec(["/Users/u/work"]))


# --- the host edge: diagnosis, kinds, survey ------------------------------------------


@pytest.mark.parametrize(
    ("stderr", "sysctls", "euid", "why", "fix"),
    [
        (
            "bwrap: setting up uid map: Permission denied",
            {"kernel.apparmor_restrict_unprivileged_userns": "1"},
            1000,
            "AppArmor restricts unprivileged user namespaces",
            "kernel.apparmor_restrict_unprivileged_userns=0",
        ),
        (
            "bwrap: No permissions to creating new namespace",
            {"kernel.unprivileged_userns_clone": "0"},
            1000,
            "unprivileged user namespaces are disabled",
            "kernel.unprivileged_userns_clone=1",
        ),
        (
            "bwrap: No permissions to creating new namespace",
            {"user.max_user_namespaces": "0"},
            1000,
            "user.max_user_namespaces = 0",
            "user.max_user_namespaces=15000",
        ),
        (
            "bwrap: Creating new namespace failed: Operation not permitted",
            {},
            0,
            "in a container",
            "seccomp=unconfined",
        ),
        ("bwrap: something odd", {}, 1000, "bwrap: something odd", "to see why"),
    ],
)
def test_diagnose_names_the_cause_and_the_fix(
    stderr: str, sysctls: dict[str, str], euid: int, why: str, fix: str
) -> None:
    got_why, got_fix = diagnose(stderr, sysctls, euid)
    assert why in got_why
    assert fix in got_fix


def test_check_sandbox_never_falls_back_silently(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="unknown sandbox"):
        check_sandbox("firejail")
    assert not check_sandbox("none").active
    monkeypatch.setattr(sandbox_host.shutil, "which", lambda *a, **k: None)
    if sys.platform.startswith("linux"):
        with pytest.raises(ConfigError) as caught:
            check_sandbox("auto")
        assert "not installed" in caught.value.problem
        assert caught.value.fix is not None and 'sandbox = "none"' in caught.value.fix
    with pytest.raises(ConfigError):
        check_sandbox("sandbox-exec" if sys.platform.startswith("linux") else "bubblewrap")


def test_check_sandbox_reports_why_bubblewrap_cannot_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("bubblewrap is Linux-only")
    monkeypatch.setattr(sandbox_host.shutil, "which", lambda *a, **k: "/usr/bin/bwrap")
    monkeypatch.setattr(sandbox_host, "probe_once", lambda c: "bwrap: setting up uid map: EPERM")
    monkeypatch.setattr(
        sandbox_host, "read_sysctls", lambda: {"kernel.apparmor_restrict_unprivileged_userns": "1"}
    )
    monkeypatch.setattr(sandbox_host.os, "geteuid", lambda: 1000)
    with pytest.raises(ConfigError) as caught:
        check_sandbox("auto")
    assert "AppArmor" in caught.value.problem
    assert caught.value.fix is not None and "apparmor_parser" in caught.value.fix


@pytest.mark.parametrize(
    ("platform", "kind"),
    [("linux", Sandbox.BUBBLEWRAP), ("darwin", Sandbox.SANDBOX_EXEC), ("win32", Sandbox.NONE)],
)
def test_auto_means_the_platforms_sandbox(platform: str, kind: Sandbox) -> None:
    assert platform_default(platform) is kind


def test_survey_masks_a_symlinked_secret_at_its_target(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "aws"
    real.mkdir(parents=True)
    (tmp_path / ".aws").symlink_to(real)
    (tmp_path / ".netrc").write_text("machine x password y\n")
    found = survey([tmp_path / ".aws", tmp_path / ".netrc", tmp_path / "missing"])
    assert [(h.path, h.is_dir) for h in found] == [
        (P(real.resolve()), True),
        (P((tmp_path / ".netrc").resolve()), False),
    ]


def test_default_hidden_covers_the_usual_credentials() -> None:
    hidden = {str(p) for p in default_hidden(Path("/home/u"), 1000)}
    for path in (
        "/home/u/.ssh",
        "/home/u/.aws",
        "/home/u/.gnupg",
        "/home/u/.netrc",
        "/home/u/.git-credentials",
        "/home/u/.kube",
        "/home/u/.config/gh",
        "/home/u/.docker/config.json",
        "/home/u/.local/share/keyrings",
        "/home/u/.password-store",
        "/run/user/1000",
        "/var/run/docker.sock",
        # Attack review: a container's or a pod's secret files were visible to every call.
        "/run/secrets",
        "/var/run/secrets",
    ):
        assert path in hidden


def test_doctor_shows_the_sandbox_or_why_it_cannot_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from dispatch_matrix.app.doctor import _sandbox

    def config(kind: str) -> object:
        agent = SimpleNamespace(
            sandbox=kind,
            sandbox_network=False,
            sandbox_max_processes=256,
            sandbox_max_memory_mb=2048,
            sandbox_max_file_mb=1024,
            sandbox_max_cpu_s=600,
            sandbox_max_tmp_mb=512,
        )
        return SimpleNamespace(agent=agent)

    off = _sandbox(config("none"))  # type: ignore[arg-type]
    assert off.ok and "unconfined" in off.what
    if not sys.platform.startswith("linux"):
        return
    monkeypatch.setattr(sandbox_host.shutil, "which", lambda *a, **k: "/usr/bin/bwrap")
    monkeypatch.setattr(sandbox_host, "probe_once", lambda c: "")
    on = _sandbox(config("auto"))  # type: ignore[arg-type]
    assert on.ok and on.what.startswith("sandbox: bubblewrap (/usr/bin/bwrap, network off, ")
    # The configured limits, and that they are rlimits (no cgroup), are said.
    assert "limits per call: 256 processes, 2048 MB data per process" in on.what
    assert "1024 MB per file, 600 s CPU per process, 512 MB of /tmp, no core dumps" in on.what
    assert "(rlimits; no cgroup)" in on.what
    # The folder the calls' package caches go to is named, for the disk space and for what
    # a task fetched.
    assert f"package caches of its calls: {Path.home()}/.cache/dispatch-matrix/sandbox" in on.what
    monkeypatch.setattr(sandbox_host, "probe_once", lambda c: "bwrap: uid map: EPERM")
    monkeypatch.setattr(sandbox_host, "read_sysctls", lambda: {"user.max_user_namespaces": "0"})
    broken = _sandbox(config("auto"))  # type: ignore[arg-type]
    assert not broken.ok and "user namespaces are disabled" in broken.what
    assert "user.max_user_namespaces=15000" in broken.fix and 'sandbox = "none"' in broken.fix


@pytest.mark.parametrize(
    ("readonly", "hidden", "shown"),
    [
        # A checkout's venv under /tmp stays usable behind the fresh /tmp, read-only.
        (["/tmp/ci/.venv", "/usr/lib/python3.11"], [], ["/tmp/ci/.venv"]),
        # Outside /tmp everything is read-only already: nothing to add.
        (["/opt/py/venv"], [], []),
        # Never the private /tmp itself, never a folder holding (or inside) a hidden path.
        (["/tmp"], [], []),
        (["/tmp/ci"], ["/tmp/ci/store"], []),
        (["/tmp/ci/store/venv"], ["/tmp/ci/store"], []),
    ],
)
def test_the_daemons_own_python_under_tmp_is_shown_read_only(
    readonly: list[str], hidden: list[str], shown: list[str]
) -> None:
    hidden_paths = [Hidden(P(h), True) for h in hidden]
    got = plan([P("/w")], hidden_paths, {}, True, TMP, P("/w"), readonly=[P(r) for r in readonly])
    assert [str(p) for p in got.readonly] == shown
    args = bwrap_args(got, user_namespace=True)
    for path in shown:
        at = args.index(path)
        assert args[at - 1] == "--ro-bind" and args.index("--tmpfs") < at


# --- read-only inside the roots, watched paths, limits (issue 27 classes 6 and 7) ---------

H = "/home/u"


@pytest.mark.parametrize(
    ("readonly", "hidden", "kept", "pinned"),
    [
        # Start-up files and folders inside the root ~: kept read-only, parents pinned.
        (
            [f"{H}/.bashrc", f"{H}/.config/autostart"],
            [],
            [f"{H}/.bashrc", f"{H}/.config/autostart"],
            [f"{H}/.config"],
        ),
        # A repository's hooks: the repository and its .git are pinned (no rename away).
        ([f"{H}/proj/.git/hooks"], [], [f"{H}/proj/.git/hooks"], [f"{H}/proj", f"{H}/proj/.git"]),
        # Outside every root everything is read-only already: nothing to add.
        (["/opt/venv", "/etc/profile"], [], [], []),
        # Hidden wins: a read-only path in (or equal to) a hidden one is not shown at all.
        ([f"{H}/.ssh/config", f"{H}/.netrc"], [f"{H}/.ssh", f"{H}/.netrc"], [], []),
        # A hidden path inside a read-only folder stays hidden; no writable pin in between.
        (
            [f"{H}/.config/git"],
            [f"{H}/.config/git/credentials"],
            [f"{H}/.config/git"],
            [f"{H}/.config"],
        ),
        # Nested read-only paths: the outermost is enough.
        (
            [f"{H}/.config/systemd", f"{H}/.config/systemd/user"],
            [],
            [f"{H}/.config/systemd"],
            [f"{H}/.config"],
        ),
    ],
)
def test_plan_keeps_what_runs_later_read_only_inside_the_roots(
    readonly: list[str], hidden: list[str], kept: list[str], pinned: list[str]
) -> None:
    masks = [Hidden(P(h), not h.endswith(("netrc", "credentials"))) for h in hidden]
    got = plan([P(H)], masks, {}, True, TMP, P(H), readonly=[P(r) for r in readonly])
    assert [str(p) for p in got.readonly] == kept
    assert [str(p) for p in got.pinned] == pinned
    assert str(P(H)) in map(str, got.writable)


def test_a_root_inside_the_daemons_installation_stays_read_only() -> None:
    got = plan([P("/src/dm/sub"), P(H)], [], {}, True, TMP, P(H), readonly=[P("/src/dm")])
    assert P("/src/dm/sub") in got.readonly and P("/src/dm") not in got.readonly


def test_bwrap_binds_read_only_over_the_root_and_after_the_pins() -> None:
    got = plan([P(H)], [], {}, True, TMP, P(H), readonly=[P(f"{H}/.config/autostart")])
    ops = [op for op in mount_ops(bwrap_args(got)) if op[-1].startswith(H)]
    assert ops == [
        ("--bind", H, H),
        ("--bind", f"{H}/.config", f"{H}/.config"),
        ("--ro-bind", f"{H}/.config/autostart", f"{H}/.config/autostart"),
    ]


@pytest.mark.parametrize(
    ("watched", "kept"),
    [
        ([f"{H}/.bash_profile"], [f"{H}/.bash_profile"]),
        # Outside the roots nothing can create it; under a hidden or read-only path neither.
        (["/etc/x", f"{H}/.ssh/authorized_keys", f"{H}/.config/systemd/user/x"], []),
    ],
)
def test_plan_watches_only_what_a_call_could_create(watched: list[str], kept: list[str]) -> None:
    got = plan(
        [P(H)],
        [Hidden(P(f"{H}/.ssh"), True)],
        {},
        True,
        TMP,
        P(H),
        readonly=[P(f"{H}/.config/systemd")],
        watched=[P(w) for w in watched],
    )
    assert [str(p) for p in got.watched] == kept


@pytest.mark.parametrize(
    ("limits", "hard", "line"),
    [
        (Limits(), {}, "ulimit -S -H -c 0 -u 1024 -d 8388608 -f 4194304 -t 3600"),
        (
            Limits(processes=64, memory_mb=0, file_mb=1, cpu_s=0),
            {},
            "ulimit -S -H -c 0 -u 64 -f 1024",
        ),
        # Never above what the daemon itself may have (-1: no ceiling).
        (
            Limits(),
            {"u": 500, "d": -1, "t": 60},
            "ulimit -S -H -c 0 -u 500 -d 8388608 -f 4194304 -t 60",
        ),
        (Limits(0, 0, 0, 0), {}, "ulimit -S -H -c 0"),
    ],
)
def test_limits_become_one_ulimit_line(limits: Limits, hard: dict[str, int], line: str) -> None:
    assert limits.ulimit(hard) == line


def test_the_launch_sets_the_limits_inside_the_sandbox_before_the_command() -> None:
    confinement = Confinement(Sandbox.BUBBLEWRAP, "/usr/bin/bwrap", limits=Limits(processes=7))
    launch = confinement.launch(spec([H]), "echo hi")
    try:
        bash_at = launch.argv.index("--")
        script, name, command = launch.argv[bash_at + 3 :]
        assert launch.argv[bash_at + 1 : bash_at + 3] == ["/bin/bash", "-c"]
        assert script.startswith("ulimit -S -H -c 0 -u 7 ") and script.endswith(
            '|| exit 126; exec /bin/bash -c "$1"'
        )
        assert (name, command) == ("bash", "echo hi")
    finally:
        launch.close()


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        (f"{H}/.bashrc", True),
        (f"{H}/.config/autostart/x.desktop", True),
        (f"{H}/venv/lib/site-packages/evil.pth", True),
        (f"{H}/a/b/c/repo/.git/hooks/pre-commit", True),
        (f"{H}/repo/.git/config", True),
        ("/src/main/.git/worktrees/wt/config", True),
        (f"{H}/repo/.vscode/tasks.json", True),
        (f"{H}/repo/sub/.claude/settings.json", True),
        (f"{H}/repo/.idea/workspace.xml", True),
        (f"{H}/repo/.mcp.json", True),
        # Attack review: in another case, which a case-insensitive file system (macOS's
        # default) opens as the guarded name. Each was written before.
        (f"{H}/.BASHRC", True),
        (f"{H}/.Config/Autostart/x.desktop", True),
        (f"{H}/VENV/lib/site-packages/evil.pth", True),
        (f"{H}/repo/.GIT/hooks/pre-commit", True),
        (f"{H}/repo/.git/HOOKS/pre-commit", True),
        (f"{H}/repo/.Git/Config", True),
        (f"{H}/repo/.git/CommonDir", True),
        (f"{H}/repo/.VSCode/tasks.json", True),
        (f"{H}/repo/.MCP.json", True),
        (f"{H}/HEAD", True),
        (f"{H}/notes/sub/HEAD", True),
        (f"{H}/repo/.git/HEAD", False),
        (f"{H}/.bashrc.d-notes.txt", False),
        (f"{H}/repo/src/config", False),
        (f"{H}/repo/.git/COMMIT_EDITMSG", False),
        (f"{H}/repo/docs/hooks/readme.md", False),
        (f"{H}/work/report.md", False),
    ],
)
def test_the_file_tools_refuse_writing_what_runs_later(path: str, refused: bool) -> None:
    readonly = (P(f"{H}/.bashrc"), P(f"{H}/.config/autostart"), P(f"{H}/venv"))
    assert (write_refusal(P(path), readonly) is not None) is refused


def test_the_wall_lists_cover_the_issue() -> None:
    hidden = {g.path for g in HIDDEN_IN_HOME}
    assert {
        ".ssh",
        ".aws",
        ".config/dispatch-matrix",
        ".claude",
        ".claude.json",
        ".codex",
        ".config/git/credentials",
        ".git-credentials",
        ".config/op",
        ".local/share/keyrings",
        ".config/rclone",
        ".terraform.d/credentials.tfrc.json",
    } <= hidden
    readonly = {g.path for g in home_guards("linux")}
    assert {
        ".bashrc",
        ".bash_profile",
        ".profile",
        ".zshrc",
        ".zshenv",
        ".config/fish",
        ".config/systemd",
        ".config/autostart",
        ".config/environment.d",
        ".pam_environment",
        ".xprofile",
        ".xsessionrc",
        ".inputrc",
        ".local/bin",
    } <= readonly
    assert "Library/LaunchAgents" in {g.path for g in home_guards("darwin")}
    # Only folders are ever created empty: an empty file can change what a program does.
    assert all(g.is_dir for g in (*HIDDEN_IN_HOME, *home_guards("darwin")) if g.placeholder)
    assert not any(g.placeholder for g in HIDDEN_IN_HOME)


def test_the_macos_profile_denies_writing_the_read_only_and_watched_paths() -> None:
    got = plan(
        [P(H)],
        [],
        {},
        True,
        TMP,
        P(H),
        readonly=[P(f"{H}/.bashrc")],
        watched=[P(f"{H}/.bash_profile")],
    )
    text = profile(got)
    assert f'(deny file-write* (subpath "{H}/.bashrc") (subpath "{H}/.bash_profile"))' in text
    # After the rule that allows writing the roots: the last matching rule wins.
    assert text.index("(deny file-write* (subpath") > text.index("(allow file-write*")


def test_quarantine_moves_only_what_lies_where_it_was_watched(tmp_path: Path) -> None:
    from dispatch_matrix.sandbox.guards import quarantine

    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    (home / ".bash_profile").write_text("planted\n")
    victim = tmp_path / "victim"
    (victim / "User").mkdir(parents=True)
    # The call turned a folder on the way into a link to somewhere else.
    (home / ".config" / "Code").symlink_to(victim)
    watched = [P(home / ".bash_profile"), P(home / ".config" / "Code" / "User"), P(home / "none")]
    moved = quarantine(watched, "t")
    assert [p.name.startswith(".bash_profile.quarantined-t-") for p in moved] == [True]
    assert not (home / ".bash_profile").exists() and (victim / "User").is_dir()


def test_a_restart_moves_aside_what_an_unfinished_call_planted(tmp_path: Path) -> None:
    from dispatch_matrix.sandbox.guards import note_watched, recover_watched

    home, notes = tmp_path / "home", tmp_path / "state" / "watched"
    home.mkdir()
    (home / "dotfiles").mkdir()
    links = [(P(home / ".bashrc"), "dotfiles/bashrc")]
    note = note_watched(notes, [P(home / ".bash_profile"), P(home / ".zshenv")], links)
    assert oct(note.stat().st_mode & 0o777) == "0o600"
    # The daemon died mid-call: the note stayed, and so did what the call planted.
    (home / ".bash_profile").write_text("planted\n")
    (home / ".bashrc").write_text("planted\n")
    changed = recover_watched(notes, "r")
    assert [p.name.split("-")[0] for p in changed] == [".bash_profile.quarantined", ".bashrc"]
    assert not (home / ".bash_profile").exists() and not list(notes.iterdir())
    assert str((home / ".bashrc").readlink()) == "dotfiles/bashrc"
    assert recover_watched(tmp_path / "none", "r") == []


def test_the_private_tmp_is_sized_when_bubblewrap_can() -> None:
    args = bwrap_args(spec([H]), tmp_bytes=64 * 2**20)
    at = args.index("--tmpfs")
    assert args[at - 2 : at + 2] == ["--size", str(64 * 2**20), "--tmpfs", "/tmp"]
    assert "--size" not in bwrap_args(spec([H]))


def test_repositories_are_found_three_levels_in_and_every_one_a_level_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Red team: `~/code/deep/.git/hooks` was writable (only one level was searched). A
    root filled with folders must not unguard the repositories one level in."""
    from dispatch_matrix.sandbox import guards

    for rel in ("a", "code/deep", "x/y/z", "x/y/z/w", ".hidden/r", "node_modules/p", "q/.c/r"):
        (tmp_path / rel / ".git").mkdir(parents=True)
    found = guards._repositories(tmp_path)
    assert found == [tmp_path / p for p in ("a", "code/deep", "x/y/z")]
    for n in range(50):
        (tmp_path / f"filler{n:02}").mkdir()
    (tmp_path / "zz" / ".git").mkdir(parents=True)
    monkeypatch.setattr(guards, "SEARCH_BUDGET", 10)
    shallow = guards._repositories(tmp_path)
    assert tmp_path / "a" in shallow and tmp_path / "zz" in shallow


@pytest.mark.parametrize(
    ("command", "args", "cwd", "kept"),
    [
        ("npx", ["-y", "@modelcontextprotocol/server-github"], None, [f"{H}/.npm/_npx"]),
        ("uvx", ["mcp-server-fetch"], None, [f"{H}/.cache/uv", f"{H}/.local/share/uv"]),
        (
            "/usr/bin/pipx",
            ["run", "x"],
            None,
            [f"{H}/.local/share/pipx", f"{H}/.local/pipx", "/usr/bin"],
        ),
        ("node", [f"{H}/mcp/srv/dist/index.js"], None, [f"{H}/mcp/srv/dist"]),
        ("node", ["~/mcp/a.mjs"], None, [f"{H}/mcp"]),
        ("python", ["server.py"], f"{H}/srv", [f"{H}/srv"]),
        ("./run.sh", [], f"{H}/srv", [f"{H}/srv"]),
        ("~/bin2/server", ["--port", "1"], None, [f"{H}/bin2"]),
        # In the workdir the owner is working on it; a bare name runs from the PATH.
        ("node", [f"{H}/work/app/server.js"], None, []),
        ("node", [f"{H}/work/server.js"], None, []),
        ("docker", ["run", "-i", "ghcr.io/x/y"], None, []),
        ("true", [], None, []),
    ],
)
def test_the_code_an_mcp_server_runs_is_kept_read_only(
    command: str, args: list[str], cwd: str | None, kept: list[str]
) -> None:
    found = server_code(P(H), P(f"{H}/work/app"), command, args, P(cwd) if cwd else None)
    assert found == [P(k) for k in kept]
