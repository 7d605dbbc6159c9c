"""Keep the computer awake while tasks run: a sleep inhibitor held from the first task taken
until the queue is empty (not per task: back-to-back tasks hold one), then released.

The inhibitor is a child process: on Linux systemd-logind's (`systemd-inhibit`) around a
`tail --pid` of the daemon, on macOS `caffeinate -w` of the daemon; both end by themselves
when the daemon dies, so a crash never leaves the computer unable to sleep. Holding it
never blocks nor delays a task: it starts in the background, and a failure (no logind, no
D-Bus) is logged once, after which this run tries no more.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections.abc import Awaitable, Callable
from typing import Protocol

from dispatch_matrix.core import logs

log = logs.get(__name__)

WHO = "dispatch-matrix"
# The ledger's note of whether the daemon holds one now, for `dispatch-matrix status`.
AWAKE_META = "keep_awake_held"


class Child(Protocol):
    """What of a child process the inhibitor uses (asyncio's Process has it)."""

    @property
    def returncode(self) -> int | None: ...

    def terminate(self) -> None: ...

    async def communicate(self) -> tuple[bytes | None, bytes | None]: ...


# Starts argv with stdin/stdout closed and stderr piped (asyncio.create_subprocess_exec).
Spawn = Callable[[list[str]], Awaitable[Child]]


def inhibitor_argv(
    platform: str, why: str, pid: int, which: Callable[[str], str | None]
) -> list[str] | None:
    """The command that keeps the computer awake until it ends or daemon `pid` exits; None
    where no tool for it is found (pure, given `which`)."""
    if platform == "darwin" and which("caffeinate"):
        # -i: no idle sleep; -w: until the daemon exits.
        return ["caffeinate", "-i", "-w", str(pid)]
    if platform.startswith("linux") and which("systemd-inhibit") and which("tail"):
        return [
            "systemd-inhibit",
            "--what=sleep:idle",
            f"--who={WHO}",
            f"--why={why}",
            "--mode=block",
            # Not `sleep infinity`: a daemon killed with -9 would leave it blocking sleep.
            "tail",
            f"--pid={pid}",
            "-f",
            "/dev/null",
        ]
    return None


def tool_found(platform: str, which: Callable[[str], str | None]) -> bool:
    """Whether this computer has a tool to keep itself awake (pure, given `which`)."""
    return inhibitor_argv(platform, "", 1, which) is not None


def keep_awake_check(
    enabled: bool,
    platform: str = sys.platform,
    which: Callable[[str], str | None] = shutil.which,
) -> tuple[bool, str, str]:
    """`doctor`'s line: (ok, what, fix)."""
    if not enabled:
        return (True, "keep awake: off (agent.keep_awake = false)", "")
    if tool_found(platform, which):
        tool = "caffeinate" if platform == "darwin" else "systemd-inhibit"
        return (True, f"keep awake: {tool} holds off sleep while tasks run", "")
    return (
        False,
        "keep awake: neither systemd-inhibit nor caffeinate is here; the computer may "
        "sleep in the middle of a task",
        "install systemd-logind's tools, or set [agent] keep_awake = false",
    )


async def _spawn(argv: list[str]) -> Child:
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


class KeepAwake:
    """The sleep inhibitor: `hold` when a task starts, `release` when the queue is empty."""

    def __init__(
        self,
        *,
        enabled: bool = True,
        spawn: Spawn = _spawn,
        platform: str = sys.platform,
        which: Callable[[str], str | None] = shutil.which,
        pid: int | None = None,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.enabled = enabled
        self._spawn = spawn
        self._platform = platform
        self._which = which
        self._pid = pid if pid is not None else os.getpid()
        # Told when the inhibitor is taken or let go (the ledger's note for `status`).
        self._on_change = on_change
        self._wanted = False
        self._child: Child | None = None
        self._keeper: asyncio.Task[None] | None = None
        # Set by the first failure: this run tries no more (logged once).
        self._given_up = False
        self._held = False

    @property
    def held(self) -> bool:
        """Whether an inhibitor runs now."""
        return self._held

    @property
    def available(self) -> bool:
        """Whether one can be held: on, a tool found, and none failed in this run."""
        return self.enabled and not self._given_up and tool_found(self._platform, self._which)

    def hold(self, why: str) -> None:
        """Keep the computer awake until `release`; returns at once (a second call while one
        is held or starting changes nothing)."""
        self._wanted = True
        if not self.enabled or self._given_up or self._keeper is not None:
            return
        argv = inhibitor_argv(self._platform, why, self._pid, self._which)
        if argv is None:
            self._give_up("no systemd-inhibit or caffeinate")
            return
        self._keeper = asyncio.create_task(self._keep(argv))

    def release(self) -> None:
        """Let the computer sleep again; returns at once."""
        self._wanted = False
        child = self._child
        if child is not None and child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.terminate()

    async def close(self) -> None:
        """Release, and wait for the inhibitor to be gone (the daemon's stop)."""
        self.release()
        if self._keeper is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper

    async def _keep(self, argv: list[str]) -> None:
        try:
            try:
                child = await self._spawn(argv)
            except OSError as err:
                self._give_up(str(err))
                return
            self._child = child
            if not self._wanted:
                # Released while it started: let go at once.
                self.release()
            else:
                self._set_held(True)
                log.info("awake.started", tool=argv[0])
            _out, err_out = await child.communicate()
            if self._wanted:
                # It ended by itself: the tool could not inhibit (no logind, no bus).
                reason = (err_out or b"").decode(errors="replace").strip()[:200]
                self._give_up(reason or f"{argv[0]} exited {child.returncode}")
            else:
                log.info("awake.released")
        finally:
            self._child = None
            self._keeper = None
            self._set_held(False)

    def _set_held(self, held: bool) -> None:
        if held == self._held:
            return
        self._held = held
        if self._on_change is not None:
            self._on_change(held)

    def _give_up(self, reason: str) -> None:
        if not self._given_up:
            log.warning("awake.unavailable", reason=reason)
        self._given_up = True
