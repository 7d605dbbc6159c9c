"""The agent's tools and the permission policy that every call passes first.

The names load on first use (PEP 562): the policy brings the shell judge and the registry
every tool, which the daemon loads off its start-up path, while the queue imports light
parts (`tools.groups`) at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Reporter, Tool, ToolContext, ToolResult
    from .paths import resolve
    from .policy import Decision, Policy, Verdict
    from .registry import ToolRegistry, default_tools
    from .sandbox import Sandbox
    from .sandbox_host import Confinement, check_sandbox

_WHERE = {
    "Reporter": ".base",
    "Tool": ".base",
    "ToolContext": ".base",
    "ToolResult": ".base",
    "resolve": ".paths",
    "Decision": ".policy",
    "Policy": ".policy",
    "Verdict": ".policy",
    "ToolRegistry": ".registry",
    "default_tools": ".registry",
    "Sandbox": ".sandbox",
    "Confinement": ".sandbox_host",
    "check_sandbox": ".sandbox_host",
}

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
