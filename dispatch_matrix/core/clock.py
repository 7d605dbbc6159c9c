"""The one seam through which the daemon reads the time, and waits for it.

`SystemClock` is the wall clock. Waiting for a wall-clock time cannot be one long sleep:
asyncio sleeps on the monotonic clock, which stands still while the computer is suspended,
so a sleep begun before a suspend would end that much late. On Linux the wait is one
wall-clock timer (`walltimer`: a timerfd that fires at the wall time, also across a
suspend, and reports the clock being set or a resume), so an idle daemon is not woken until
something is due. Elsewhere, and with the test offset, the wait is cut in short slices and
the wall clock is read again after each; a jump (suspend/resume, the time being set, the
test offset moved) is noticed at the first slice after it. Either way a jump is logged.

For end-to-end tests only, the clock can add an offset read from a file in the state folder
(`[schedule] test_clock = true`; the file `clock-offset` holds seconds, e.g. `3600`). A test
rewrites the file to move the bot's time without sleeping. The state folder is out of reach
of the agent's tools, so the model cannot move its own clock; without the key the file is
never read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from dispatch_matrix.core import logs, walltimer

log = logs.get(__name__)

# How often a wait re-reads the wall clock: the longest a jump can go unnoticed.
SLICE_S = 1.0
TEST_SLICE_S = 0.1
# A difference between wall and monotonic time beyond this counts as a jump.
JUMP_S = 2.0
OFFSET_FILE = "clock-offset"


class Clock(Protocol):
    """Where the time comes from: the wall clock, or a test's."""

    def now(self) -> datetime:
        """The current time, aware, in UTC."""
        ...

    async def wait_until(self, when: datetime | None, wake: asyncio.Event) -> None:
        """Return at `when` (never, for None), as soon as `wake` is set, or when the wall
        clock jumped (the caller then looks at the time again)."""
        ...


class SystemClock:
    """The computer's wall clock, optionally shifted by a test's offset file."""

    def __init__(self, offset_file: Path | None = None, slice_s: float | None = None) -> None:
        self._offset_file = offset_file
        self._slice_s = slice_s or (TEST_SLICE_S if offset_file else SLICE_S)
        self._offset = 0.0

    @classmethod
    def for_tests(cls, state_dir: Path) -> SystemClock:
        """The clock of `[schedule] test_clock = true`: wall time plus the offset file's."""
        return cls(state_dir / OFFSET_FILE)

    def _read_offset(self) -> float:
        if self._offset_file is None:
            return 0.0
        with contextlib.suppress(OSError, ValueError):
            self._offset = float(self._offset_file.read_text().strip() or 0)
        return self._offset

    def now(self) -> datetime:
        """Wall time (plus the test offset)."""
        if self._offset_file is None:
            return datetime.now(UTC)
        return datetime.fromtimestamp(time.time() + self._read_offset(), UTC)

    async def wait_until(self, when: datetime | None, wake: asyncio.Event) -> None:
        """Wait for `when`, a jump or `wake` (see the module docstring): on one wall-clock
        timer where the system has one, else in slices."""
        wall, mono = self.now().timestamp(), time.monotonic()
        if self._offset_file is None and walltimer.available():
            woke = await walltimer.wait_wall(when.timestamp() if when else None, wake)
            if woke is walltimer.Woke.JUMPED:
                jump = (time.time() - wall) - (time.monotonic() - mono)
                log.warning("schedule.clock_jump", seconds=round(jump, 1))
            return
        while True:
            now = datetime.fromtimestamp(wall, UTC)
            if when is not None and now >= when:
                return
            left = self._slice_s if when is None else (when - now).total_seconds()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), min(left, self._slice_s))
            if wake.is_set():
                return
            now_wall, now_mono = self.now().timestamp(), time.monotonic()
            jump = (now_wall - wall) - (now_mono - mono)
            wall, mono = now_wall, now_mono
            if abs(jump) > JUMP_S:
                log.warning("schedule.clock_jump", seconds=round(jump, 1))
                return
