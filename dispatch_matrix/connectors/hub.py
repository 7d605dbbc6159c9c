"""All the configured MCP servers together: started and stopped as one, their tools as
one sorted, cached list that the tool registry offers the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dispatch_matrix.connectors.launch import LaunchError, ServerLaunch, prepare
from dispatch_matrix.connectors.naming import server_of
from dispatch_matrix.connectors.settings import McpSection
from dispatch_matrix.connectors.status import Status
from dispatch_matrix.core import logs
from dispatch_matrix.toolbox.base import ToolContext, ToolResult

if TYPE_CHECKING:
    from dispatch_matrix.connectors.server import McpServer

log = logs.get(__name__)


class Connectors:
    """The MCP servers; a tool provider for the registry (`watch`, `definitions`, `provides`,
    `run_tool`).

    The definitions are built once and kept until a server's listing changes, which the
    registry hears of through `watch`, so every request of a quiet day sends the same tools,
    in the same (sorted) order.
    """

    def __init__(self, servers: list[McpServer]) -> None:
        self._servers = {server.name: server for server in servers}
        self._cache: list[dict[str, Any]] | None = None
        # How often the cached list was rebuilt: once at start, then once per real change.
        self.generation = 0
        # Told when a server's listing changed: the registry rebuilds its list only then.
        self._watchers: list[Callable[[], None]] = []
        self.failures: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    @classmethod
    def from_config(
        cls,
        section: McpSection,
        environ: Mapping[str, str] | None = None,
        read_file: Any = None,
    ) -> Connectors:
        """The servers `[mcp.servers]` enables; their secrets go to the log redactor."""
        hub = cls([])
        env = dict(os.environ if environ is None else environ)
        reader = read_file or (lambda path: Path(path).read_text())
        if section.enabled:
            # The MCP SDK is tens of megabytes: a daemon without servers never loads it.
            from dispatch_matrix.connectors.server import McpServer
        for name, spec in section.enabled.items():
            problem = ""
            launch: ServerLaunch | None = None
            try:
                launch = prepare(name, spec, env, reader)
                logs.REDACTOR.add(*launch.secrets)
            except LaunchError as err:
                problem = err.one_line()
            hub._servers[name] = McpServer(
                name,
                spec,
                launch,
                problem=problem,
                on_tools_changed=hub._invalidate,
                on_failure=hub._failed,
            )
        return hub

    def __bool__(self) -> bool:
        return bool(self._servers)

    # -- life -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run every server until cancelled; cancelling stops them all (process groups
        included)."""
        if not self._servers:
            return
        async with asyncio.TaskGroup() as group:
            for server in self._servers.values():
                group.create_task(server.run(), name=f"mcp-{server.name}")

    async def settled(self, timeout: float | None = None) -> None:
        """Wait until every server has started or failed once (bounded by its own start
        timeout): the first request then carries the whole tool list."""
        longest = max((s.spec.start_timeout_s for s in self._servers.values()), default=0.0)
        waits = [server.settled.wait() for server in self._servers.values()]
        if not waits:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), timeout or longest + 5)

    def statuses(self) -> list[Status]:
        """Each server's state, by name."""
        return [self._servers[name].status() for name in sorted(self._servers)]

    def server(self, name: str) -> McpServer | None:
        """The server of that name."""
        return self._servers.get(name)

    def tools_of(self, name: str) -> list[str]:
        """The API names of one server's tools."""
        server = self._servers.get(name)
        return server.tool_names() if server else []

    # -- the tool provider -----------------------------------------------------------------

    def definitions(self) -> list[dict[str, Any]]:
        """Every server's tools, sorted by name (a copy of the cached list)."""
        if self._cache is None:
            self._cache = sorted(
                (d for server in self._servers.values() for d in server.definitions()),
                key=lambda d: str(d["name"]),
            )
            self.generation += 1
            log.info("mcp.tool_list", tools=len(self._cache), generation=self.generation)
        return [dict(d) for d in self._cache]

    def watch(self, changed: Callable[[], None]) -> None:
        """Call `changed` whenever a server's listing changes."""
        self._watchers.append(changed)

    def provides(self, name: str) -> bool:
        """Whether `name` is one of our tools."""
        server = self._servers.get(server_of(name) or "")
        return server is not None and name in server.tool_names()

    async def run_tool(self, name: str, tool_input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Call the tool on its server."""
        server = self._servers.get(server_of(name) or "")
        if server is None:
            return ToolResult.error(f"no MCP server has a tool {name}")
        return await server.call(name, tool_input)

    def _invalidate(self) -> None:
        self._cache = None
        for changed in self._watchers:
            changed()

    def _failed(self, name: str, reason: str) -> None:
        self.failures.put_nowait((name, reason))
