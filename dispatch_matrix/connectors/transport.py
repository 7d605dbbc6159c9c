"""Transports to one MCP server, each watched so we know the moment it ends.

The SDK's own transports do the hard parts (spawning the child in its own process group,
the spec's shutdown sequence, streamable HTTP). We add two things: a stream in the middle
that sets an event when the server's side closes (a child that died, a dropped stream),
and, for stdio children, their stderr read line by line into our log, redacted, with the
last lines kept to explain a failed start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.message import SessionMessage

from dispatch_matrix.connectors.launch import ServerLaunch
from dispatch_matrix.connectors.leash import leashed
from dispatch_matrix.core import logs

log = logs.get(__name__)

Streams = tuple[Any, Any]
_STDERR_LINE = 1000


class Watch:
    """What a running transport tells its owner: when it ended, and what the server said
    on stderr last."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.ended = asyncio.Event()
        # (monotonic time, line) of the last lines it wrote to stderr.
        self.stderr: deque[tuple[float, str]] = deque(maxlen=5)

    def last_words(self, within_s: float = 3.0) -> str:
        """The server's last stderr line if it is recent, to explain why it stopped."""
        if not self.stderr:
            return ""
        at, line = self.stderr[-1]
        return line if time.monotonic() - at <= within_s else ""


def open_transport(launch: ServerLaunch, watch: Watch) -> AbstractAsyncContextManager[Streams]:
    """The transport for `launch`, watched by `watch`."""
    if launch.transport == "stdio":
        return _watched(_stdio(launch, watch), watch)
    if launch.transport == "sse":
        assert launch.url is not None
        return _watched(sse_client(launch.url, headers=dict(launch.headers)), watch)
    return _watched(_http(launch), watch)


@asynccontextmanager
async def _http(launch: ServerLaunch) -> AsyncIterator[Streams]:
    assert launch.url is not None
    async with (
        create_mcp_http_client(headers=dict(launch.headers)) as client,
        streamable_http_client(launch.url, http_client=client) as streams,
    ):
        yield streams


@asynccontextmanager
async def _stdio(launch: ServerLaunch, watch: Watch) -> AsyncIterator[Streams]:
    assert launch.command is not None
    # Leashed: the server dies with the daemon, even after a kill -9 (see leash.py).
    command, args = leashed(launch.command, list(launch.args), launch.env, launch.cwd)
    params = StdioServerParameters(command=command, args=args, env=dict(launch.env), cwd=launch.cwd)
    read_end, write_end = os.pipe()
    errlog = os.fdopen(write_end, "w")
    reader = asyncio.create_task(_read_stderr(read_end, watch), name=f"mcp-{launch.name}-stderr")
    try:
        async with stdio_client(params, errlog=errlog) as streams:
            # The child holds its own copy of the pipe now; ours would keep it from ending.
            errlog.close()
            yield streams
    finally:
        errlog.close()
        # What the server said last is read before we report why it stopped.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reader), 1.0)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def _read_stderr(fd: int, watch: Watch) -> None:
    loop = asyncio.get_running_loop()
    stream = asyncio.StreamReader()
    pipe = os.fdopen(fd, "rb", 0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream), pipe)
    try:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line past the reader's limit: skip it
                continue
            if not raw:
                return
            line = logs.REDACTOR.text(raw.decode(errors="replace").rstrip())[:_STDERR_LINE]
            if line:
                watch.stderr.append((time.monotonic(), line))
                log.debug("mcp.stderr", server=watch.server, line=line)
    finally:
        transport.close()


@asynccontextmanager
async def _watched(
    transport: AbstractAsyncContextManager[Streams], watch: Watch
) -> AsyncIterator[Streams]:
    """`transport`'s streams, with a relay in the read direction that sets `watch.ended`
    when the server's side closes."""
    async with transport as (read, write):
        send, receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)

        async def relay() -> None:
            try:
                async with send:
                    async for message in read:
                        await send.send(message)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
                pass
            finally:
                watch.ended.set()

        async with anyio.create_task_group() as group:
            group.start_soon(relay)
            try:
                yield receive, write
            finally:
                group.cancel_scope.cancel()
                await receive.aclose()
