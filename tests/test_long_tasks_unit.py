"""The daemon's long-lived tasks wake for their own reasons, not at every sync: a part
started once ready runs as its own task (no daemon frame in its chain), and the news that
an MCP server did not start waits for a failure, then for a room to tell it in."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, cast

from dispatch_matrix.app.daemon import _start_when
from dispatch_matrix.app.start_notices import tell_connector_failures
from dispatch_matrix.connectors.hub import Connectors
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.outbox import Outbox


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def settle() -> None:
    """Let every ready task run until it waits (no wall clock involved)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_part_started_once_ready_runs_as_its_own_task() -> None:
    ready = asyncio.Event()
    chains: list[str] = []

    async def part() -> None:
        task = asyncio.current_task()
        assert task is not None
        chains.append(task.get_coro().__qualname__)  # type: ignore[union-attr]

    async with asyncio.TaskGroup() as group:
        group.create_task(_start_when(ready.wait(), group, part, "part"))
        await asyncio.sleep(0)
        assert chains == [], "not before it is ready"
        ready.set()
    assert chains == ["test_a_part_started_once_ready_runs_as_its_own_task.<locals>.part"]


class _Nio:
    def __init__(self) -> None:
        self.rooms: dict[str, object] = {}


class _Client:
    def __init__(self) -> None:
        self.client = _Nio()


class _Connectors:
    def __init__(self) -> None:
        self.failures: asyncio.Queue[tuple[str, str]] = asyncio.Queue()


class _Outbox:
    def __init__(self) -> None:
        self.posts: list[tuple[str, str]] = []

    async def post(self, room_id: str, text: str, **kwargs: Any) -> str:
        self.posts.append((room_id, kwargs["key"]))
        return "$n"


async def test_a_connector_failure_waits_for_the_first_sync_and_a_room() -> None:
    first_sync, rooms_changed = asyncio.Event(), asyncio.Event()
    client, connectors, outbox = _Client(), _Connectors(), _Outbox()
    news = asyncio.create_task(
        tell_connector_failures(
            first_sync,
            rooms_changed,
            cast(MatrixClient, client),
            cast(Connectors, connectors),
            cast(Outbox, outbox),
        )
    )
    try:
        connectors.failures.put_nowait(("broken", "command not found"))
        first_sync.set()  # a first start: the bot is in no room yet
        rooms_changed.set()  # a change of rooms that brought none
        await settle()
        assert outbox.posts == []
        client.client.rooms = {"!a:x": object(), "!b:x": object()}
        rooms_changed.set()
        await until(lambda: len(outbox.posts) == 2)
        assert [room for room, _key in outbox.posts] == ["!a:x", "!b:x"]
        assert all(key.startswith("mcp-failed-broken-") for _room, key in outbox.posts)
        # Once in a room, a later failure is told at once, without waiting for a sync.
        connectors.failures.put_nowait(("other", "exited"))
        await until(lambda: len(outbox.posts) == 4)
        assert all("mcp-failed-other-" in key for _room, key in outbox.posts[2:])
    finally:
        news.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await news
