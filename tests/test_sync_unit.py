"""The sync loop's watchdog, with a stand-in client (no homeserver): a stalled loop ends the
process, a clock jump restarts the long poll, the token is saved only after handling; while
the homeserver is away the retries thin out to a short cap, and its return is told."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from dispatch_matrix.matrix.failures import Unreachable
from dispatch_matrix.matrix.sync import SyncLoop, SyncStalled, poll_ms
from dispatch_matrix.store import Database


class Response:
    def __init__(self, token: str) -> None:
        self.next_batch = token


class HangingClient:
    """Answers the first sync, then never returns from the next one."""

    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = 0
        self.timeouts: list[int] = []

    async def sync(self, since: Any, timeout_ms: int, full_state: bool = False) -> Response:
        self.calls += 1
        self.timeouts.append(timeout_ms)
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
    # The token rides with the next write (or the close): staged, then committed.
    db.flush_staged()
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
    # The one after the wake returns at once (it proves the connection; the record and
    # `status` wait for it), then the long polls resume.
    assert client.timeouts[:3] == [0, 30_000, 0]


class AwayClient:
    """Answers the first sync, fails the next `away`, then answers one more and hangs."""

    def __init__(self, away: int) -> None:
        self.away = away
        self.calls = 0
        self.timeouts: list[int] = []

    async def sync(self, since: Any, timeout_ms: int, full_state: bool = False) -> Response:
        self.calls += 1
        self.timeouts.append(timeout_ms)
        if 1 < self.calls <= self.away + 1:
            raise Unreachable("sync: cannot reach (connection refused)")
        if self.calls > self.away + 2:
            await asyncio.Event().wait()
        return Response(f"t{self.calls}")

    async def after_sync(self) -> None:
        return None


async def test_while_the_homeserver_is_away_retries_double_to_ten_seconds_and_its_return_is_told(
    tmp_path: Path,
) -> None:
    db = Database.open(tmp_path / "d.db")
    waits: list[float] = []
    recovered = asyncio.Event()
    told: list[int] = []

    async def handle(response: Any, since: str | None) -> None:
        return None

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    def back() -> None:
        told.append(len(waits))
        recovered.set()

    client = AwayClient(away=8)
    loop = SyncLoop(client, db, handle, 30_000, recovered=back, sleep=sleep)  # type: ignore[arg-type]
    runner = asyncio.create_task(loop.run())
    await asyncio.wait_for(recovered.wait(), 5)
    runner.cancel()
    # A minute away costs at most one 10 s wait past the homeserver's return, not 60 s.
    assert waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0]
    assert told == [8], "told once, after the first sync that got through"
    # While it fails, each retry returns at once when the homeserver answers: its return is
    # known in a round trip, not after a long poll; then the long polls resume.
    assert client.timeouts[:10] == [0, 30_000] + [0] * 8
    assert all(timeout == 30_000 for timeout in client.timeouts[10:])
    db.flush_staged()
    assert db.sync_token() == "t10"


def test_a_staged_write_rides_with_the_next_transaction_and_the_close(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    db.save_sync_token("t1", staged=True)
    db.save_sync_token("t2", staged=True)
    assert db.sync_token() is None, "not committed on its own"
    db.set_meta("other", "write")
    assert db.sync_token() == "t2", "the newer one, with the next transaction"
    db.save_sync_token("t3", staged=True)
    db.close()
    assert Database.open(tmp_path / "d.db").sync_token() == "t3", "and with the close"


async def test_a_sync_that_brought_work_commits_its_token_at_once(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    again = asyncio.Event()

    class Client(HangingClient):
        async def sync(self, since: Any, timeout_ms: int, full_state: bool = False) -> Response:
            if self.calls == 1:
                again.set()  # the next long poll begins once the token is saved
            return await super().sync(since, timeout_ms, full_state)

    async def handle(response: Any, since: str | None) -> bool:
        return True  # a command read again after a crash would run again

    loop = SyncLoop(Client(), db, handle, 1000)  # type: ignore[arg-type]
    runner = asyncio.create_task(loop.run())
    await asyncio.wait_for(again.wait(), 5)
    runner.cancel()
    assert db.sync_token() == "t1" and not db.staged
    db.close()


@pytest.mark.parametrize(
    "quick, waiting, timeout_ms, expected",
    [
        (False, False, 30_000, 30_000),  # idle: the configured long poll
        (True, False, 30_000, 0),  # after a start, a wake or a failure: at once
        (True, True, 30_000, 0),
        (False, True, 30_000, 5_000),  # an event waits for the gate: a short poll
        (False, True, 2_000, 2_000),  # never longer than configured
    ],
)
def test_poll_ms(quick: bool, waiting: bool, timeout_ms: int, expected: int) -> None:
    assert poll_ms(quick, waiting, timeout_ms) == expected


async def test_while_an_event_waits_for_the_gate_the_polls_are_short(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    waits = [True, True, False]

    class Client(HangingClient):
        async def sync(self, since: Any, timeout_ms: int, full_state: bool = False) -> Response:
            if self.calls < 4:
                self.calls += 1
                self.timeouts.append(timeout_ms)
                return Response(f"t{self.calls}")
            return await super().sync(since, timeout_ms, full_state)

    async def handle(response: Any, since: str | None) -> None:
        return None

    client = Client()
    # What the router says before each sync after the first: two with an event waiting, then
    # it is judged and the long polls resume.
    loop = SyncLoop(client, db, handle, 30_000, waiting=lambda: waits.pop(0) if waits else False)  # type: ignore[arg-type]
    runner = asyncio.create_task(loop.run())
    try:
        async with asyncio.timeout(5):
            while len(client.timeouts) < 5:
                await asyncio.sleep(0.01)
    finally:
        runner.cancel()
    assert client.timeouts == [0, 5_000, 5_000, 30_000, 30_000]
    db.close()
