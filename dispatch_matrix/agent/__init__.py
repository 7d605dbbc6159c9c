"""The Claude side: one long conversation, kept in the store, answered through the SDK.

`Agent`, `Memory` and `MemoryTool` load on first use (PEP 562): they bring the SDK and the
tools, which the daemon loads off its start-up path, while the errors and the ports are
light enough for the queue to import at once.

Receives its config section (`settings.py`) typed. May import `core`, `store`,
`permissions`, `toolbox` and `connectors`; never `matrix`, `queue`, `app` nor the features
that sit above it (`identity`, `voice`, `schedule`): it reports and asks through the ports
the queue hands it (`ports.py`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dispatch_matrix.agent.errors import (
    AgentFailure,
    AnswerCut,
    BudgetSpent,
    ContextTooLong,
    ModelAccessError,
    ModelDeclined,
    ModelOutage,
    ModelUnreachable,
    RequestTooLarge,
    StreamCut,
)
from dispatch_matrix.agent.ports import Approval, Engine, TaskIO

if TYPE_CHECKING:
    from dispatch_matrix.agent.engine import Agent
    from dispatch_matrix.agent.memory import Memory, MemoryTool

_LATE = {"Agent": ".engine", "Memory": ".memory", "MemoryTool": ".memory"}

__all__ = [
    "Agent",
    "AgentFailure",
    "AnswerCut",
    "Approval",
    "BudgetSpent",
    "ContextTooLong",
    "Engine",
    "Memory",
    "MemoryTool",
    "ModelAccessError",
    "ModelDeclined",
    "ModelOutage",
    "ModelUnreachable",
    "RequestTooLarge",
    "StreamCut",
    "TaskIO",
]


def __getattr__(name: str) -> Any:
    module = _LATE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
