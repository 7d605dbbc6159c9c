"""The `bash` tool: one fresh `/bin/bash -c` per call, in its own process group.

Unlike the SDK's reference (a persistent shell), every call starts a new shell: stdin is
closed, the environment is exactly the one the daemon hands in (never its own), and the
whole process group is stopped when the command ends, times out or is cancelled — so no
child outlives the call and `!cancel` can kill a command through the pgid it is told about.
With `Sandbox.BUBBLEWRAP` the shell runs under `bwrap`: the allowed roots writable, the rest
of the file system read-only, its own pid namespace, the network shared.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ToolError
from .base import ToolContext, ToolResult
from .paths import canonicalize
from .process import run_command
from .schema import BASH_SCHEMA, BashInput, guarded, parse_input

_BASH = "/bin/bash"


class Sandbox(StrEnum):
    """How shell commands are confined by the OS (the file tools are always confined)."""

    NONE = "none"
    BUBBLEWRAP = "bubblewrap"


def check_sandbox(kind: Sandbox | str, *, key: str = "agent.sandbox", probe: bool = True) -> None:
    """Refuse to start when the sandbox asked for cannot work here; never fall back silently.

    With `probe`, runs `bwrap` once to prove it can create its namespaces (blocking, a few
    milliseconds; call it before the event loop or through a thread).
    """
    try:
        sandbox = Sandbox(kind)
    except ValueError:
        choices = ", ".join(repr(s.value) for s in Sandbox)
        raise ConfigError(key, f"unknown sandbox {kind!r}", f"use one of {choices}") from None
    if sandbox is Sandbox.NONE:
        return
    if not sys.platform.startswith("linux"):
        raise ConfigError(key, "bubblewrap works on Linux only", 'set sandbox = "none"')
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise ConfigError(
            key,
            "bubblewrap was asked for but `bwrap` is not installed",
            'install it (e.g. `apt install bubblewrap`) or set sandbox = "none"',
        )
    if not probe:
        return
    try:
        done = subprocess.run(
            [bwrap, "--ro-bind", "/", "/", "--unshare-pid", "--", _BASH, "-c", "true"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ConfigError(
            key, f"`bwrap` could not run: {err}", 'fix bubblewrap or set sandbox = "none"'
        ) from err
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"
        raise ConfigError(
            key,
            f"`bwrap` cannot create a sandbox here: {reason}",
            'allow unprivileged user namespaces (or install bwrap setuid), or set sandbox = "none"',
        )


def minimal_env(home: Path | None = None) -> dict[str, str]:
    """A small environment for commands when the daemon hands none: never the daemon's own."""
    entry = pwd.getpwuid(os.getuid())
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    if sys.platform == "darwin":
        path = "/opt/homebrew/bin:" + path
    return {
        "PATH": path,
        "HOME": str(home or entry.pw_dir),
        "USER": entry.pw_name,
        "LOGNAME": entry.pw_name,
        "LANG": "en_US.UTF-8" if sys.platform == "darwin" else "C.UTF-8",
        "TERM": "dumb",
        "TMPDIR": tempfile.gettempdir(),
    }


class BashTool:
    """`bash`: run one command and report its output and exit code."""

    name = "bash"

    def __init__(self, sandbox: Sandbox | str = Sandbox.NONE) -> None:
        self.sandbox = Sandbox(sandbox)

    def definition(self) -> dict[str, Any]:
        """The Messages API entry."""
        return {
            "name": self.name,
            "description": (
                "Run a shell command with `/bin/bash -c` in the workdir. Each call is a fresh "
                "shell: `cd`, variables and background jobs do not carry over, stdin is closed "
                "(nothing can prompt), and anything the command leaves running is stopped when "
                "it finishes. stdout and stderr come back interleaved, with the exit code; long "
                "output keeps its beginning and end. Commands time out after timeout_ms "
                "(default 2 minutes)."
            ),
            "input_schema": BASH_SCHEMA,
        }

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Run one command."""
        return await guarded(self.name, self._run(tool_input, ctx))

    async def _run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        args = parse_input(BashInput, tool_input)
        if not args.command or not args.command.strip():
            if args.restart:
                return ToolResult.text("every bash call already runs in a fresh shell")
            raise ToolError("command is required")
        timeout = ctx.bash_timeout_s
        if args.timeout_ms is not None and args.timeout_ms > 0:
            timeout = args.timeout_ms / 1000
        timeout = min(timeout, ctx.bash_max_timeout_s)
        if not ctx.workdir.is_dir():
            raise ToolError(f"the workdir {ctx.workdir} does not exist")
        argv = self._argv(args.command, ctx)
        env = dict(ctx.env) if ctx.env else minimal_env()
        return await run_command(argv, ctx, env, timeout)

    def _argv(self, command: str, ctx: ToolContext) -> list[str]:
        if self.sandbox is Sandbox.NONE:
            return [_BASH, "-c", command]
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise ToolError("the bubblewrap sandbox is configured but `bwrap` is not installed")
        return [bwrap, *bwrap_args(ctx), "--", _BASH, "-c", command]


def bwrap_args(ctx: ToolContext) -> list[str]:
    """bwrap options: roots read-write over a read-only /, private /tmp, own pid namespace."""
    args = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for root in ctx.allowed_roots:
        real = _existing(root)
        if real is not None:
            args += ["--bind", str(real), str(real)]
    # The denied paths are hidden, also where they lie inside a root.
    for denied in ctx.denied_paths:
        real = _existing(denied)
        if real is None:
            continue
        args += ["--tmpfs", str(real)] if real.is_dir() else ["--ro-bind", "/dev/null", str(real)]
    # No --new-session: the shell must stay in the process group we signal.
    args += ["--unshare-pid", "--die-with-parent", "--chdir", str(ctx.workdir)]
    # The host's TMPDIR may be read-only in here; /tmp is a private, writable tmpfs.
    args += ["--setenv", "TMPDIR", "/tmp"]
    return args


def _existing(path: Path) -> Path | None:
    try:
        real = canonicalize(path.expanduser())
    except OSError:
        return None
    return real if real.exists() else None
