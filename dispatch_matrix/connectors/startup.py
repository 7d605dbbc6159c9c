"""The connectors' place in the daemon: built from the config with their tools in the
registry, the worker held until every MCP server has started or failed once, their start
failures told in the room, and the `!tools` inventory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from dispatch_matrix.app.config import Config
from dispatch_matrix.connectors import web
from dispatch_matrix.connectors.hub import Connectors
from dispatch_matrix.connectors.inventory import Group, inventory
from dispatch_matrix.core.ids import RoomID
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.outbox import Outbox
from dispatch_matrix.permissions.policy import Policy
from dispatch_matrix.queue import Worker, texts
from dispatch_matrix.toolbox.registry import ToolRegistry


@dataclass(frozen=True)
class Wiring:
    """The MCP servers and the web tools of one daemon run."""

    connectors: Connectors
    web_tools: web.WebTools | None

    def inventory(self, policy: Policy, registry: ToolRegistry) -> Callable[[], list[Group]]:
        """What `!tools` lists, computed when asked."""

        def now() -> list[Group]:
            return inventory(
                policy,
                registry.names(),
                self.connectors.statuses(),
                self.connectors.tools_of,
                self.web_tools.names if self.web_tools else [],
            )

        return now


def wire(config: Config, policy: Policy, registry: ToolRegistry) -> Wiring:
    """Build the servers (their secrets go to the redactor) and offer their tools."""
    connectors = Connectors.from_config(config.mcp)
    registry.add_provider(connectors)
    web_tools = web.WebTools(config.web, web.refused(policy)) if config.web.enabled else None
    return Wiring(connectors, web_tools)


async def work(worker: Worker, connectors: Connectors) -> None:
    """Run the worker once every MCP server has started or failed once: the first request
    then carries the whole tool list, which stays put (and cached)."""
    await connectors.settled()
    await worker.run()


async def announce_failures(
    synced: asyncio.Event, client: MatrixClient, connectors: Connectors, outbox: Outbox
) -> None:
    """Tell the owners, once per run, server and room, that an MCP server did not start.

    A failure at start-up comes before the bot is in any room, so the news waits for a
    sync (`synced`) after which the bot is in one.
    """
    started = int(time.time())
    pending: list[tuple[str, str]] = []
    while True:
        await synced.wait()
        synced.clear()
        while not connectors.failures.empty():
            pending.append(connectors.failures.get_nowait())
        rooms = list(client.client.rooms)
        if not pending or not rooms:
            continue
        for name, reason in pending:
            for room_id in rooms:
                await outbox.post(
                    RoomID(room_id),
                    texts.mcp_failed(name, reason),
                    notice=True,
                    key=f"mcp-failed-{name}-{started}-{room_id}",
                )
        pending.clear()
