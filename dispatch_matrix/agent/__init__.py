"""The Claude side: one long conversation, kept in the store, answered through the SDK."""

from .engine import Agent, AgentFailure, Limits
from .memory import Memory, MemoryTool
from .model import BudgetSpent, ContextTooLong, ModelAccessError, ModelOutage
from .ports import TaskIO
from .settings import Settings

__all__ = [
    "Agent",
    "AgentFailure",
    "BudgetSpent",
    "ContextTooLong",
    "Limits",
    "Memory",
    "MemoryTool",
    "ModelAccessError",
    "ModelOutage",
    "Settings",
    "TaskIO",
]
