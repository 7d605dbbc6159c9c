"""The engine's knobs that are not budgets of one task: context, cost, thinking."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import AgentSection


@dataclass(frozen=True)
class Settings:
    """How the engine keeps the conversation within the context window and the budget."""

    context_window: int = 200_000
    # Compact before a request would fill more than this share of the window.
    compact_at: float = 0.7
    keep_recent_messages: int = 12
    max_tool_result_chars: int = 20_000
    # USD per local day; 0 means no limit.
    daily_budget_usd: float = 0.0
    # Extended thinking tokens per reply; 0 means off.
    thinking_budget: int = 0
    # Times a reply cut off at max_tokens (or a full context) is continued before the owner
    # is told that the answer was cut.
    max_continuations: int = 2
    # Cache lifetimes: "5m" everywhere, "1h" everywhere, or "mix" (1 hour for the stable
    # prefix — tools, system, memory, summary — and 5 minutes for the conversation's tail).
    # "1h" by default: over a day of tasks minutes to hours apart it costs 9-16 % less than
    # "5m" and 7-9 % less than "mix" (tools/bench/results/day_cost.json).
    cache_ttl: str = "1h"

    @classmethod
    def from_config(cls, section: AgentSection) -> Settings:
        """The settings of an [agent] config section."""
        return cls(
            context_window=section.context_window,
            compact_at=section.compact_at,
            keep_recent_messages=section.keep_recent_messages,
            max_tool_result_chars=section.max_tool_result_chars,
            daily_budget_usd=section.daily_budget_usd,
            thinking_budget=section.thinking_budget,
            max_continuations=section.max_continuations,
            cache_ttl=section.cache_ttl,
        )

    @property
    def prefix_ttl(self) -> str:
        """The lifetime of the stable prefix's breakpoints."""
        return "5m" if self.cache_ttl == "5m" else "1h"

    @property
    def tail_ttl(self) -> str:
        """The lifetime of the breakpoint on the conversation's tail."""
        return "1h" if self.cache_ttl == "1h" else "5m"

    @property
    def compact_above(self) -> int:
        """The request size, in tokens, past which older turns are compacted."""
        return int(self.context_window * self.compact_at)
