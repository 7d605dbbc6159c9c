"""The agent loop: ask Claude, run the tools it asks for (each past the permission policy),
give it the results, until it answers. Every model reply and every batch of tool results is
in the store before the next step, so a restart continues from the last completed step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anthropic

from .. import logs
from ..errors import ModelError
from ..store import Database, Task
from ..tools import Policy, ToolContext, ToolRegistry, ToolResult
from . import model
from .ports import TaskIO
from .prompt import turn_context
from .transcript import (
    CACHE,
    block_dict,
    interrupted_results,
    normalize,
    pending_tool_uses,
    text_of,
    with_cache_breakpoint,
)

log = logs.get(__name__)


class AgentFailure(ModelError):
    """The task cannot be finished; the message says why, for the owner."""


@dataclass(frozen=True)
class Limits:
    """Budgets of one task."""

    max_steps: int = 60
    max_seconds: float = 3600.0


class Agent:
    """Answers tasks with Claude and the local tools, keeping the conversation in the store."""

    def __init__(
        self,
        db: Database,
        client: anthropic.AsyncAnthropic,
        *,
        model_name: str,
        max_tokens: int,
        system: str,
        tools: ToolRegistry,
        policy: Policy,
        context: ToolContext,
        limits: Limits = Limits(),
    ) -> None:
        self._db = db
        self._client = client
        self.model = model_name
        self._max_tokens = max_tokens
        self._system = system
        self._tools = tools
        self._policy = policy
        self._context = context
        self._limits = limits

    async def answer(self, task: Task, io: TaskIO, now: datetime | None = None) -> str:
        """Run the task to the model's final answer and return its text."""
        conversation = self._db.current_conversation()
        done = self._resume(task, conversation, now)
        if done is not None:
            return done
        started = time.monotonic()
        while True:
            steps = self._db.count_step(task.id)
            if steps > self._limits.max_steps:
                raise AgentFailure(
                    f"stopped after {self._limits.max_steps} steps without finishing "
                    "(the step budget; raise [agent] max_steps if this task needs more)"
                )
            if time.monotonic() - started > self._limits.max_seconds:
                raise AgentFailure(
                    f"stopped after {self._limits.max_seconds / 60:.0f} minutes without "
                    "finishing (the time budget, [agent] max_task_seconds)"
                )
            reply = await self._ask(task, conversation, steps)
            content = [block_dict(block) for block in reply.content]
            self._db.append_message(conversation, task.id, "assistant", content)
            uses = pending_tool_uses({"role": "assistant", "content": content})
            if reply.stop_reason != "tool_use" or not uses:
                return text_of(content) or "(done; the model gave no text)"
            results = [await self._run_tool(use, io, steps) for use in uses]
            self._db.append_message(conversation, task.id, "user", results)

    def _resume(self, task: Task, conversation: int, now: datetime | None) -> str | None:
        """Start the task's turn, or pick it up after a restart; the answer if it had one."""
        mine = self._db.task_messages(task.id)
        if not mine:
            stamp = turn_context(now or datetime.now(UTC))
            content = [{"type": "text", "text": f"{stamp}\n{task.body}"}]
            self._db.append_message(conversation, task.id, "user", content)
            return None
        last = mine[-1]
        if last["role"] == "assistant":
            repair = interrupted_results(last)
            if not repair:
                return text_of(last["content"]) or "(done; the model gave no text)"
            # Tool calls were running when we stopped: the model hears so, and decides.
            self._db.append_message(conversation, task.id, "user", repair)
            log.warning("agent.tool_calls_interrupted", task=task.short_id, calls=len(repair))
        return None

    async def _ask(self, task: Task, conversation: int, step: int) -> Any:
        messages = with_cache_breakpoint(normalize(self._db.transcript(conversation)))
        system = [{"type": "text", "text": self._system, "cache_control": dict(CACHE)}]
        log.info("agent.request", task=task.short_id, step=step, messages=len(messages))
        reply = await model.request(
            self._client,
            model=self.model,
            max_tokens=self._max_tokens,
            system=system,
            messages=messages,
            tools=self._tools.definitions(),
        )
        usage = reply.usage.model_dump(exclude_none=True) if reply.usage else {}
        counts = {k: int(v) for k, v in usage.items() if isinstance(v, int)}
        self._db.record_usage(task.id, self.model, counts)
        log.info(
            "agent.reply",
            task=task.short_id,
            step=step,
            stop=reply.stop_reason,
            input_tokens=counts.get("input_tokens"),
            output_tokens=counts.get("output_tokens"),
            cache_read=counts.get("cache_read_input_tokens"),
            cache_write=counts.get("cache_creation_input_tokens"),
        )
        return reply

    async def _run_tool(self, use: dict[str, Any], io: TaskIO, step: int) -> dict[str, Any]:
        name, tool_input = use["name"], use.get("input") or {}
        decision = self._policy.decide(name, tool_input)
        log.info("tool.decision", tool=name, verdict=decision.verdict, rule=decision.rule)
        if decision.verdict == "deny":
            result = ToolResult.error(f"Not allowed: {decision.reason}. Do not try another way.")
            return result.as_block(use["id"])
        if decision.verdict == "ask" and not await io.ask(decision):
            result = ToolResult.error(
                f"The owner did not approve this ({decision.subject}). Do not do it; "
                "continue without it or explain what you need."
            )
            return result.as_block(use["id"])
        await io.progress(f"step {step}: {_describe(name, tool_input)}")
        context = self._context
        context.on_process = io.process_started
        result = await self._tools.run(name, tool_input, context)
        log.info("tool.result", tool=name, error=result.is_error)
        return result.as_block(use["id"])


def _describe(name: str, tool_input: dict[str, Any]) -> str:
    """A one-line account of a tool call for the owner's status message."""
    if name == "bash":
        command = str(tool_input.get("command", "")).strip().splitlines()
        first = command[0] if command else ""
        return f"running `{first[:80]}`"
    path = tool_input.get("path") or tool_input.get("file_path") or tool_input.get("pattern")
    verbs = {
        "read": "reading",
        "write": "writing",
        "edit": "editing",
        "glob": "listing",
        "grep": "searching",
    }
    return f"{verbs.get(name, name)} {path}" if path else name
