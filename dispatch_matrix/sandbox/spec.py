"""The OS sandbox's rules as data: what one shell call may see, write and reach.

Every `bash` call runs inside an OS sandbox (DESIGN.md §8): the permission rules are the
door, this is the wall. The rules are two pure functions, table-tested:

- `plan(roots, hidden, env, network, tmp, workdir)` → a frozen `SandboxSpec`: the file
  system read-only; the allowed roots read-write; a private `/tmp`; the control plane (state
  folder, config, `*_file` secrets) and the credential paths (`~/.ssh`, `~/.aws`, …) not
  visible at all, also where they lie inside a root; only the allowlisted environment; the
  network on or off.
- `bwrap_args(spec)` → the bubblewrap options (Linux); `sandbox_macos.profile(spec)` → the
  `sandbox-exec` profile with the same rules (macOS).

Bubblewrap is called directly rather than through Anthropic's sandbox-runtime
(`@anthropic-ai/sandbox-runtime`), whose rules and tests we studied. Why, for our users:
it is a Node package, so a Python daemon would need Node, socat and its seccomp helper
binaries on every machine, and a Node process per shell call; its model (write allowlists,
read-deny globs, a domain-filtering proxy) serves a network allowlist we do not offer
(network here is on or off), and the rules we need fit on one screen and are tested here.
From it we kept: `--cap-drop ALL` (a root caller otherwise hands the command
CAP_SYS_ADMIN, which unmounts every mask), `--unshare-user`, deny paths resolved through
symlinks before they are masked, `--new-session` and `--die-with-parent`, a `/proc` of the
sandbox's own. Where it goes further (a proxy that filters domains, a seccomp filter that
refuses new unix sockets) README.md says what that leaves open here.

Two rules of ours go beyond it: every folder between a root and a hidden or read-only path
is bound onto itself, so the command cannot rename a parent of the state folder and find it
unmasked at its new name in the next call (rename of a mount point is EBUSY); and the hidden
folders are mounted read-only, so a write there fails honestly instead of vanishing with the
call. What is hidden and read-only is data (`wall_paths.py`, and the config's marked secret
files); the limits of each call are `Limits`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath

from dispatch_matrix.sandbox.wall_paths import HIDDEN_IN_HOME


class Sandbox(StrEnum):
    """How shell commands are confined by the OS (the file tools are always confined)."""

    AUTO = "auto"
    BUBBLEWRAP = "bubblewrap"
    SANDBOX_EXEC = "sandbox-exec"
    NONE = "none"


# Under the home folder: where credentials live (the list is `wall_paths.HIDDEN_IN_HOME`).
CREDENTIAL_PATHS: tuple[str, ...] = tuple(guard.path for guard in HIDDEN_IN_HOME)

# Sockets that hand out more than the sandbox allows: a container engine is root on the host.
HOST_SOCKETS: tuple[str, ...] = (
    "/run/docker.sock",
    "/var/run/docker.sock",
    "/run/podman",
    "/run/containerd",
    # Attack review 3: the other engines whose group is root on the host (a VM or a
    # container with the host's disk): libvirt, LXD (snap and not), Incus, CRI-O, k3s,
    # BuildKit.
    "/run/libvirt",
    "/var/run/libvirt",
    "/var/snap/lxd/common/lxd/unix.socket",
    "/var/lib/lxd/unix.socket",
    "/var/lib/incus/unix.socket",
    "/run/incus",
    "/run/crio",
    "/run/k3s",
    "/run/buildkit",
)

# Secrets a container or a pod is handed as files: Docker's and Compose's secrets, a
# Kubernetes service account's token (the cluster's credentials). The config may name some
# of them (then they are hidden as its secret files); the others are hidden all the same.
HOST_SECRETS: tuple[str, ...] = ("/run/secrets", "/var/run/secrets")

# The sandbox's own mounts; nothing of ours is placed inside them.
_KERNEL_FS = (PurePosixPath("/dev"), PurePosixPath("/proc"))


@dataclass(frozen=True)
class Hidden:
    """A path to hide, as found on disk: canonical (symlinks followed) and its kind."""

    path: PurePosixPath
    is_dir: bool
    # A file's hard links: its other names cannot be masked, because nothing says where.
    links: int = 1


@dataclass(frozen=True)
class Limits:
    """Resource limits of one call, per process (rlimits); 0 means none.

    Set inside the sandbox, after its user namespace exists: there the kernel counts
    processes per namespace (Linux 5.14+), so `processes` bounds this call alone, not every
    process of the user on the machine.
    """

    processes: int = 1024
    memory_mb: int = 8192
    file_mb: int = 4096
    cpu_s: int = 3600
    # The private /tmp is memory (tmpfs): its size, for the whole call (bubblewrap 0.7+).
    tmp_mb: int = 2048

    def ulimit(self, hard: dict[str, int] | None = None) -> str:
        """The `ulimit` line that sets them (soft and hard, so no command can raise them
        again) and forbids core dumps. `hard`: the caller's own hard limits per option
        letter, which an unprivileged process cannot exceed. Pure."""
        wanted = {
            "u": self.processes,
            "d": self.memory_mb * 1024,
            "f": self.file_mb * 1024,
            "t": self.cpu_s,
        }
        words = ["ulimit", "-S", "-H", "-c", "0"]
        for letter, value in wanted.items():
            if value <= 0:
                continue
            ceiling = (hard or {}).get(letter, -1)
            if ceiling >= 0:
                value = min(value, ceiling)
            words += [f"-{letter}", str(value)]
        return " ".join(words)

    def describe(self) -> str:
        """One line for the log and `doctor`."""
        parts = [
            f"{self.processes} processes" if self.processes else "processes unlimited",
            f"{self.memory_mb} MB data per process" if self.memory_mb else "memory unlimited",
            f"{self.file_mb} MB per file" if self.file_mb else "file size unlimited",
            f"{self.cpu_s} s CPU per process" if self.cpu_s else "CPU time unlimited",
            f"{self.tmp_mb} MB of /tmp" if self.tmp_mb else "/tmp up to half the memory",
        ]
        return ", ".join(parts) + ", no core dumps"


@dataclass(frozen=True)
class SandboxSpec:
    """Everything one sandboxed shell call gets; mounts are listed outermost first."""

    writable: tuple[PurePosixPath, ...]
    hidden_dirs: tuple[PurePosixPath, ...]
    hidden_files: tuple[PurePosixPath, ...]
    # Folders between a root and a hidden path, bound onto themselves so that they cannot
    # be renamed (a mount point cannot), which would carry the hidden path to a new name.
    pinned: tuple[PurePosixPath, ...]
    env: tuple[tuple[str, str], ...]
    network: bool
    tmp: PurePosixPath
    workdir: PurePosixPath
    # Roots that lie inside a hidden path: hidden wins, they are neither writable nor seen.
    dropped_roots: tuple[PurePosixPath, ...] = ()
    # Hidden files with more than one name: a command may read them under another.
    unmaskable: tuple[PurePosixPath, ...] = ()
    # Read-only even where a root or the private /tmp would show them writable or not at
    # all: what runs later outside the sandbox (start-up files, `.git/hooks`, the daemon's
    # own installation). Elsewhere everything is read-only anyway.
    readonly: tuple[PurePosixPath, ...] = ()
    # Paths that did not exist and could not be masked: one the call creates is moved aside
    # after it (guards.quarantine).
    watched: tuple[PurePosixPath, ...] = ()
    # Guarded paths that are symbolic links inside a root (a dotfile kept elsewhere), with
    # their targets: the mount covers the target, so a replaced link is put back after.
    links: tuple[tuple[PurePosixPath, str], ...] = ()

    def mounts(self) -> list[tuple[str, PurePosixPath]]:
        """The mount operations in the order they must be made: parents before children, so
        a later, deeper mount overlays an earlier one (a mask lands on top of its root)."""
        ops: list[tuple[str, PurePosixPath]] = [("tmp", self.tmp)]
        ops += [("root", p) for p in self.writable]
        ops += [("ro", p) for p in self.readonly]
        ops += [("pin", p) for p in self.pinned]
        ops += [("hide-dir", p) for p in self.hidden_dirs]
        ops += [("hide-file", p) for p in self.hidden_files]
        order = {"root": 0, "tmp": 1, "ro": 2, "pin": 3, "hide-dir": 4, "hide-file": 5}
        return sorted(ops, key=lambda op: (len(op[1].parts), order[op[0]], str(op[1])))


def within(child: PurePosixPath, parent: PurePosixPath) -> bool:
    """Whether `child` is `parent` or lies inside it (both absolute and normalised)."""
    return child.parts[: len(parent.parts)] == parent.parts


class _Under:
    """Whether a path is one of some folders or inside one, in as many set lookups as the
    path is deep (a call's plan asks this thousands of times of dozens of folders)."""

    def __init__(self, folders: Iterable[PurePosixPath]) -> None:
        self._parts: set[tuple[str, ...]] = set()
        self._depths: list[int] = []
        for folder in folders:
            self.add(folder)

    def add(self, folder: PurePosixPath) -> None:
        """Count `folder` in too."""
        parts = folder.parts
        self._parts.add(parts)
        # Depth 0 (an empty path) never matched: the prefixes asked start at one part.
        if parts and len(parts) not in self._depths:
            self._depths = sorted({*self._depths, len(parts)})

    def __call__(self, path: PurePosixPath) -> bool:
        parts = path.parts
        # Only the depths some folder has can match: two or three lookups, not one per level.
        for depth in self._depths:
            if depth > len(parts):
                return False
            if parts[:depth] in self._parts:
                return True
        return False


def _outermost(paths: Iterable[PurePosixPath]) -> list[PurePosixPath]:
    """The paths without duplicates and without those inside another, shortest first."""
    kept: list[PurePosixPath] = []
    seen = _Under(())
    for path in sorted(set(paths), key=lambda p: (len(p.parts), str(p))):
        if not seen(path):
            kept.append(path)
            seen.add(path)
    return kept


def _valid_env(env: Mapping[str, str]) -> list[tuple[str, str]]:
    return sorted(
        (name, value)
        for name, value in env.items()
        if name and "=" not in name and "\x00" not in name and "\x00" not in value
    )


def plan(
    roots: Sequence[PurePosixPath],
    hidden: Sequence[Hidden],
    env: Mapping[str, str],
    network: bool,
    tmp: PurePosixPath,
    workdir: PurePosixPath,
    readonly: Sequence[PurePosixPath] = (),
    watched: Sequence[PurePosixPath] = (),
    links: Sequence[tuple[PurePosixPath, str]] = (),
) -> SandboxSpec:
    """The sandbox for one call. Pure: every path is already canonical (see `survey`).

    `readonly`: existing paths to show read-only even inside a root or under the private
    /tmp (the daemon's own interpreter); elsewhere they are read-only anyway, and a hidden
    one stays hidden. `watched`: missing ones that could not be masked, kept when a call
    could create them (inside a root); `links`: guarded links a call could replace, the same.

    Hidden paths always win over roots, read-only ones over roots: a root inside a hidden
    folder is dropped, a hidden or read-only path inside a root is mounted on top of it. A
    path that nothing would show anyway (under the private /tmp and in no root, or under
    /dev or /proc) is left out.
    """
    hidden_dirs = _outermost(h.path for h in hidden if h.is_dir)
    hidden_files = sorted(
        {
            h.path
            for h in hidden
            if not h.is_dir and not any(within(h.path, d) for d in hidden_dirs)
        },
        key=str,
    )
    kept_roots: list[PurePosixPath] = []
    dropped: list[PurePosixPath] = []
    for root in _outermost(roots):
        if any(within(root, d) for d in hidden_dirs) or root in hidden_files:
            dropped.append(root)
        else:
            kept_roots.append(root)

    def in_root(path: PurePosixPath) -> bool:
        return any(within(path, r) for r in kept_roots)

    def under_tmp(path: PurePosixPath) -> bool:
        # Shown under the private /tmp only when nothing hidden lies in or above it.
        return (
            within(path, tmp)
            and path != tmp
            and not any(within(d, path) for d in hidden_dirs)
            and not any(within(f, path) for f in hidden_files)
        )

    kept_readonly = [
        path
        for path in _outermost(readonly)
        if (in_root(path) or under_tmp(path))
        and not any(within(path, d) for d in hidden_dirs)
        and path not in hidden_files
    ]
    # A root inside a read-only path (a root in the daemon's own checkout) stays read-only.
    kept_readonly += [
        r
        for r in kept_roots
        if any(within(r, p) and r != p for p in readonly) and r not in kept_readonly
    ]

    def shown(path: PurePosixPath) -> bool:
        if any(within(path, k) for k in _KERNEL_FS):
            return False
        in_root = any(within(path, r) for r in [*kept_roots, *kept_readonly])
        return in_root or not within(path, tmp)

    hidden_dirs = [d for d in hidden_dirs if shown(d)]
    hidden_files = [f for f in hidden_files if shown(f)]
    # A folder on the way to a masked or read-only path is pinned (bound onto itself) so
    # that it cannot be renamed away with the mount; not inside a read-only one, where
    # nothing can be renamed anyway (and a writable pin would undo the read-only mount).
    under_readonly = _Under(kept_readonly)
    under_hidden = _Under(hidden_dirs)
    pinned: set[PurePosixPath] = set()
    for path in [*hidden_dirs, *hidden_files, *kept_readonly]:
        for root in kept_roots:
            if within(path, root) and path != root:
                parent = path.parent
                while parent != root and within(parent, root):
                    if not under_readonly(parent):
                        pinned.add(parent)
                    parent = parent.parent
    kept_watched = sorted(
        {w for w in watched if in_root(w) and not under_hidden(w) and not under_readonly(w)},
        key=str,
    )
    variables = dict(_valid_env(env))
    variables["TMPDIR"] = str(tmp)
    return SandboxSpec(
        writable=tuple(kept_roots),
        hidden_dirs=tuple(hidden_dirs),
        hidden_files=tuple(hidden_files),
        pinned=tuple(sorted(pinned, key=lambda p: (len(p.parts), str(p)))),
        env=tuple(sorted(variables.items())),
        network=network,
        tmp=tmp,
        workdir=workdir,
        dropped_roots=tuple(dropped),
        unmaskable=tuple(sorted({h.path for h in hidden if not h.is_dir and h.links > 1}, key=str)),
        readonly=tuple(kept_readonly),
        watched=tuple(kept_watched),
        links=tuple(
            sorted(
                (link, target)
                for link, target in set(links)
                if in_root(link) and not under_hidden(link) and not under_readonly(link)
            )
        ),
    )


def bwrap_args(spec: SandboxSpec, *, user_namespace: bool = True, tmp_bytes: int = 0) -> list[str]:
    """bubblewrap's options for `spec` (without the program and the command). Pure.

    `user_namespace=False` is for a root caller whose kernel refuses a new user namespace
    (some containers); `--cap-drop ALL` keeps the command powerless either way.
    `tmp_bytes`: the size of the private /tmp (it lives in memory), 0 for the kernel's
    default of half the memory (bubblewrap before 0.7 has no `--size`).
    """
    args = ["--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc"]
    if user_namespace:
        args.append("--unshare-user")
    if not spec.network:
        args.append("--unshare-net")
    args += ["--cap-drop", "ALL", "--clearenv"]
    for name, value in spec.env:
        args += ["--setenv", name, value]
    args += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for kind, path in spec.mounts():
        where = str(path)
        if kind == "tmp":
            args += ["--size", str(tmp_bytes)] if tmp_bytes > 0 else []
            args += ["--tmpfs", where]
        elif kind in ("root", "pin"):
            args += ["--bind", where, where]
        elif kind == "ro":
            args += ["--ro-bind", where, where]
        elif kind == "hide-dir":
            args += ["--tmpfs", where, "--remount-ro", where]
        else:
            args += ["--ro-bind", "/dev/null", where]
    args += ["--chdir", str(spec.workdir)]
    return args
