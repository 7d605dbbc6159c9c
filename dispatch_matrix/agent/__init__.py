"""The Claude side: one long conversation, kept in the store, answered through the SDK."""

from .engine import Agent, AgentFailure

__all__ = ["Agent", "AgentFailure"]
