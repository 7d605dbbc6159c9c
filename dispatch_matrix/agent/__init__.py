"""The Claude side: one long conversation, kept in the store, answered through the SDK."""

from .engine import Agent
from .errors import (
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
from .memory import Memory, MemoryTool
from .ports import Approval, TaskIO

__all__ = [
    "Agent",
    "AgentFailure",
    "AnswerCut",
    "Approval",
    "BudgetSpent",
    "ContextTooLong",
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
