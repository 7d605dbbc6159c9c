"""What the agent needs from the task's surroundings (the queue provides it over Matrix)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from dispatch_matrix.permissions.policy import Decision


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
