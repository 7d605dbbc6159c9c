"""A loopback aiohttp server that runs in a thread of its own (for tests) or in the
foreground (for the command line)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from typing import Self

from aiohttp import web


class BackgroundServer:
    """Serves ``make_app()`` on ``host:port`` (0: a free port); ``url`` once bound.

    The port it bound is kept: a ``start`` after a ``stop`` serves the same ``url`` again,
    so a test can take the server away (connections refused) and bring it back."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.url = ""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def make_app(self) -> web.Application:
        """The aiohttp application to serve."""
        raise NotImplementedError

    def banner(self) -> str:
        """What the command line prints once listening."""
        return f"listening on {self.url}"

    def start(self) -> Self:
        """Bind and serve from a background thread with its own event loop; sets ``url``."""
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                runner = loop.run_until_complete(self._start_runner())
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(runner.cleanup())
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                loop.run_until_complete(asyncio.sleep(0))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=run, name="fake-messages-api", daemon=True)
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._thread, self._loop = thread, loop
        return self

    def stop(self) -> None:
        """Stop serving (in-flight requests get half a second) and join the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        self._thread = self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _start_runner(self) -> web.AppRunner:
        runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        self.port = port
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        return runner

    async def serve_forever(self) -> None:
        """Serve on the running loop until SIGINT/SIGTERM (used by the CLI)."""
        runner = await self._start_runner()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        print(self.banner(), flush=True)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
