"""Which OS sandbox this machine can run, proven to start before the first call: the
choice `auto` makes, the probe with a real call's options, and, when it cannot start, why
(the kernel's settings read and explained) and what to change. `host.py` runs the calls;
this decides, once at start-up (and for `doctor`), what they run in."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from dispatch_matrix.core.errors import ConfigError
from dispatch_matrix.sandbox import landlock
from dispatch_matrix.sandbox.host import Confinement
from dispatch_matrix.sandbox.spec import Limits, Sandbox, plan

_SYSCTLS = (
    "kernel.apparmor_restrict_unprivileged_userns",
    "kernel.unprivileged_userns_clone",
    "user.max_user_namespaces",
)
_APPARMOR_PROFILE = (
    "abi <abi/4.0>, include <tunables/global> profile bwrap /usr/bin/bwrap "
    "flags=(unconfined) { userns, }"
)


def platform_default(platform: str = sys.platform) -> Sandbox:
    """What `auto` means here."""
    if platform.startswith("linux"):
        return Sandbox.BUBBLEWRAP
    if platform == "darwin":
        return Sandbox.SANDBOX_EXEC
    return Sandbox.NONE


def confinement_for(kind: Sandbox | str, network: bool = True) -> Confinement:
    """The sandbox for `kind` without probing it (unit tests, the bash tool's default)."""
    sandbox = Sandbox(kind)
    if sandbox is Sandbox.AUTO:
        sandbox = platform_default()
    program = {
        Sandbox.BUBBLEWRAP: "bwrap",
        Sandbox.SANDBOX_EXEC: "sandbox-exec",
    }.get(sandbox)
    found = shutil.which(program) if program else None
    return Confinement(
        sandbox, found, network=network, abstract_open=_abstract_open(found, network)
    )


def _abstract_open(program: str | None, network: bool) -> str:
    """Why the host's abstract sockets stay in reach of a call ("" when they do not)."""
    if not network:
        return "the network is off"
    if program is None or not sys.platform.startswith("linux"):
        return "no bubblewrap"
    return landlock.usable(program)


def check_sandbox(
    kind: Sandbox | str,
    *,
    network: bool = True,
    key: str = "agent.sandbox",
    probe: bool = True,
    limits: Limits | None = None,
) -> Confinement:
    """The sandbox `kind` asks for, proven to start; ConfigError when it cannot.

    Never falls back silently: `auto` where nothing can run refuses too, and only an
    explicit `none` runs commands unconfined. With `probe`, starts bubblewrap once with the
    options of a real call (blocking, a few ms: call it from a thread or before the loop).
    """
    try:
        sandbox = Sandbox(kind)
    except ValueError:
        choices = ", ".join(repr(s.value) for s in Sandbox)
        raise ConfigError(key, f"unknown sandbox {kind!r}", f"use one of {choices}") from None
    if sandbox is Sandbox.NONE:
        return Confinement(Sandbox.NONE, network=network)
    none_fix = 'or set sandbox = "none" under [agent] to run shell commands unconfined'
    if sandbox is Sandbox.AUTO:
        sandbox = platform_default()
        if sandbox is Sandbox.NONE:
            raise ConfigError(
                key, f"no OS sandbox is known for this platform ({sys.platform})", none_fix
            )
    if sandbox is Sandbox.SANDBOX_EXEC:
        if sys.platform != "darwin":
            raise ConfigError(key, "sandbox-exec exists on macOS only", f"use auto, {none_fix}")
        program = shutil.which("sandbox-exec")
        if program is None:
            raise ConfigError(key, "`sandbox-exec` is not on the PATH", f"add /usr/bin, {none_fix}")
        return Confinement(Sandbox.SANDBOX_EXEC, program, network=network)
    if not sys.platform.startswith("linux"):
        raise ConfigError(key, "bubblewrap works on Linux only", f"use auto, {none_fix}")
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise ConfigError(
            key,
            "no sandbox can run: bubblewrap (`bwrap`) is not installed",
            f"install it (e.g. `sudo apt install bubblewrap`), {none_fix}",
        )
    found = Confinement(
        Sandbox.BUBBLEWRAP,
        bwrap,
        network=network,
        limits=limits or Limits(),
        abstract_open=_abstract_open(bwrap, network),
    )
    if not probe:
        return found
    failure = ""
    # A root caller may lack user namespaces (some containers) yet mount; try that second.
    # The probe sets the limits too, so a limit the machine refuses shows here, at start.
    for user_namespace in (True, False) if os.geteuid() == 0 else (True,):
        candidate = dataclasses.replace(found, user_namespace=user_namespace)
        failure = probe_once(candidate)
        if failure and not candidate.abstract_open:
            # The Landlock scope itself refused (a container's seccomp profile): the
            # sandbox runs without it, and `describe` says why.
            scoped_failure = failure
            candidate = dataclasses.replace(
                candidate, abstract_open=f"Landlock refused: {scoped_failure[-120:]}"
            )
            failure = probe_once(candidate)
        if not failure:
            return candidate
    why, fix = diagnose(failure, read_sysctls(), os.geteuid())
    raise ConfigError(key, f"bubblewrap cannot start a sandbox here: {why}", f"{fix}, {none_fix}")


def probe_once(confinement: Confinement) -> str:
    """Start `true` under `confinement` with a real call's options; "" or what went wrong."""
    spec = plan([], [], {}, confinement.network, PurePosixPath("/tmp"), PurePosixPath("/"))
    launch = confinement.launch(spec, "true")
    try:
        done = subprocess.run(
            launch.argv,
            env=launch.env,
            pass_fds=launch.pass_fds,
            preexec_fn=launch.preexec,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as err:
        return str(err)
    finally:
        launch.close()
    if done.returncode == 0:
        return ""
    return done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"


def read_sysctls() -> dict[str, str]:
    """The kernel settings that decide whether unprivileged namespaces work."""
    found: dict[str, str] = {}
    for name in _SYSCTLS:
        try:
            found[name] = Path("/proc/sys", *name.split(".")).read_text().strip()
        except OSError:
            continue
    return found


def diagnose(stderr: str, sysctls: Mapping[str, str], euid: int) -> tuple[str, str]:
    """Why bubblewrap failed and how to fix it, from its message and the kernel settings."""
    reason = stderr.strip().splitlines()[-1] if stderr.strip() else "it exited with an error"
    if sysctls.get("kernel.apparmor_restrict_unprivileged_userns") == "1" and euid != 0:
        return (
            f"AppArmor restricts unprivileged user namespaces ({reason})",
            "give bwrap an AppArmor profile that allows them (Ubuntu 24.04: write "
            f"`{_APPARMOR_PROFILE}` to /etc/apparmor.d/bwrap and run `sudo apparmor_parser "
            "-r /etc/apparmor.d/bwrap`), or `sudo sysctl -w "
            "kernel.apparmor_restrict_unprivileged_userns=0`",
        )
    if sysctls.get("kernel.unprivileged_userns_clone") == "0" and euid != 0:
        return (
            f"unprivileged user namespaces are disabled ({reason})",
            "`sudo sysctl -w kernel.unprivileged_userns_clone=1` (and add it to "
            "/etc/sysctl.d/ to keep it)",
        )
    if sysctls.get("user.max_user_namespaces") == "0":
        return (
            f"user namespaces are disabled (user.max_user_namespaces = 0; {reason})",
            "`sudo sysctl -w user.max_user_namespaces=15000` (and add it to /etc/sysctl.d/)",
        )
    if "ermission" in reason or "not permitted" in reason:
        return (
            f"the kernel refused to create namespaces ({reason}); in a container this is "
            "its seccomp or AppArmor profile",
            "run the container with `--security-opt seccomp=unconfined --security-opt "
            "apparmor=unconfined` (or install bwrap setuid root)",
        )
    return (
        reason,
        "run `bwrap --ro-bind / / --unshare-pid --dev /dev --proc /proc true` to see why",
    )


def sandbox_off_warning() -> str:
    """What the log says at start when the operator turned the sandbox off."""
    return (
        'agent.sandbox = "none": shell commands run unconfined, with every file this user can '
        "read, the network, and the daemon's other processes in reach"
    )
