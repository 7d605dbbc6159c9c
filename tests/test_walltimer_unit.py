"""The wall-clock timer that lets an idle daemon sleep until something is due: it ends at
its time (also one already past), when woken, and the sync watchdog built on it still
catches a stalled loop."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dispatch_matrix.core import walltimer
from dispatch_matrix.matrix.sync import SyncLoop, SyncStalled
from dispatch_matrix.store import Database

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="timerfd is Linux's; elsewhere waits slice"
)


class HangingClient:
    """Answers the first sync, then never returns from the next one."""

    def __init__(self) -> None:
        self.calls = 0

    async def sync(self, since: Any, timeout_ms: int, full_state: bool = False) -> Any:
        self.calls += 1
        if self.calls > 1:
            await asyncio.Event().wait()
        return type("Response", (), {"next_batch": f"t{self.calls}"})()

    async def after_sync(self) -> None:
        return None


def test_the_timer_is_available_on_linux() -> None:
    assert walltimer.available()


@pytest.mark.parametrize("ahead_s", [-5.0, 0.0, 0.05])
async def test_a_wait_ends_at_its_wall_time(ahead_s: float) -> None:
    woke = await asyncio.wait_for(walltimer.wait_wall(time.time() + ahead_s), 5)
    assert woke is walltimer.Woke.DUE


async def test_a_wait_for_nothing_ends_when_woken() -> None:
    wake = asyncio.Event()
    waiting = asyncio.create_task(walltimer.wait_wall(None, wake))
    await asyncio.sleep(0)
    assert not waiting.done()
    wake.set()
    assert await asyncio.wait_for(waiting, 5) is walltimer.Woke.WOKEN


async def test_an_already_set_wake_returns_at_once() -> None:
    wake = asyncio.Event()
    wake.set()
    assert await walltimer.wait_wall(time.time() + 3600, wake) is walltimer.Woke.WOKEN


async def test_a_cancelled_wait_leaves_no_descriptor_behind() -> None:
    before = len(list(Path("/proc/self/fd").iterdir()))
    waiting = asyncio.create_task(walltimer.wait_wall(time.time() + 3600))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert len(list(Path("/proc/self/fd").iterdir())) == before


async def test_the_event_driven_watchdog_still_catches_a_stalled_loop(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")

    async def handle(response: Any, since: str | None) -> None:
        return None

    # No watch interval: the watchdog sleeps until the stall limit (1 s poll + 0.2 s margin).
    loop = SyncLoop(HangingClient(), db, handle, 1000, stall_margin_s=0.2)  # type: ignore[arg-type]
    runner = asyncio.create_task(loop.run())
    with pytest.raises(SyncStalled):
        await asyncio.wait_for(loop.watch(), 10)
    runner.cancel()
