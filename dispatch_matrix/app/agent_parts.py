"""The agent's half of the daemon: the tools and their policy, the MCP servers, the web
tools and the Agent itself.

It holds the heaviest imports (the Anthropic SDK, the MCP SDK), so the daemon imports this
module in a thread while its first sync runs and builds the parts once it is in (`build`);
the Matrix half takes messages meanwhile and no task runs before the Agent is built.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from dispatch_matrix.agent import Agent, Engine, Memory
from dispatch_matrix.agent.prompt import Machine, system_prompt
from dispatch_matrix.app.config import Config
from dispatch_matrix.app.parts import anthropic_client, build_tools
from dispatch_matrix.connectors import startup as connecting
from dispatch_matrix.connectors.inventory import Group
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.outbox import Outbox
from dispatch_matrix.permissions.policy import Policy
from dispatch_matrix.queue import Worker
from dispatch_matrix.sandbox.host import Confinement
from dispatch_matrix.schedule.clock import Clock
from dispatch_matrix.schedule.tool import ScheduleTool
from dispatch_matrix.store import Database
from dispatch_matrix.toolbox.base import ToolContext
from dispatch_matrix.toolbox.registry import ToolRegistry


@dataclass(frozen=True)
class AgentParts:
    """What `build` made: the engine, and the connectors the worker waits for."""

    agent: Engine
    wiring: connecting.Wiring
    inventory: Callable[[], list[Group]]

    def start(
        self,
        group: asyncio.TaskGroup,
        worker: Worker,
        synced: asyncio.Event,
        client: MatrixClient,
        outbox: Outbox,
    ) -> None:
        """The MCP servers, the worker (once they have settled) and their failure news."""
        connectors = self.wiring.connectors
        group.create_task(connectors.run(), name="mcp")
        group.create_task(connecting.work(worker, connectors), name="worker")
        group.create_task(
            connecting.announce_failures(synced, client, connectors, outbox), name="mcp-news"
        )


def build(
    config: Config,
    db: Database,
    confinement: Confinement | None,
    clock: Clock,
    zone: ZoneInfo,
    schedules_changed: Callable[[], None],
) -> AgentParts:
    """The tools, the MCP servers and the Agent, from the config."""
    # The shell judge loads its grammar at the first command; a missing one is news now.
    for grammar in ("tree_sitter", "tree_sitter_bash"):
        if importlib.util.find_spec(grammar) is None:
            raise ImportError(f"No module named {grammar!r}", name=grammar)
    workdir = config.agent.workdir.expanduser()
    roots = [root.expanduser() for root in config.agent.allowed_roots]
    machine = Machine.here(workdir, roots)
    policy, registry, context = build_tools(config, workdir, roots, db.learned_rules(), confinement)
    # MCP servers and web tools: their tools join the registry's, their secrets the redactor.
    wiring = connecting.wire(config, policy, registry)
    registry.add(ScheduleTool(db, clock, zone, schedules_changed))
    system = system_prompt(config.matrix.owners, machine, config.agent.system_prompt, zone=zone.key)
    agent: Engine
    if config.agent.engine == "claude-code":
        agent = _claude_code(config, db, clock, zone, system, registry, policy, context)
        return AgentParts(agent, wiring, wiring.inventory(policy, registry))
    agent = Agent(
        db,
        anthropic_client(config),
        settings=config.agent,
        system=system,
        tools=registry,
        policy=policy,
        context=context,
        memory=Memory(Path(config.state_dir) / "memory.md"),
        local_now=lambda: clock.now().astimezone(zone),
        web_tools=wiring.web_tools,
    )
    return AgentParts(agent, wiring, wiring.inventory(policy, registry))


def _claude_code(
    config: Config,
    db: Database,
    clock: Clock,
    zone: ZoneInfo,
    system: str,
    registry: ToolRegistry,
    policy: Policy,
    context: ToolContext,
) -> Engine:
    """The Claude Code engine (the claude-code extra, checked when the config was loaded)."""
    from dispatch_matrix.agent.claude_code import ClaudeCodeAgent
    from dispatch_matrix.agent.claude_code_login import claude_code_env

    return ClaudeCodeAgent(
        db,
        settings=config.agent,
        system=system,
        tools=registry,
        policy=policy,
        context=context,
        env=claude_code_env(config.agent),
        local_now=lambda: clock.now().astimezone(zone),
    )
