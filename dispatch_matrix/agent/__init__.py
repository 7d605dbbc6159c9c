"""The Claude side: one long conversation, kept in the store, answered through the SDK."""

from .engine import Agent, AgentFailure
from .memory import Memory, MemoryTool
from .model import BudgetSpent, ContextTooLong, ModelAccessError, ModelOutage
from .ports import Approval, TaskIO

__all__ = [
    "Agent",
    "AgentFailure",
    "Approval",
    "BudgetSpent",
    "ContextTooLong",
    "Memory",
    "MemoryTool",
    "ModelAccessError",
    "ModelOutage",
    "TaskIO",
]
