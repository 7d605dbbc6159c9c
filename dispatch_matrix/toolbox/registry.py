"""The agent's tools by name: their definitions for the API and one way to run them."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from dispatch_matrix.core.errors import ToolError
from dispatch_matrix.sandbox.host import Confinement
from dispatch_matrix.sandbox.spec import Sandbox
from dispatch_matrix.toolbox.base import Tool, ToolContext, ToolResult
from dispatch_matrix.toolbox.files import EditTool, ReadTool, WriteTool
from dispatch_matrix.toolbox.schema import describe_validation
from dispatch_matrix.toolbox.search import GlobTool, GrepTool
from dispatch_matrix.toolbox.shell import BashTool


def default_tools(
    sandbox: Confinement | Sandbox | str = Sandbox.NONE,
    read_denied: Callable[[Path], bool] | None = None,
) -> list[Tool]:
    """The agent toolset: bash, read, write, edit, glob, grep (in that order).

    Pass `read_denied=policy.read_denied` so grep's walk honours the deny rules below the
    folder the policy judged.
    """
    return [
        BashTool(sandbox),
        ReadTool(),
        WriteTool(),
        EditTool(),
        GlobTool(),
        GrepTool(read_denied),
    ]


class ToolProvider(Protocol):
    """Tools that come and go while the daemon runs (the MCP servers'): listed after the
    registered ones, in an order the provider keeps stable.

    The provider calls what it was given to `watch` whenever its listing may have changed;
    the registry asks for `definitions()` again only then, so a quiet day builds the tools
    list once.
    """

    def watch(self, changed: Callable[[], None]) -> None: ...

    def definitions(self) -> list[dict[str, Any]]: ...

    def provides(self, name: str) -> bool: ...

    async def run_tool(
        self, name: str, tool_input: dict[str, Any], ctx: ToolContext
    ) -> ToolResult: ...


class ToolRegistry:
    """Holds the tools; lists their definitions and runs calls, turning failures into results.

    Definitions come in registration order, which never changes while the daemon runs, so
    the tools part of the prompt stays a stable cache prefix; a provider's tools follow.
    A tool's definition is fixed when it is built, so the list is built once and again
    only when it may have changed: a tool or a provider added, a provider's listing changed
    (the provider says so). `version` moves at once at each such change; it is a plain
    attribute, not a call, so a caller that keeps the list it was given can tell at no
    cost, before each use, whether that list is still the current one.
    """

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._providers: list[ToolProvider] = []
        self.version = 0
        # The list as last built, and the version it was built at (None: never built).
        self._built: list[dict[str, Any]] = []
        self._built_at: int | None = None
        for tool in tools:
            self.add(tool)

    def add_provider(self, provider: ToolProvider) -> None:
        """Offer a provider's tools too (after the registered ones)."""
        self._providers.append(provider)
        provider.watch(self._changed)
        self._changed()

    def add(self, tool: Tool) -> None:
        """Register one more tool; a second tool of the same name is a programming error."""
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool
        self._changed()

    def _changed(self) -> None:
        self.version += 1

    def names(self) -> list[str]:
        """The registered tool names, in order."""
        return list(self._tools)

    def get(self, name: str) -> Tool | None:
        """The tool of that name, if any."""
        return self._tools.get(name)

    def definitions(self) -> list[dict[str, Any]]:
        """The Messages API `tools` list: a new list of fresh top-level dicts (a caller may
        add cache_control to an entry); what they hold is shared and read only."""
        if self._built_at != self.version:
            # The version as it was before building: a change announced meanwhile (or a
            # build that failed) leaves the list to be built again at the next call.
            version = self.version
            self._built = self._build()
            self._built_at = version
        return [dict(definition) for definition in self._built]

    def _build(self) -> list[dict[str, Any]]:
        # Deep copies, once: the list must not change when a tool or provider reuses the
        # objects it handed out.
        own = [copy.deepcopy(tool.definition()) for tool in self._tools.values()]
        provided = [copy.deepcopy(d) for p in self._providers for d in p.definitions()]
        return own + [d for d in provided if d["name"] not in self._tools]

    async def run(self, name: str, tool_input: object, ctx: ToolContext) -> ToolResult:
        """Run one call; an unknown tool, bad input or ToolError becomes an error result."""
        tool = self._tools.get(name)
        # Providers are asked only for a name that is not ours (ours win, as in the list).
        provider = (
            None
            if tool is not None
            else next((p for p in self._providers if p.provides(name)), None)
        )
        if tool is None and provider is None:
            known = ", ".join(self._tools) or "none"
            return ToolResult.error(f"unknown tool {name!r}; the tools are: {known}")
        if not isinstance(tool_input, dict):
            return ToolResult.error(f"{name}: invalid input: expected an object")
        try:
            if tool is None and provider is not None:
                return await provider.run_tool(name, tool_input, ctx)
            assert tool is not None
            return await tool.run(tool_input, ctx)
        except ToolError as err:
            return ToolResult.error(f"{name}: {err.message}")
        except ValidationError as err:
            return ToolResult.error(f"{name}: invalid input: {describe_validation(err)}")
