"""What every tool shares: its context, its result, and the interface the agent calls.

A tool that fails returns an error result the model sees (`ToolResult.error`); it does not
raise. Tools never import `matrix/`: they report progress and ask for approval through the
`Reporter` the queue hands them, so they run and test without a homeserver.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolResult:
    """What the model gets back: content blocks (text, image) and whether it failed."""

    content: list[dict[str, Any]]
    is_error: bool = False

    @classmethod
    def text(cls, text: str) -> ToolResult:
        return cls([{"type": "text", "text": text}])

    @classmethod
    def error(cls, text: str) -> ToolResult:
        return cls([{"type": "text", "text": text}], is_error=True)

    def as_block(self, tool_use_id: str) -> dict[str, Any]:
        """The tool_result block for the next user message."""
        block: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": tool_use_id,
            "content": self.content,
        }
        if self.is_error:
            block["is_error"] = True
        return block


class Reporter(Protocol):
    """How a tool shows progress and sends files (the queue implements it over Matrix)."""

    async def progress(self, text: str) -> None: ...

    async def send_file(self, path: Path, caption: str | None = None) -> str: ...


@dataclass(frozen=True)
class ToolContext:
    """Everything a tool call may use, handed in by the agent (one copy per call)."""

    workdir: Path
    allowed_roots: tuple[Path, ...]
    # The default timeout of a shell command: [agent] bash_timeout_s.
    bash_timeout_s: float
    # Paths the tools must never read or write, whatever the roots say (the state folder).
    denied_paths: tuple[Path, ...] = ()
    # Paths no tool may change, whatever the roots and rules say: what runs later outside
    # the sandbox (start-up files, the daemon's own installation; see sandbox/wall.py).
    readonly_paths: tuple[Path, ...] = ()
    # Whether shell calls keep the wall's read-only lists under HOME (the daemon: always).
    guard_home: bool = False
    # Where a shell call notes the paths it watches while it runs (in the state folder), so
    # that a restart after a crash mid-call still moves aside what it planted.
    watch_dir: Path | None = None
    # The sandbox's own package caches (cargo, Go, npm, Maven, pre-commit: sandbox/caches.py),
    # bound writable into every sandboxed call; None leaves the tools' caches as they are.
    sandbox_cache: Path | None = None
    reporter: Reporter | None = None
    # Environment variables passed to shell commands (built from an allowlist).
    env: dict[str, str] = field(default_factory=dict)
    # Tool limits, not settings: the longest timeout the model may ask for, and how much
    # output one call returns (the agent toolset's own figures).
    bash_max_timeout_s: float = 1800.0
    output_limit: int = 30_000
    # Called with the process group id of a started shell command, so `!cancel` can kill it.
    on_process: Callable[[int], Awaitable[None] | None] | None = None
    # The ledger id of the task the call belongs to (the `schedule` tool files its
    # schedules under it: room, owner, and the context a follow-up carries).
    task_id: int | None = None


class Tool(Protocol):
    """One tool: its API definition and how to run it."""

    name: str

    def definition(self) -> dict[str, Any]:
        """The tool's entry in the Messages API `tools` list (name, description, schema)."""
        ...

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Run one call; never raises for a failure the model should hear about."""
        ...
