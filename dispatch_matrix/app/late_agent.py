"""The agent's half of the daemon before it is built: it is imported in a thread while the
first sync runs (the SDK, MCP and the tools are most of the start-up time), and what needs it
before then waits for it here.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import TYPE_CHECKING

from dispatch_matrix.app.pending import Pending
from dispatch_matrix.core.errors import DispatchError

if TYPE_CHECKING:
    from dispatch_matrix.agent import Engine, TaskIO
    from dispatch_matrix.app.agent_parts import AgentParts
    from dispatch_matrix.connectors.inventory import Group
    from dispatch_matrix.store.models import Task


def load_agent_module() -> ModuleType:
    """dispatch_matrix.app.agent_parts, imported (in a thread: it is most of the start-up time);
    a library that is missing or broken is one clear error that ends the run."""
    try:
        return importlib.import_module(".agent_parts", __package__)
    except ImportError as err:
        raise not_loaded(err) from err


def not_loaded(err: ImportError) -> DispatchError:
    return DispatchError(
        f"the agent could not be loaded: {err}",
        fix="reinstall dispatch-matrix in its environment (pip install .)",
    )


class WhenBuilt:
    """The worker's agent before it is built; the worker starts only after, so a task never
    waits here for long, and never runs without it."""

    def __init__(self, agent: Pending[Engine]) -> None:
        self._agent = agent

    async def answer(self, task: Task, io: TaskIO) -> str:
        return await (await self._agent.get()).answer(task, io)


def reachable_through(agent: Pending[Engine]) -> Callable[[], Awaitable[bool]]:
    """The worker's probe of the API, through the agent once it is built."""

    async def reachable() -> bool:
        return await (await agent.get()).reachable()

    return reachable


def inventory_of(parts: Pending[AgentParts]) -> Callable[[], Awaitable[list[Group]]]:
    async def inventory() -> list[Group]:
        return (await parts.get()).inventory()

    return inventory
