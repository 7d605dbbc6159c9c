"""The Claude side: one long conversation, kept in the store, answered through the SDK."""

from .engine import Agent, AgentFailure, Limits
from .model import ContextTooLong, ModelAccessError, ModelOutage
from .ports import TaskIO

__all__ = [
    "Agent",
    "AgentFailure",
    "ContextTooLong",
    "Limits",
    "ModelAccessError",
    "ModelOutage",
    "TaskIO",
]
