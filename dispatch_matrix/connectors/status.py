"""A server's state as people see it (`!tools`, `doctor`), without the MCP SDK behind it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class State(Enum):
    """Where a server is in its life."""

    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"


@dataclass(frozen=True)
class Status:
    """A server's state for people (`!tools`, `doctor`)."""

    name: str
    state: State
    detail: str
    tools: int
    restarts: int
    describe: str
    # Seconds until the next start, while it waits for one.
    retry_in: float | None = None
