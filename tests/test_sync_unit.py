"""The sync loop's watchdog, with a stand-in client (no homeserver): a stalled loop ends the
process, a clock jump restarts the long poll, the token is saved only after handling."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from dispatch_matrix.matrix.sync import SyncLoop, SyncStalled
from dispatch_matrix.store import Database


class Response:
    def __init__(self, token: str) -> None:
        self.next_batch = token


class HangingClient:
    """Answers the first sync, then never returns from the next one."""

    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = 0

    async def sync(self, since: Any, timeout_ms: int, full_state: bool = False) -> Response:
        self.calls += 1
        if self.calls == 1:
            return Response("t1")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        raise AssertionError("unreachable")

    async def after_sync(self) -> None:
        return None


async def test_a_stalled_sync_loop_raises_so_the_process_exits(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    handled: list[str] = []

    async def handle(response: Any, since: str | None) -> None:
        handled.append(response.next_batch)

    loop = SyncLoop(HangingClient(), db, handle, 1000, watch_every_s=0.05, stall_margin_s=0.2)  # type: ignore[arg-type]
    runner = asyncio.create_task(loop.run())
    with pytest.raises(SyncStalled) as caught:
        await asyncio.wait_for(loop.watch(), 10)
    runner.cancel()
    assert caught.value.exit_code == 70
    assert handled == ["t1"] and db.sync_token() == "t1"


async def test_a_clock_jump_restarts_the_long_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database.open(tmp_path / "d.db")
    client = HangingClient()

    async def handle(response: Any, since: str | None) -> None:
        return None

    loop = SyncLoop(client, db, handle, 30_000, watch_every_s=0.05)  # type: ignore[arg-type]
    runner = asyncio.create_task(loop.run())
    await loop.first_sync_done.wait()
    while client.calls < 2:
        await asyncio.sleep(0)
    watcher = asyncio.create_task(loop.watch())
    await asyncio.sleep(0)
    real = time.time
    # The machine slept for an hour: wall time moved, monotonic time did not.
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    while client.calls < 3:
        await asyncio.sleep(0.01)
    watcher.cancel()
    runner.cancel()
    assert client.cancelled >= 1, "the hanging poll was abandoned"
    assert client.calls >= 3, "and a new one started at once"
