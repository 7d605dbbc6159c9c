"""Run a blocking, CPU-bound function in a forked child that a deadline or `!cancel` kills.

Python's `re` holds the GIL for the whole of one match, so a backtracking pattern from the
model (`^(a+)+$`, a glob `*a*a*a*a*b`) in a worker thread stops the event loop: sync,
answers and `!cancel` wait. A forked child shares nothing with the loop but a pipe, and
SIGKILL ends it at any instruction. Fork, not spawn, because the child needs the parent's
state as it is (the policy's `read_denied`, compiled patterns) and a fresh interpreter would
cost half a second of imports per call.

The child runs only the given function and leaves by `os._exit`: it never touches the
event loop, the ledger or the log handlers it inherited. Its own alarm ends it even if the
daemon dies first.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
from collections.abc import Callable

from dispatch_matrix.core.errors import ToolError

_OK = b"o"
_FAILED = b"e"
# The child's own alarm fires this long after the parent's deadline, for an orphan.
_ORPHAN_GRACE_S = 5


class ChildTimeout(ToolError):
    """The child did not finish before its deadline and was killed."""


async def run_forked(work: Callable[[], str], timeout_s: float) -> str:
    """`work()` in a forked child, its text returned; a `ToolError` it raises re-raised.

    Raises `ChildTimeout` when the deadline passes (the child is killed) and `ToolError`
    when the child dies without an answer. Cancelling the caller kills the child.
    """
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError as err:
        os.close(read_fd)
        os.close(write_fd)
        raise ToolError(f"could not start the search process: {err.strerror}") from None
    if pid == 0:  # pragma: no cover (the child; its result is what the tests check)
        os.close(read_fd)
        _child(work, write_fd, timeout_s)
    os.close(write_fd)
    pipe = os.fdopen(read_fd, "rb", buffering=0)
    reader = asyncio.StreamReader()
    transport: asyncio.BaseTransport | None = None
    reaped = False
    # From here on the child is killed whatever ends the wait, cancellation included.
    try:
        async with asyncio.timeout(timeout_s):
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), pipe
            )
            payload = await reader.read()
        await asyncio.to_thread(_reap, pid)
        reaped = True
    except TimeoutError:
        raise ChildTimeout(f"stopped after {timeout_s:g} s without an answer") from None
    finally:
        if transport is not None:
            transport.close()
        else:
            pipe.close()
        if not reaped:
            _kill(pid)
            # SIGKILL cannot be caught, so the wait is short; reap off the loop all the same.
            await asyncio.shield(asyncio.to_thread(_reap, pid))
    if payload[:1] == _OK:
        return payload[1:].decode("utf-8", errors="replace")
    if payload[:1] == _FAILED:
        raise ToolError(payload[1:].decode("utf-8", errors="replace"))
    raise ToolError("the search process ended without an answer")


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _child(work: Callable[[], str], write_fd: int, timeout_s: float) -> None:  # pragma: no cover
    """In the child: run, write the answer, leave without running the parent's cleanup."""
    status = 0
    try:
        # The parent's signal handlers write to its loop's wakeup socket: not from here.
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
            signal.signal(signum, signal.SIG_DFL)
        signal.alarm(math.ceil(timeout_s) + _ORPHAN_GRACE_S)
        try:
            payload = _OK + work().encode("utf-8", errors="replace")
        except ToolError as err:
            payload = _FAILED + err.message.encode("utf-8", errors="replace")
        except Exception as err:  # told to the model, as an error in a thread would have been
            failed = f"the search failed: {type(err).__name__}: {err}"
            payload = _FAILED + failed.encode("utf-8", errors="replace")
        view = memoryview(payload)
        while view:
            view = view[os.write(write_fd, view) :]
    except BaseException:
        # Last line of defence: the child must leave by _exit whatever happened, never
        # return into a copy of the daemon's event loop.
        status = 1
    finally:
        os._exit(status)
