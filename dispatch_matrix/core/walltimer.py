"""Waiting for a wall-clock time without waking up in between (Linux).

A `timerfd` on CLOCK_REALTIME, armed at an absolute time with TFD_TIMER_CANCEL_ON_SET,
fires at that wall time even across a suspend, and fails its read with ECANCELED when the
wall clock is set or the machine resumes. So one file descriptor in the event loop replaces
waking every second to re-read the clock. Where there is no timerfd (macOS, or a kernel
that refuses it) `available()` is False and the callers keep their slices.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import functools
import os
import sys
import time
from enum import Enum

_CLOCK_REALTIME = 0
_TFD_CLOEXEC = 0o2000000
_TFD_NONBLOCK = 0o4000
_TFD_TIMER_ABSTIME = 1
_TFD_TIMER_CANCEL_ON_SET = 2
# Armed this far ahead when there is nothing to wait for but a jump.
_FAR_S = 365 * 86400


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class Woke(Enum):
    """Why a wait ended."""

    DUE = "due"
    JUMPED = "jumped"
    WOKEN = "woken"


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.POINTER(_Itimerspec),
        ]
    except (OSError, AttributeError):
        return None
    return libc


@functools.cache
def available() -> bool:
    """Whether this machine has the timer (probed once)."""
    try:
        os.close(_create())
    except OSError:
        return False
    return True


def _create() -> int:
    libc = _libc()
    if libc is None:
        raise OSError(errno.ENOSYS, "no timerfd here")
    fd = int(libc.timerfd_create(_CLOCK_REALTIME, _TFD_CLOEXEC | _TFD_NONBLOCK))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "timerfd_create")
    return fd


def _arm(fd: int, at: float) -> None:
    libc = _libc()
    assert libc is not None
    whole = int(at)
    spec = _Itimerspec(_Timespec(0, 0), _Timespec(whole, int((at - whole) * 1e9)))
    flags = _TFD_TIMER_ABSTIME | _TFD_TIMER_CANCEL_ON_SET
    if libc.timerfd_settime(fd, flags, ctypes.byref(spec), None) != 0:
        raise OSError(ctypes.get_errno(), "timerfd_settime")


async def wait_wall(at: float | None, wake: asyncio.Event | None = None) -> Woke:
    """Return at wall time `at` (epoch seconds; None: only a jump or `wake` ends it), when
    the wall clock is set or the machine resumes, or when `wake` is set."""
    if wake is not None and wake.is_set():
        return Woke.WOKEN
    fd = _create()
    loop = asyncio.get_running_loop()
    fired: asyncio.Future[Woke] = loop.create_future()

    def readable() -> None:
        if fired.done():
            return
        try:
            os.read(fd, 8)
        except BlockingIOError:
            return
        except OSError as err:
            if err.errno == errno.ECANCELED:
                fired.set_result(Woke.JUMPED)
            else:
                fired.set_exception(err)
            return
        fired.set_result(Woke.DUE)

    waiter: asyncio.Future[Woke] | None = None
    try:
        _arm(fd, at if at is not None else time.time() + _FAR_S)
        loop.add_reader(fd, readable)
        if wake is None:
            return await fired
        waiter = asyncio.ensure_future(_woken(wake))
        await asyncio.wait({fired, waiter}, return_when=asyncio.FIRST_COMPLETED)
        return fired.result() if fired.done() else Woke.WOKEN
    finally:
        loop.remove_reader(fd)
        os.close(fd)
        if waiter is not None:
            waiter.cancel()
        if not fired.done():
            fired.cancel()


async def _woken(wake: asyncio.Event) -> Woke:
    await wake.wait()
    return Woke.WOKEN
