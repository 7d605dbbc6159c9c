"""One MCP server, kept running: started with the daemon, its tools listed, its calls
made, restarted with backoff when it dies, stopped with the daemon.

The last tool listing is kept while the server restarts, so the tools part of the prompt
(and with it the prompt cache) does not change because a server blinked; a server that
says its tools changed (`notifications/tools/list_changed`, or a `subscriptions/listen`
event on the 2026 protocol) is listed again, and the cache is invalidated only if the
listing really differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import mcp_types as types
from mcp import Client, InputRequiredRoundsExceededError, MCPError
from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from dispatch_matrix import __version__
from dispatch_matrix.connectors.launch import ServerLaunch
from dispatch_matrix.connectors.naming import api_names
from dispatch_matrix.connectors.results import tool_result
from dispatch_matrix.connectors.settings import McpServerSpec
from dispatch_matrix.connectors.status import State, Status
from dispatch_matrix.connectors.transport import Watch, open_transport
from dispatch_matrix.core import logs
from dispatch_matrix.core.backoff import Backoff
from dispatch_matrix.core.errors import DispatchError
from dispatch_matrix.toolbox.base import ToolResult

log = logs.get(__name__)

# A server that stayed up this long had started fine: its next failure waits little.
_STABLE_S = 30.0
# How long a call waits for a server that is starting or restarting.
_CALL_WAIT_S = 15.0
_MAX_PAGES = 50
_MAX_DESCRIPTION = 2000


class McpServer:
    """Supervises one server; `run()` is its life, `call()` its use."""

    def __init__(
        self,
        name: str,
        spec: McpServerSpec,
        launch: ServerLaunch | None,
        *,
        problem: str = "",
        on_tools_changed: Callable[[], None] = lambda: None,
        on_failure: Callable[[str, str], None] = lambda name, why: None,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self._launch = launch
        self._problem = problem
        self._on_tools_changed = on_tools_changed
        self._on_failure = on_failure
        self._backoff = backoff or Backoff(1.0, 300.0)
        self.state = State.STARTING
        self.detail = ""
        self.restarts = 0
        # API name → the server's tool; kept across restarts.
        self._tools: dict[str, types.Tool] = {}
        self._client: Client | None = None
        self._ready = asyncio.Event()
        # Set once the first start has succeeded or failed.
        self.settled = asyncio.Event()
        self._ever_ready = False
        # When the next start is due (monotonic), while it waits.
        self.retry_at: float | None = None
        self._changed = asyncio.Event()
        self._watch = Watch(name)
        # How often it became ready; waiters on `_news` hear of each start and listing.
        self.starts = 0
        self._news = asyncio.Condition()

    # -- what the rest of the daemon sees --------------------------------------------------

    def status(self) -> Status:
        """The server's state now."""
        what = self._launch.describe() if self._launch else self.spec.transport
        wait = None if self.retry_at is None else max(0.0, self.retry_at - time.monotonic())
        return Status(
            self.name, self.state, self.detail, len(self._tools), self.restarts, what, wait
        )

    def definitions(self) -> list[dict[str, Any]]:
        """Its tools as Messages API entries, sorted by name."""
        return [self._definition(api, tool) for api, tool in sorted(self._tools.items())]

    def tool_names(self) -> list[str]:
        """The API names of its tools, sorted."""
        return sorted(self._tools)

    async def wait_until(self, done: Callable[[McpServer], bool]) -> None:
        """Wait until `done(self)` holds, checked after each start (failed or not), each
        restart and each new listing."""
        async with self._news:
            await self._news.wait_for(lambda: done(self))

    async def _tell(self) -> None:
        async with self._news:
            self._news.notify_all()

    async def call(self, api_name: str, arguments: dict[str, Any]) -> ToolResult:
        """Call one tool; every failure (stopped server, timeout, protocol error) is an
        error result the model sees."""
        tool = self._tools.get(api_name)
        if tool is None:
            return ToolResult.error(f"the MCP server {self.name} has no tool {api_name}")
        client = await self._wait_ready()
        if client is None:
            return ToolResult.error(
                f"the MCP server {self.name} is not running ({self.state.value}"
                + (f": {self.detail}" if self.detail else "")
                + "); try again later or do without it"
            )
        timeout = self.spec.timeout_s
        started = time.monotonic()
        try:
            # The SDK's own timeout answers first; ours only guards against a hung transport.
            async with asyncio.timeout(timeout + 10):
                result = await client.call_tool(tool.name, arguments, read_timeout_seconds=timeout)
        except MCPError as err:
            if err.code == types.REQUEST_TIMEOUT:
                return self._failed_call(f"did not answer within {timeout:.0f}s", api_name)
            if err.code == types.CONNECTION_CLOSED:
                self._watch.ended.set()
                return self._failed_call("stopped during the call; it is being restarted", api_name)
            return self._failed_call(f"refused the call: {err}", api_name)
        except TimeoutError:
            self._watch.ended.set()
            return self._failed_call(f"did not answer within {timeout:.0f}s", api_name)
        except (ValidationError, InputRequiredRoundsExceededError) as err:
            # The server is up but its answer is unusable: an error, not a restart.
            return self._failed_call(f"gave an answer that cannot be used ({_why(err)})", api_name)
        except Exception as err:  # noqa: BLE001 - a broken server or transport is a result
            self._watch.ended.set()
            return self._failed_call(f"failed ({_why(err)}); it is being restarted", api_name)
        log.info(
            "mcp.called",
            server=self.name,
            tool=tool.name,
            error=bool(result.is_error),
            seconds=round(time.monotonic() - started, 3),
        )
        return tool_result(result)

    # -- its life ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Start the server and keep it running until cancelled (which stops it)."""
        if self._launch is None:
            self._failed(self._problem)
            return
        while True:
            began = time.monotonic()
            self._watch = Watch(self.name)
            try:
                await self._session(self._launch)
                said = self._watch.last_words()
                reason = "its connection closed" + (f"; it said: {said}" if said else "")
            except Exception as err:  # noqa: BLE001 - any failure of a server restarts it
                reason = _why(err)
                if self._watch.last_words():
                    reason += f"; it said: {self._watch.last_words()}"
            was_up = self._client is not None
            self._client = None
            self._ready.clear()
            if time.monotonic() - began >= _STABLE_S:
                self._backoff.reset()
            wait = self._backoff.next()
            self.retry_at = time.monotonic() + wait
            if was_up:
                log.warning("mcp.died", server=self.name, reason=reason, restart_in=wait)
            if self._ever_ready:
                self.state, self.detail = State.RESTARTING, reason
            else:
                self._failed(reason)
            # Waiters learn of every failed start too, not only of a server that came up.
            await self._tell()
            await asyncio.sleep(wait)
            self.restarts += 1
            self.retry_at = None
            if self._ever_ready:
                self.state = State.RESTARTING
            else:
                self.state = State.STARTING
            await self._tell()

    async def _session(self, launch: ServerLaunch) -> None:
        async with AsyncExitStack() as stack:
            client = Client(
                open_transport(launch, self._watch),
                message_handler=self._on_message,
                client_info=types.Implementation(name="dispatch-matrix", version=__version__),
            )
            # asyncio's timeout, not anyio's: the client's task groups outlive this block,
            # which an anyio cancel scope does not allow.
            async with asyncio.timeout(self.spec.start_timeout_s):
                await stack.enter_async_context(client)
                listing = await self._list(client)
            self._set_tools(listing)
            self._client = client
            self.state, self.detail = State.READY, ""
            self._ever_ready = True
            self._ready.set()
            self.settled.set()
            self.starts += 1
            await self._tell()
            log.info(
                "mcp.ready",
                server=self.name,
                tools=len(listing),
                protocol=client.protocol_version,
                restarts=self.restarts,
            )
            async with anyio.create_task_group() as group:
                group.start_soon(self._relist_on_change, client)
                if _can_listen(client):
                    group.start_soon(self._listen, client)
                await self._watch.ended.wait()
                group.cancel_scope.cancel()

    async def _list(self, client: Client) -> list[types.Tool]:
        tools: list[types.Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = await client.list_tools(cursor=cursor, cache_mode="refresh")
            tools.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        return tools

    def _set_tools(self, listing: list[types.Tool]) -> bool:
        """Keep a new listing; True (and the cache invalidated) if it differs."""
        named = api_names(self.name, [t.name for t in listing])
        by_name = {t.name: t for t in listing}
        tools = {api: by_name[own] for api, own in named.items()}
        before = self.definitions()
        self._tools = tools
        if self.definitions() == before:
            return False
        if before or self.restarts:
            log.info("mcp.tools_changed", server=self.name, tools=len(tools))
        self._on_tools_changed()
        return True

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self._changed.set()

    async def _relist_on_change(self, client: Client) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                with anyio.fail_after(self.spec.start_timeout_s):
                    listing = await self._list(client)
            except (MCPError, TimeoutError) as err:
                log.warning("mcp.relist_failed", server=self.name, error=_why(err))
                continue
            if self._set_tools(listing):
                await self._tell()

    async def _listen(self, client: Client) -> None:
        """On the 2026 protocol, change notices come only on a `subscriptions/listen`
        stream; a stream that is lost is opened again after a pause."""
        while True:
            try:
                async with client.listen(tools_list_changed=True) as subscription:
                    async for _event in subscription:
                        self._changed.set()
                return
            except ListenNotSupportedError:
                return
            except (SubscriptionLost, MCPError, TimeoutError) as err:
                log.debug("mcp.listen_lost", server=self.name, error=_why(err))
                await anyio.sleep(5)

    async def _wait_ready(self) -> Client | None:
        if self._client is not None or self.state is State.FAILED:
            return self._client
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), _CALL_WAIT_S)
        return self._client

    def _failed(self, reason: str) -> None:
        """A start failed before the server was ever up: said once, in the log and to the
        owner (the callback); it is tried again after the backoff."""
        self.state, self.detail = State.FAILED, reason
        first = not self.settled.is_set()
        self.settled.set()
        log.error("mcp.start_failed", server=self.name, error=reason, first=first)
        if first:
            self._on_failure(self.name, reason)

    def _failed_call(self, what: str, api_name: str) -> ToolResult:
        log.warning("mcp.call_failed", server=self.name, tool=api_name, error=what)
        return ToolResult.error(f"{api_name}: the MCP server {self.name} {what}")

    def _definition(self, api_name: str, tool: types.Tool) -> dict[str, Any]:
        schema = copy.deepcopy(tool.input_schema) if tool.input_schema else {}
        if schema.get("type") != "object":
            schema = {"type": "object", "properties": {}}
        description = (tool.description or tool.title or tool.name).strip()
        if len(description) > _MAX_DESCRIPTION:
            description = description[: _MAX_DESCRIPTION - 1] + "…"
        return {
            "name": api_name,
            "description": f"[MCP server {self.name}] {description}",
            "input_schema": schema,
        }


def _can_listen(client: Client) -> bool:
    tools = client.server_capabilities.tools
    return (
        client.protocol_version in MODERN_PROTOCOL_VERSIONS
        and tools is not None
        and bool(tools.list_changed)
    )


def _why(err: BaseException) -> str:
    """One line on why something failed, from an error or a group of them."""
    if isinstance(err, BaseExceptionGroup) and err.exceptions:
        return _why(err.exceptions[0])
    text = str(err).strip() or err.__class__.__name__
    if isinstance(err, TimeoutError):
        text = "timed out"
    elif isinstance(err, FileNotFoundError):
        text = f"command not found ({err.filename or text})"
    return logs.REDACTOR.text(text.splitlines()[0])[:300]


async def probe(launch: ServerLaunch, spec: McpServerSpec) -> list[str]:
    """Start a server, list its tools and stop it (for `doctor`); the tool names, or the
    error of a failed start (its last stderr line included)."""
    watch = Watch(launch.name)
    try:
        async with AsyncExitStack() as stack:
            client = Client(
                open_transport(launch, watch),
                client_info=types.Implementation(name="dispatch-matrix", version=__version__),
            )
            async with asyncio.timeout(spec.start_timeout_s):
                await stack.enter_async_context(client)
                page = await client.list_tools()
            return sorted(tool.name for tool in page.tools)
    except Exception as err:  # noqa: BLE001 - doctor reports every failure as a line
        said = watch.last_words(60)
        raise ProbeFailed(_why(err) + (f"; it said: {said}" if said else "")) from err


class ProbeFailed(DispatchError):
    """A server did not start when `doctor` tried it."""
