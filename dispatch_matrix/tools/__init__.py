"""The agent's tools and the permission policy that every call passes first."""

from .base import Reporter, Tool, ToolContext, ToolResult
from .paths import resolve
from .policy import Decision, Policy, Verdict
from .registry import ToolRegistry, default_tools
from .sandbox import Sandbox
from .sandbox_host import Confinement, check_sandbox

__all__ = [
    "Confinement",
    "Decision",
    "Policy",
    "Reporter",
    "Sandbox",
    "Tool",
    "ToolContext",
    "ToolRegistry",
    "ToolResult",
    "Verdict",
    "check_sandbox",
    "default_tools",
    "resolve",
]
