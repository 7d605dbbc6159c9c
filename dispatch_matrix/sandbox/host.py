"""The sandbox on this machine: which one runs, whether it can start, and one call's launch.

`check_sandbox` turns the configured kind (`auto`, `bubblewrap`, `sandbox-exec`, `none`)
into a `Confinement`, probing bubblewrap once with the very options every call uses; when
no sandbox can run it refuses with the reason and the fix (`diagnose`, pure) and never
falls back to running commands unconfined. `survey` looks up the hidden paths on disk,
`spec_for` adds the read-only guards (`guards.py`) and makes the call's spec, and
`Confinement.launch` wraps one command, its per-call limits set first.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from stat import S_ISDIR

from dispatch_matrix.core.errors import ToolError
from dispatch_matrix.core.paths import canonicalize
from dispatch_matrix.sandbox.guards import Canonical, guards_for, hidden_placeholders, placeholders
from dispatch_matrix.sandbox.landlock import restrict_child
from dispatch_matrix.sandbox.macos import sandbox_exec_argv
from dispatch_matrix.sandbox.sockets import socket_paths
from dispatch_matrix.sandbox.spec import (
    CREDENTIAL_PATHS,
    HOST_SECRETS,
    HOST_SOCKETS,
    Hidden,
    Limits,
    Sandbox,
    SandboxSpec,
    bwrap_args,
    plan,
)
from dispatch_matrix.sandbox.wall_paths import Guard

BASH = "/bin/bash"


@dataclass(frozen=True)
class Confinement:
    """The sandbox every shell call runs in, as found on this machine."""

    kind: Sandbox
    program: str | None = None
    # bubblewrap: whether it makes a user namespace (a root caller in some containers cannot).
    user_namespace: bool = True
    network: bool = True
    limits: Limits = Limits()
    # bubblewrap with the network on: whether the host's abstract unix sockets are scoped
    # out of reach by Landlock (`landlock.py`); "" when they are, else why not.
    abstract_open: str = "not probed"
    # Whether shell calls are confined at all: fixed with the kind, so decided here once
    # rather than at every call and tool listing.
    active: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "active", self.kind is not Sandbox.NONE)

    def describe(self) -> str:
        """One line for the log and `doctor`."""
        if not self.active:
            return "none: shell commands run unconfined"
        details = [self.program or "?", "network on" if self.network else "network off"]
        if self.kind is Sandbox.BUBBLEWRAP and not self.user_namespace:
            details.append("no user namespace (root, capabilities dropped)")
        if self.kind is Sandbox.BUBBLEWRAP and self.network:
            details.append(
                "the host's abstract unix sockets out of reach (Landlock)"
                if not self.abstract_open
                else f"the host's abstract unix sockets in reach ({self.abstract_open})"
            )
        if self.kind is Sandbox.BUBBLEWRAP:
            details.append(f"limits per call: {self.limits.describe()} (rlimits; no cgroup)")
            if self.limits.tmp_mb and self.program and not bwrap_sizes_tmpfs(self.program):
                details.append("this bubblewrap cannot size /tmp (0.7+ can)")
            if os.geteuid() == 0:
                details.append("as root the process limit does not apply")
        return f"{self.kind.value} ({', '.join(details)})"

    def launch(self, spec: SandboxSpec, command: str) -> SandboxedLaunch:
        """How to start `command` under this sandbox."""
        env = dict(spec.env)
        if self.kind is Sandbox.NONE:
            return SandboxedLaunch([BASH, "-c", command], env)
        if self.program is None:
            raise ToolError(f"the {self.kind.value} sandbox is configured but not installed")
        if self.kind is Sandbox.SANDBOX_EXEC:
            return SandboxedLaunch(sandbox_exec_argv(self.program, spec, command), env)
        # The options go through a file descriptor, not argv: the environment's values
        # would otherwise be in every host user's `ps`. bwrap itself gets no environment,
        # so the sandbox's /proc/1/environ holds nothing either.
        tmp_bytes = self.limits.tmp_mb * 2**20 if bwrap_sizes_tmpfs(self.program) else 0
        options = bwrap_args(spec, user_namespace=self.user_namespace, tmp_bytes=tmp_bytes)
        fd = os.memfd_create("dispatch-bwrap-args")
        try:
            os.write(fd, b"".join(arg.encode() + b"\0" for arg in options))
            os.lseek(fd, 0, os.SEEK_SET)
        except OSError:
            os.close(fd)
            raise
        # A name for this sandbox that its first process carries in its argv (an empty folder
        # in its private /tmp), so that `reap` can find it if bwrap is killed mid-setup.
        tag = f"/tmp/.dispatch-sandbox-{secrets.token_hex(8)}"
        # The limits are set by a first shell inside the sandbox, which then becomes the
        # command's: inside its user namespace the process count is this call's alone.
        limited = f'{self.limits.ulimit(own_hard_limits())} || exit 126; exec {BASH} -c "$1"'
        argv = [self.program, "--args", str(fd), "--dir", tag, "--", BASH, "-c", limited]
        argv += ["bash", command]
        scope = restrict_child if spec.network and not self.abstract_open else None
        return SandboxedLaunch(argv, {}, pass_fds=(fd,), tag=tag, preexec=scope)


@functools.cache
def bwrap_sizes_tmpfs(program: str) -> bool:
    """Whether this bubblewrap takes `--size` for a tmpfs (0.7 and later); asked once."""
    try:
        done = subprocess.run(
            [program, "--help"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--size" in done.stdout + done.stderr


def own_hard_limits() -> dict[str, int]:
    """This process's hard limits, by `ulimit` letter and in its units (-1: none); a limit
    above them cannot be set by an unprivileged process."""
    found: dict[str, int] = {}
    for letter, which, unit in (
        ("u", resource.RLIMIT_NPROC, 1),
        ("d", resource.RLIMIT_DATA, 1024),
        ("f", resource.RLIMIT_FSIZE, 1024),
        ("t", resource.RLIMIT_CPU, 1),
    ):
        hard = resource.getrlimit(which)[1]
        found[letter] = -1 if hard == resource.RLIM_INFINITY else hard // unit
    return found


@dataclass
class SandboxedLaunch:
    """One sandboxed command: its argv, the environment of the first process, and the file
    descriptors it inherits (closed by `close` once it started)."""

    argv: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...] = field(default=())
    tag: str = ""
    # Run in the child just before it execs the sandbox (the Landlock scope), or None.
    preexec: Callable[[], None] | None = None

    def reap(self) -> int:
        """Kill what is left of this sandbox; how many processes that took.

        Killing bwrap normally ends its sandbox (the pid namespace dies with its first
        process, which dies with bwrap). But bubblewrap 0.8 arms that only after its clone:
        measured, 1 in 200 kills in the first milliseconds left the sandbox running, adopted
        by init. Its first process keeps bwrap's argv, tag included; killing it ends the rest.
        """
        if not self.tag:
            return 0
        needle = self.tag.encode()
        killed = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if needle in (entry / "cmdline").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed += 1
            except (OSError, ValueError):
                continue
        return killed

    def close(self) -> None:
        for fd in self.pass_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.pass_fds = ()


def default_hidden(home: Path, uid: int, env: Mapping[str, str] | None = None) -> list[Path]:
    """The credential paths, the user's runtime folder (agent, keyring and session-bus
    sockets, `systemctl --user`), the system bus, the container engines' sockets, a
    container's or a pod's secret files, and the other local sockets that hand out more than
    the sandbox allows (`sockets.py`; those `env` names, when given)."""
    return [
        *socket_paths(home, env or {}),
        *(home / p for p in CREDENTIAL_PATHS),
        *(Path(p) for p in HOST_SOCKETS),
        *(Path(p) for p in HOST_SECRETS),
        Path("/run/dbus"),
        Path("/run/systemd/private"),
        Path(f"/run/user/{uid}"),
    ]


def survey(paths: Iterable[Path], canonical: Canonical | None = None) -> list[Hidden]:
    """The hidden paths that exist, canonical (a symlinked one is masked at its target).
    `canonical`: the call's lookups, shared with its other plans."""
    found: list[Hidden] = []
    if canonical is None:
        canonical = Canonical()
    for path in paths:
        try:
            real, exists = canonical.find(os.path.normpath(path.expanduser()))
            if not exists:
                continue
            st = Path(real).stat()
        except (OSError, ValueError):
            continue
        found.append(Hidden(PurePosixPath(real), S_ISDIR(st.st_mode), st.st_nlink))
    return found


def spec_for(
    roots: Iterable[Path],
    hidden: Iterable[Path],
    env: Mapping[str, str],
    network: bool,
    workdir: Path,
    tmp: str = "/tmp",
    *,
    readonly: Iterable[Path] = (),
    home: Path | None = None,
    cache: Path | None = None,
) -> SandboxSpec:
    """The spec of one call: the rules applied to what is on disk right now.

    `readonly`: paths kept read-only inside the roots besides the wall's own lists (the
    daemon's installation); `home`: the home folder the wall's lists are relative to (its
    guards are applied only when given); `cache`: the sandbox's own cache folder (made by
    `caches.ensure`), writable like a root but no tree of the owner's, so no tree guards.
    """
    roots = list(roots)
    canonical_roots = []
    for root in roots:
        try:
            canonical_roots.append(PurePosixPath(canonicalize(root.expanduser())))
        except OSError:
            continue
    if cache is not None:
        canonical_roots.append(PurePosixPath(canonicalize(cache)))
    guards: list[tuple[Path, Guard]] = [(p, Guard(str(p), True, False)) for p in readonly]
    hidden = list(hidden)
    # Hidden paths missing inside a root are watched (a command could plant one: an
    # `.ssh/authorized_keys`, an `.npmrc` that runs a script); the existing ones are masked
    # at their targets, so a link to one (a linked ~/.ssh, a secret file the config names
    # through a link) is put back if a call replaced it: the daemon would read the new one.
    secret_guards = [(p.expanduser(), Guard(str(p), True, False)) for p in hidden]
    if home is not None:
        guards += guards_for(home, roots, workdir)
        secret_guards += hidden_placeholders(home)
    # One snapshot of the disk for the whole plan: the guards share their folders.
    canonical = Canonical()
    _found, watched_hidden, hidden_links = placeholders(secret_guards, roots, canonical)
    existing, watched, links = placeholders(guards, roots, canonical)
    return plan(
        canonical_roots,
        survey(hidden, canonical),
        env,
        network,
        PurePosixPath(tmp),
        PurePosixPath(canonicalize(workdir)),
        readonly=[*_interpreter_paths(), *existing],
        watched=[*watched, *watched_hidden],
        links=[*links, *hidden_links],
    )


def _interpreter_paths() -> list[PurePosixPath]:
    """Where the daemon's own Python lives (its venv, its base install): commands may run
    that interpreter even when it lies under /tmp."""
    found = []
    for path in {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).parent}:
        try:
            found.append(PurePosixPath(canonicalize(path)))
        except OSError:
            continue
    return found


def hard_linked_secrets(hidden: Iterable[Path], limit: int = 20_000) -> list[Path]:
    """Files in the hidden paths that have another name somewhere (st_nlink > 1): the
    sandbox masks names, so those other names stay readable. For the start-up log."""
    found: list[Path] = []
    seen = 0
    for path in hidden:
        try:
            real = canonicalize(path.expanduser())
            st = real.lstat()
        except (OSError, ValueError):
            continue
        if not S_ISDIR(st.st_mode):
            if st.st_nlink > 1 and not real.is_dir():
                found.append(real)
            continue
        for dirpath, _dirs, files in os.walk(real):
            for name in files:
                seen += 1
                if seen > limit:
                    return found
                try:
                    if Path(dirpath, name).lstat().st_nlink > 1:
                        found.append(Path(dirpath, name))
                except OSError:
                    continue
    return found
