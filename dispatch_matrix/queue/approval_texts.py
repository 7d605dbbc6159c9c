"""What the bot says about approvals: the question that shows exactly what would run, and
the answers to answers. Part of the queue's texts (`texts.py`), kept apart for its size."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..store import Task

if TYPE_CHECKING:
    from ..tools.policy import Decision


def code_block(text: str) -> str:
    """`text` as a fenced code block that nothing inside it can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def approval_question(task: Task, decision: Decision, change: str | None, minutes: int) -> str:
    """The approval question: what runs, whole; what no rule covers; the change."""
    what = "Make this change" if change else "Run this"
    parts = [f"❓ **May I?** {what} ({task.short_id}):", code_block(decision.subject)]
    if decision.uncovered and list(decision.uncovered) != [decision.subject]:
        parts.append("Not covered by your rules:")
        parts.extend(code_block(part) for part in decision.uncovered)
    if change:
        parts.append("The change:")
        parts.append(code_block(change))
    parts.append(f"Why I ask: {decision.reason}.")
    parts.append(
        "Reply **yes** or **no** to this message — or **always** to allow exactly this "
        "from now on (or react ✅ / ❌ from an app that encrypts reactions). "
        f"No answer in {minutes} min means no."
    )
    return "\n\n".join(parts)


APPROVAL_EXPIRED = "⌛ No answer in time: I did not do it."
QUESTION_CLOSED = (
    "That question is closed (answered or expired), so your answer approved nothing. If I "
    "still need it, I will ask again."
)


def which_question(count: int) -> str:
    """A bare yes / no while several questions are open."""
    return (
        f"{count} questions are open; reply to the one you mean (a bare yes or no could "
        "answer the wrong one)."
    )


def rule_learned(rule: str | None) -> str:
    """What an "always" answer became."""
    if rule is None:
        return (
            "I ran it this once, but no rule can cover exactly that call safely, so I will "
            "ask again next time."
        )
    return f"Learned: {code_span(rule)} — exactly this runs without asking from now on."


def code_span(text: str) -> str:
    """`text` as inline code that nothing inside it can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * (longest + 1)
    return f"{ticks} {text} {ticks}" if longest else f"`{text}`"
