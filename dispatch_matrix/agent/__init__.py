"""The Claude side: one long conversation, kept in the store, answered through the SDK."""

from .engine import Agent, Limits
from .errors import (
    AgentFailure,
    AnswerCut,
    BudgetSpent,
    ContextTooLong,
    ModelAccessError,
    ModelDeclined,
    ModelOutage,
    RequestTooLarge,
    StreamCut,
)
from .memory import Memory, MemoryTool
from .ports import TaskIO
from .settings import Settings

__all__ = [
    "Agent",
    "AgentFailure",
    "AnswerCut",
    "BudgetSpent",
    "ContextTooLong",
    "Limits",
    "Memory",
    "MemoryTool",
    "ModelAccessError",
    "ModelDeclined",
    "ModelOutage",
    "RequestTooLarge",
    "Settings",
    "StreamCut",
    "TaskIO",
]
