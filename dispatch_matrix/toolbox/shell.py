"""The `bash` tool: one fresh `/bin/bash -c` per call, in its own process group and sandbox.

Unlike the SDK's reference (a persistent shell), every call starts a new shell: stdin is
closed, the environment is exactly the one the daemon hands in (never its own), and the
whole process group is stopped when the command ends, times out or is cancelled, so
`!cancel` can kill a command through the pgid it is told about. Under bubblewrap (the
default on Linux) the shell also runs in the OS sandbox that `sandbox.py` describes: the
roots writable, the rest read-only, the control plane and the credentials invisible, its
own pid namespace, so that nothing it started outlives the call, not even a `setsid` child.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import ToolError
from dispatch_matrix.core.paths import canonicalize
from dispatch_matrix.sandbox.caches import cache_env, ensure
from dispatch_matrix.sandbox.choice import check_sandbox, confinement_for
from dispatch_matrix.sandbox.guards import note_watched, quarantine, restore_links
from dispatch_matrix.sandbox.host import Confinement, spec_for
from dispatch_matrix.sandbox.spec import Sandbox
from dispatch_matrix.toolbox.base import ToolContext, ToolResult
from dispatch_matrix.toolbox.paths import home_of
from dispatch_matrix.toolbox.process import run_command
from dispatch_matrix.toolbox.schema import BASH_SCHEMA, BashInput, guarded, parse_input

__all__ = ["BashTool", "Sandbox", "check_sandbox", "minimal_env"]

_BASH = "/bin/bash"
_SANDBOXED = (
    " The shell runs in a sandbox: only the allowed roots are writable, /tmp is private to "
    "the call, and the bot's own state and the user's credentials are not visible. Shell "
    "start-up files, service and autostart folders, .git/hooks and .git/config, editor and "
    "agent settings and the bot's own installation are read-only even inside the roots. "
    "The user's package caches are read-only too: with the network on, cargo, Go, npm, "
    "Maven and pre-commit are pointed at a cache of the sandbox's own (CARGO_HOME, "
    "GOMODCACHE… are set), so leave those variables as they are."
)
log = logs.get(__name__)


def _undo(
    watched: tuple[PurePosixPath, ...], links: tuple[tuple[PurePosixPath, str], ...]
) -> list[Path]:
    """After a call: what it planted at a watched path is moved aside, a guarded link it
    replaced is put back; the paths concerned."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return [*quarantine(watched, stamp), *restore_links(links, stamp)]


def _with_caches(
    ctx: ToolContext, env: dict[str, str], network: bool
) -> tuple[dict[str, str], Path | None, str | None]:
    """The call's environment with the sandbox's own caches (sandbox/caches.py), the folder
    to bind writable, and why there are none when the folder cannot be made (the call still
    runs: a full disk must not take away the `df` that finds out why). Unchanged when the
    context names no folder or when it lies in a path the sandbox hides."""
    folder = ctx.sandbox_cache
    if folder is None:
        return env, None, None
    for denied in ctx.denied_paths:
        if folder.is_relative_to(denied.expanduser()):
            return env, None, None
    roots: list[PurePosixPath] = []
    for root in ctx.allowed_roots:
        roots.append(PurePosixPath(root.expanduser()))
        try:
            roots.append(PurePosixPath(canonicalize(root.expanduser())))
        except OSError:
            continue
    variables = cache_env(env, PurePosixPath(folder), roots, network)
    if not variables:
        return env, None, None
    try:
        ensure(folder, variables)
    except ToolError as exc:
        log.warning("sandbox.cache_unavailable", folder=str(folder), error=str(exc))
        return env, None, str(exc)
    return {**env, **variables}, folder, None


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

    def __init__(self, sandbox: Confinement | Sandbox | str = Sandbox.NONE) -> None:
        self.confinement = sandbox if isinstance(sandbox, Confinement) else confinement_for(sandbox)

    @property
    def sandbox(self) -> Sandbox:
        """Which sandbox wraps the calls."""
        return self.confinement.kind

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
                "(default 2 minutes)." + (_SANDBOXED if self.confinement.active else "")
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
        env = dict(ctx.env) if ctx.env else minimal_env()
        if not self.confinement.active:
            return await run_command([_BASH, "-c", args.command], ctx, env, timeout)
        if self.confinement.kind is Sandbox.SANDBOX_EXEC:
            # No mount namespace on macOS: a fresh temp folder per call stands for /tmp.
            tmp = tempfile.mkdtemp(prefix="dispatch-tmp-")
            try:
                return await self._sandboxed(args.command, ctx, env, timeout, tmp)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return await self._sandboxed(args.command, ctx, env, timeout, "/tmp")

    async def _sandboxed(
        self, command: str, ctx: ToolContext, env: dict[str, str], timeout: float, tmp: str
    ) -> ToolResult:
        env, cache, problem = await asyncio.to_thread(
            _with_caches, ctx, env, self.confinement.network
        )
        result = await self._confined(command, ctx, env, timeout, tmp, cache)
        if problem is None:
            return result
        first = {**result.content[0]}
        first["text"] = (
            f"{first.get('text', '')}\n[{problem}. cargo, Go, npm, Maven and pre-commit "
            "could not write a cache in this call]"
        )
        return ToolResult([first, *result.content[1:]], result.is_error)

    async def _confined(
        self,
        command: str,
        ctx: ToolContext,
        env: dict[str, str],
        timeout: float,
        tmp: str,
        cache: Path | None,
    ) -> ToolResult:
        # A few dozen stats and symlink lookups; off the event loop like any file access.
        spec = await asyncio.to_thread(
            spec_for,
            ctx.allowed_roots,
            ctx.denied_paths,
            env,
            self.confinement.network,
            ctx.workdir,
            tmp,
            readonly=ctx.readonly_paths,
            home=home_of(ctx) if ctx.guard_home else None,
            cache=cache,
        )
        if any(p == spec.workdir or spec.workdir.is_relative_to(p) for p in spec.hidden_dirs):
            raise ToolError(f"the workdir {ctx.workdir} lies in a folder the sandbox hides")
        if spec.unmaskable:
            # Fail closed: the other name of a hard-linked secret could be anywhere.
            names = ", ".join(map(str, spec.unmaskable))
            raise ToolError(
                f"refusing to run shell commands: {names} has another name (a hard link) the "
                "sandbox cannot hide; ask the operator to remove the extra link"
            )
        note: Path | None = None
        if (spec.watched or spec.links) and ctx.watch_dir is not None:
            note = await asyncio.to_thread(note_watched, ctx.watch_dir, spec.watched, spec.links)
        launch = self.confinement.launch(spec, command)
        try:
            result = await run_command(
                launch.argv, ctx, launch.env, timeout, launch.pass_fds, launch.preexec
            )
        except BaseException:
            # Cancelled (`!cancel`) or failed: make sure no part of the sandbox is left,
            # then that nothing it planted at a watched path stays.
            launch.reap()
            _undo(spec.watched, spec.links)
            if note is not None:
                note.unlink(missing_ok=True)
            raise
        finally:
            launch.close()
        if result.is_error:
            # Timed out, killed, or just a non-zero exit: cheap to make sure (a /proc scan).
            await asyncio.to_thread(launch.reap)
        if not spec.watched and not spec.links:
            return result
        moved = await asyncio.to_thread(_undo, spec.watched, spec.links)
        if note is not None:
            await asyncio.to_thread(note.unlink, True)
        if not moved:
            return result
        for path in moved:
            log.warning("sandbox.quarantined", path=str(path))
        said = (
            f"\n[undone after the command: {', '.join(map(str, moved))}. Commands may not "
            "create or replace these: they would run later, outside the sandbox]"
        )
        first = {**result.content[0]}
        first["text"] = str(first.get("text", "")) + said
        return ToolResult([first, *result.content[1:]], result.is_error)
