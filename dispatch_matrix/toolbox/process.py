"""Run one command in its own session and process group, and make sure it all ends.

The command's stdout and stderr share one pipe, kept as head + tail within a byte limit.
When the shell exits, times out or the call is cancelled, the whole process group is
stopped (SIGTERM, then SIGKILL after a grace period), so no child outlives the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dispatch_matrix.core.errors import ToolError
from dispatch_matrix.toolbox.base import ToolContext, ToolResult

# How long a signalled group gets to exit after SIGTERM before SIGKILL.
TERM_GRACE_S = 2.0
# How long to wait for a killed group to be gone.
KILL_WAIT_S = 5.0
# How long to keep reading output after the group is gone (an escaped daemon may hold it).
DRAIN_S = 2.0
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


@dataclass
class _Capture:
    """Output kept as head + tail within a byte limit, counting what falls in between."""

    limit: int
    head: bytearray
    tail: bytearray
    total: int = 0

    @classmethod
    def of(cls, limit: int) -> _Capture:
        return cls(limit=max(limit, 200), head=bytearray(), tail=bytearray())

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.limit // 2 - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            keep = self.limit - self.limit // 2
            if len(self.tail) > keep:
                del self.tail[: len(self.tail) - keep]

    def text(self) -> str:
        elided = self.total - len(self.head) - len(self.tail)
        if elided > 0:
            data = (
                self.head.decode(errors="replace")
                + f"\n[… {elided} bytes elided …]\n"
                + self.tail.decode(errors="replace")
            )
        else:
            data = (self.head + self.tail).decode(errors="replace")
        return _ANSI.sub("", data)


class _ExitAware(asyncio.subprocess.SubprocessStreamProtocol):
    """Stream protocol that reports the shell's exit as soon as it happens.

    `Process.wait()` only returns once every pipe is closed, and a background job that
    inherited stdout keeps it open; the exit itself is what decides when the command ended.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2**16, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


async def run_command(
    argv: list[str],
    ctx: ToolContext,
    env: dict[str, str],
    timeout: float,
    pass_fds: tuple[int, ...] = (),
    preexec: Callable[[], None] | None = None,
) -> ToolResult:
    """Run `argv` in a new session and process group and collect its result; `pass_fds`
    are inherited by the command (the sandbox reads its options from one); `preexec` runs
    in the child just before the exec (the sandbox's Landlock scope)."""
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _ExitAware(loop),
            *argv,
            cwd=ctx.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=pass_fds,
            preexec_fn=preexec,
        )
    except OSError as err:
        raise ToolError(f"could not start the shell: {err.strerror or err}") from err
    except subprocess.SubprocessError as err:
        # `preexec` failed in the child (the sandbox's Landlock scope): nothing ran.
        raise ToolError(f"could not start the sandbox: {err}") from err
    proc = asyncio.subprocess.Process(transport, protocol, loop)
    pgid = proc.pid
    capture = _Capture.of(ctx.output_limit)
    assert proc.stdout is not None
    reader = asyncio.create_task(_read_all(proc.stdout, capture))
    try:
        if ctx.on_process is not None:
            maybe = ctx.on_process(pgid)
            if inspect.isawaitable(maybe):
                await maybe
        timed_out = False
        try:
            await asyncio.wait_for(protocol.exited.wait(), timeout)
        except TimeoutError:
            timed_out = True
        # Whatever is left in the group (a timed-out command, stray background jobs) goes.
        await _stop_group(pgid, protocol.exited)
        await _drain(reader)
    except asyncio.CancelledError:
        _signal(pgid, signal.SIGKILL)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await _until_gone(pgid, protocol.exited, KILL_WAIT_S)
        raise
    except BaseException:
        _signal(pgid, signal.SIGKILL)
        reader.cancel()
        raise
    finally:
        transport.close()
    return _result(capture, transport.get_returncode(), timed_out, timeout, reader.cancelled())


async def _read_all(stream: asyncio.StreamReader, capture: _Capture) -> None:
    while chunk := await stream.read(65536):
        capture.add(chunk)


async def _drain(reader: asyncio.Task[None]) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(reader), DRAIN_S)
    except TimeoutError:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


def _signal(pgid: int, sig: signal.Signals) -> bool:
    """Send `sig` to the group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # A member changed its credentials (setuid); the rest of the group still got it.
        return True
    return True


async def _stop_group(pgid: int, exited: asyncio.Event) -> None:
    """SIGTERM the group, SIGKILL it after a grace period, and wait until it is gone."""
    if not _signal(pgid, signal.SIGTERM):
        return
    if await _until_gone(pgid, exited, TERM_GRACE_S):
        return
    _signal(pgid, signal.SIGKILL)
    await _until_gone(pgid, exited, KILL_WAIT_S)


async def _until_gone(pgid: int, exited: asyncio.Event, within_s: float) -> bool:
    """Wait (bounded) until no live process is left in the group; True when none is.

    The shell is our child and its exit is an event; its orphans are not, and nothing
    reports their exit, so the group is polled — briefly, only while it is being stopped.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(exited.wait(), within_s)
    delay = 0.005
    while loop.time() < deadline:
        if not await asyncio.to_thread(group_alive, pgid):
            return True
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
    return False


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs; zombies (dead, waiting for init to reap
    them) do not count. Without /proc, any member counts."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp …"; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _result(
    capture: _Capture, code: int | None, timed_out: bool, timeout: float, undrained: bool
) -> ToolResult:
    output = capture.text().rstrip("\n")
    lines = [output] if output else ["(no output)"]
    if undrained:
        lines.append(
            "[a process outside the command's group kept the output open; stopped reading]"
        )
    if timed_out:
        lines.append(f"[timed out after {timeout:g} s; the command and its children were killed]")
        return ToolResult.error("\n".join(lines))
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        lines.append(f"[killed by signal {name}]")
        return ToolResult.error("\n".join(lines))
    lines.append(f"[exit code {code}]")
    result = "\n".join(lines)
    return ToolResult.text(result) if code == 0 else ToolResult.error(result)
