"""A relay in front of the homeserver for one bot that reads each request's path: while
`failing`, a request whose path holds one of the given parts is answered 502 Bad Gateway (a
reverse proxy whose upstream failed it) and never reaches Synapse; every other request
passes. One endpoint away, the rest of the homeserver fine: what `Relay.cut` cannot show.

It relies on what the bot's HTTP client does (aiohttp, HTTP/1.1): one request at a time on a
connection, each with a Content-Length when it has a body. A request is read whole before it
is passed on, so the 502 is written where its response would have gone, after the previous
response was read, and the connection is then closed (`Connection: close`)."""

from __future__ import annotations

import asyncio
import contextlib

from harness.proxy import Relay, _pipe

BAD_GATEWAY = (
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n"
    b"Connection: close\r\n\r\nBad Gateway"
)


class FailingPathRelay(Relay):
    """Forwards 127.0.0.1:`port` upstream; answers 502 to the paths named while `failing`."""

    def __init__(self, upstream_host: str, upstream_port: int, *parts: str) -> None:
        super().__init__(upstream_host, upstream_port)
        self._parts = parts
        self.failing = False
        # Every request path seen that holds one of the parts, with whether it was failed.
        self.seen: list[tuple[str, bool]] = []
        self._changed = asyncio.Condition()

    async def wait_seen(self, count: int, *, failed: bool, timeout: float = 30) -> None:
        """Until `count` matching requests were passed (or failed), woken by each one."""

        def enough() -> bool:
            return sum(1 for _path, was in self.seen if was is failed) >= count

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(enough), timeout)

    def passed(self) -> int:
        """How many matching requests went through to the homeserver."""
        return sum(1 for _path, failed in self.seen if not failed)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        self._open.update({writer, up_writer})
        back = asyncio.create_task(_pipe(up_reader, writer))
        try:
            if await self._requests(reader, writer, up_writer):
                with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                    up_writer.write_eof()
                await back
        finally:
            back.cancel()
            for end in (writer, up_writer):
                self._open.discard(end)
                end.transport.abort()

    async def _requests(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_writer: asyncio.StreamWriter,
    ) -> bool:
        """Pass requests on one by one until the client is done (True: let the last
        response through), or one was failed (False: the connection closes now)."""
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return True
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1].split("?")[0] if " " in lines[0] else ""
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines[1:] if line)
            }
            if "chunked" in headers.get("transfer-encoding", ""):
                # Not a form this relay reads: relay the rest of the connection untouched.
                up_writer.write(head)
                await _pipe(reader, up_writer)
                return True
            try:
                body = await reader.readexactly(int(headers.get("content-length", "0")))
            except (asyncio.IncompleteReadError, ConnectionError):
                return True
            matching = any(part in path for part in self._parts)
            fail = matching and self.failing
            if matching:
                async with self._changed:
                    self.seen.append((path, fail))
                    self._changed.notify_all()
            if fail:
                with contextlib.suppress(ConnectionError, OSError):
                    writer.write(BAD_GATEWAY)
                    await writer.drain()
                    # Closed, not aborted: an abort would drop the 502 still buffered.
                    writer.close()
                    await writer.wait_closed()
                return False
            up_writer.write(head + body)
            await up_writer.drain()
