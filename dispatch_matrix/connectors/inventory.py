"""What `!tools` shows: every tool the agent has now, grouped, each with the rule that
applies to it. Pure: it reads the policy and the servers' states it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dispatch_matrix.connectors.status import State, Status

if TYPE_CHECKING:
    from dispatch_matrix.permissions.policy import Policy


@dataclass(frozen=True)
class ToolLine:
    """One tool and what the rules say about it."""

    name: str
    rule: str


@dataclass(frozen=True)
class Group:
    """Tools of one kind: built-in, one MCP server (with its state), or the API's own."""

    title: str
    state: str
    lines: tuple[ToolLine, ...]


def rule_for(policy: Policy, name: str) -> str:
    """The rule that decides a tool, for people: `allow (mcp__notes)`, `ask (no rule)`."""
    decision = policy.decide(name, {}) if name.startswith("mcp__") else None
    if decision is not None:
        return f"{decision.verdict} ({decision.rule or 'no rule'})"
    rules = policy.rules_naming(name)
    if not rules:
        if name in ("memory", "schedule"):
            return "allow (own state)"
        return "ask (no rule)"
    shown = "; ".join(f"{verdict} {text}" for verdict, text in rules[:6])
    more = f"; … {len(rules) - 6} more" if len(rules) > 6 else ""
    return f"{shown}{more}; anything else asks"


def server_state(status: Status) -> str:
    """A server's state in a few words."""
    if status.state is State.READY:
        return f"ready, {status.tools} tools" + (
            f" (restarted {status.restarts}×)" if status.restarts else ""
        )
    wait = f", next try in {status.retry_in:.0f}s" if status.retry_in is not None else ""
    detail = f": {status.detail}" if status.detail else ""
    return f"{status.state.value}{detail}{wait}"


def inventory(
    policy: Policy,
    builtin: Sequence[str],
    servers: Sequence[Status],
    tools_of: Callable[[str], list[str]],
    web: Sequence[str],
) -> list[Group]:
    """The groups `!tools` lists, in the order the model sees the tools."""
    groups = [
        Group(
            "Built-in",
            "",
            tuple(ToolLine(name, rule_for(policy, name)) for name in builtin),
        )
    ]
    for status in servers:
        lines = tuple(ToolLine(name, rule_for(policy, name)) for name in tools_of(status.name))
        groups.append(Group(f"MCP server {status.name}", server_state(status), lines))
    if web:
        lines = tuple(ToolLine(name, "allow (on in [web]; run by the API)") for name in web)
        groups.append(Group("Server tools", "", lines))
    return groups
