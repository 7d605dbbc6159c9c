"""What the agent needs from the task's surroundings (the queue provides it over Matrix)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from anthropic.types import ModelInfo

    from dispatch_matrix.agent.catalogue import ModelStatus
    from dispatch_matrix.agent.compaction import Compaction
    from dispatch_matrix.agent.memory import Memory
    from dispatch_matrix.agent.settings import AgentSection
    from dispatch_matrix.permissions.policy import Decision
    from dispatch_matrix.store import Task


class Approval(Enum):
    """The owner's answer to one approval question."""

    NO = "no"
    YES = "yes"
    # Yes, and allow exactly this call from now on: the agent learns it as a literal rule.
    ALWAYS = "always"

    @property
    def approved(self) -> bool:
        """Whether the call may run."""
        return self is not Approval.NO


class TaskIO(Protocol):
    """The agent's channel to the owner while one task runs."""

    async def progress(self, text: str) -> None:
        """Show what the agent is doing now (edits one status message)."""
        ...

    async def ask(self, decision: Decision, change: str | None = None) -> Approval:
        """Ask the owner to approve a tool call (`change`: a file call's diff); NO on no,
        silence or expiry."""
        ...

    async def learned(self, rule: str | None) -> None:
        """Tell the owner which rule an "always" answer became (None: no literal rule
        could cover the call, so it will be asked again)."""
        ...

    async def send_file(self, path: Path, caption: str | None = None) -> str:
        """Upload a file to the room (encrypted); returns its event id."""
        ...

    def process_started(self, pgid: int) -> None:
        """A tool started a process group (so `!cancel` can stop it)."""
        ...

    def cancelled(self) -> bool:
        """Whether the owner cancelled the task (`!cancel`): a stop the model is told of as
        such, unlike a restart's."""
        ...


class Engine(Protocol):
    """What the queue and the daemon use of a conversation engine: `Agent` (our loop on the
    Messages API) or `ClaudeCodeAgent` (Claude Code through its Agent SDK)."""

    settings: AgentSection
    default_model: str
    memory: Memory | None

    async def answer(self, task: Task, io: TaskIO) -> str:
        """Run the task to its final answer and return its text."""
        ...

    def current_model(self) -> str:
        """The model for the next task."""
        ...

    def set_model(self, name: str | None) -> None:
        """Use `name` from the next task on; None: the config's."""
        ...

    async def model_exists(self, name: str) -> bool | None:
        """Whether the model is known; None when it cannot be asked."""
        ...

    async def reachable(self) -> bool:
        """Whether the engine's service answers now (the worker's probe)."""
        ...

    async def models(self) -> list[ModelInfo] | None:
        """The models offered; None when they cannot be listed."""
        ...

    async def model_status(self, name: str | None = None) -> ModelStatus:
        """Where a model is in its life."""
        ...

    async def compact_now(self) -> Compaction | bool | None:
        """Compact the open conversation (`!compact`): what our compactor did, True when
        the engine compacted on its own, None when there was nothing to compact."""
        ...
