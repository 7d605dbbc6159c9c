"""Compaction: the older part of the conversation becomes a summary the model writes.

The summary is a row of its own (`summaries`) saying which transcript row it covers up to;
the turns it stands for stay in the transcript untouched. Requests then send the summary as
their first user message and the newer turns verbatim. Each compaction summarises the
previous summary plus the turns after it, so the summary never grows without bound.
Where the cut goes (before a turn, never between a tool call and its result) and the plain
text the summariser reads are decided here too (`cut_point`, `render`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anthropic

from dispatch_matrix.agent import model
from dispatch_matrix.agent.prompt import SUMMARY_SYSTEM, summary_request
from dispatch_matrix.agent.settings import AgentSection
from dispatch_matrix.agent.transcript import estimate_tokens
from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import ModelError
from dispatch_matrix.store import LedgerQueries
from dispatch_matrix.store.ledger import Summary

log = logs.get(__name__)

# The summary's own length: a few pages at most, whatever the window.
SUMMARY_MAX_TOKENS = 4096


@dataclass(frozen=True)
class Compaction:
    """What one compaction did."""

    summary: Summary
    summarised: int
    kept: int
    tokens_before: int
    tokens_after: int


class Compactor:
    """Writes summaries of the older turns, one compaction at a time."""

    def __init__(
        self, db: LedgerQueries, client: anthropic.AsyncAnthropic, settings: AgentSection
    ) -> None:
        self._db = db
        self._client = client
        self._settings = settings
        # `!compact` may arrive while the running task compacts by itself.
        self._lock = asyncio.Lock()

    async def compact(
        self, conversation: int, task_id: int | None, model_name: str, *, relaxed: bool = False
    ) -> Compaction | None:
        """Summarise what lies before the cut point; None when there is nothing to cut."""
        async with self._lock:
            summary = self._db.latest_summary(conversation)
            after = summary.covers_up_to if summary else 0
            rows = self._db.transcript_rows(conversation, after_id=after)
            messages = [row.message() for row in rows]
            cut = cut_point(messages, self._settings.keep_recent_messages, relaxed=relaxed)
            if cut is None:
                log.info("agent.compact_skipped", messages=len(rows), relaxed=relaxed)
                return None
            previous = summary.text if summary else None
            older = messages[:cut]
            text = await self._summarise(previous, older, task_id, model_name)
            saved = self._db.add_summary(conversation, rows[cut - 1].id, text)
        before = estimate_tokens([previous or "", older])
        after_tokens = estimate_tokens(text)
        log.info(
            "agent.compacted",
            conversation=conversation,
            summarised=cut,
            kept=len(rows) - cut,
            covers_up_to=saved.covers_up_to,
            tokens_before=before,
            tokens_after=after_tokens,
            relaxed=relaxed,
        )
        return Compaction(saved, cut, len(rows) - cut, before, after_tokens)

    async def _summarise(
        self, previous: str | None, older: list[dict[str, Any]], task_id: int | None, name: str
    ) -> str:
        # The summariser's request must itself fit: the older part is sent as plain text
        # within half the window, long tool output shortened.
        budget = self._settings.context_window * 4 // 2 - len(previous or "")
        conversation = render(older, max(budget, 4000))
        words = max(150, min(SUMMARY_MAX_TOKENS, self._settings.context_window // 10) * 3 // 4)
        system = [{"type": "text", "text": SUMMARY_SYSTEM.format(words=words)}]
        content = [{"type": "text", "text": summary_request(previous, conversation)}]
        reply = await model.request(
            self._client,
            model=name,
            max_tokens=SUMMARY_MAX_TOKENS,
            system=system,
            messages=[{"role": "user", "content": content}],
            tools=[],
        )
        counts = model.usage_counts(reply)
        self._db.record_usage(task_id, name, counts)
        text = "\n\n".join(b.text for b in reply.content if b.type == "text").strip()
        if not text:
            raise ModelError("the model returned an empty summary of the conversation")
        return text


# -- where the older part is cut, and how the summariser reads it ----------------------------


def starts_turn(message: dict[str, Any]) -> bool:
    """Whether a message opens a turn: a user message that answers no tool call."""
    return message["role"] == "user" and not any(
        block.get("type") == "tool_result" for block in message["content"]
    )


def cut_point(
    messages: Sequence[dict[str, Any]], keep: int, *, relaxed: bool = False
) -> int | None:
    """Where to cut: messages[:i] become the summary, messages[i:] stay verbatim; None if
    nothing can be cut.

    The cut goes before a message that opens a turn, so a tool_use is never parted from its
    tool_result, and leaves at least `keep` messages. `relaxed` (the API already refused the
    request as too long) gives up `keep` first, then cuts before an assistant message inside
    the running turn — which also keeps every tool_use with its result, both being after it.
    """
    starts = [i for i in range(1, len(messages)) if starts_turn(messages[i])]
    fitting = [i for i in starts if len(messages) - i >= keep]
    if fitting:
        return fitting[-1]
    if not relaxed:
        return None
    if starts:
        return starts[-1]
    replies = [i for i in range(1, len(messages)) if messages[i]["role"] == "assistant"]
    return replies[-1] if replies else None


def render(messages: Sequence[dict[str, Any]], budget_chars: int, per_result: int = 1500) -> str:
    """The messages as plain text for the summariser (a request that has no tools may not
    hold tool blocks); tool results shortened, the whole kept within `budget_chars`."""
    parts: list[str] = []
    for message in messages:
        who = "Owner" if message["role"] == "user" else "Assistant"
        for block in message["content"]:
            kind = block.get("type")
            if kind == "text" and block.get("text", "").strip():
                parts.append(f"{who}: {block['text'].strip()}")
            elif kind in ("image", "document"):
                parts.append(f"{who}: [{kind}]")
            elif kind == "tool_use":
                args = json.dumps(block.get("input") or {}, ensure_ascii=False)
                parts.append(f"Assistant called {block.get('name')}: {_shorten(args, 600)}")
            elif kind == "tool_result":
                label = "Tool error" if block.get("is_error") else "Tool result"
                parts.append(f"{label}: {_shorten(_result_text(block), per_result)}")
    text = "\n\n".join(parts)
    return _shorten(text, budget_chars)


def _result_text(block: dict[str, Any]) -> str:
    inner = block.get("content")
    if isinstance(inner, str):
        return inner
    if isinstance(inner, list):
        return "\n".join(
            part.get("text", "") if part.get("type") == "text" else f"[{part.get('type')}]"
            for part in inner
        )
    return ""


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return f"{text[:head]}\n[… {len(text) - limit} chars left out …]\n{text[len(text) - tail :]}"
