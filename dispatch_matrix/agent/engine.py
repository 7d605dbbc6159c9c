"""The agent loop: ask Claude, run the tools it asks for (each past the permission policy),
give it the results, until it answers. Every model reply and every batch of tool results is
in the store before the next step, so a restart continues from the last completed step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import anthropic

from .. import logs
from ..config import AgentSection
from ..errors import ModelError
from ..store import Database, Task
from ..tools import Policy, ToolContext, ToolRegistry, ToolResult
from . import model, usage
from .compaction import Compaction, Compactor
from .context import Gauge, estimate_tokens, real_input
from .inbox import first_turn
from .memory import Memory, MemoryTool
from .model import BudgetSpent, ContextTooLong
from .ports import Approval, TaskIO
from .prompt import turn_context
from .transcript import (
    CACHE,
    block_dict,
    interrupted_results,
    pending_tool_uses,
    request_messages,
    text_of,
)

log = logs.get(__name__)


class AgentFailure(ModelError):
    """The task cannot be finished; the message says why, for the owner."""


@dataclass(frozen=True)
class Request:
    """What one request sends besides the model and its settings, and its size estimate."""

    system: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    estimate: int


class Agent:
    """Answers tasks with Claude and the local tools, keeping the conversation in the store.

    With a `memory`, its `memory` tool is added to `tools` and the file travels in every
    request's system prompt.
    """

    def __init__(
        self,
        db: Database,
        client: anthropic.AsyncAnthropic,
        *,
        settings: AgentSection,
        system: str,
        tools: ToolRegistry,
        policy: Policy,
        context: ToolContext,
        memory: Memory | None = None,
    ) -> None:
        self._db = db
        self._client = client
        # The [agent] section as loaded: the one home of every knob and its default.
        self.settings = settings
        self.default_model = settings.model
        self._system = system
        self._tools = tools
        self._policy = policy
        self._context = context
        self.memory = memory
        if memory is not None and tools.get(MemoryTool.name) is None:
            tools.add(MemoryTool(memory))
        self._compactor = Compactor(db, client, settings)
        self._gauge = Gauge()

    # -- what the owner may change or ask for without the model ------------------------------

    def current_model(self) -> str:
        """The model for the next task: the one set with `!model`, else the config's."""
        return self._db.get_meta("model") or self.default_model

    def set_model(self, name: str | None) -> None:
        """Use `name` from the next task on; None goes back to the config's model."""
        self._db.set_meta("model", name or "")

    async def model_exists(self, name: str) -> bool | None:
        """Whether the API knows the model; None when it cannot be asked now."""
        return await model.exists(self._client, name)

    async def compact_now(self) -> Compaction | None:
        """Compact the open conversation now (`!compact`); None if it is too short."""
        return await self._compact(self._db.current_conversation(), None, self.current_model())

    # -- the loop ----------------------------------------------------------------------------

    async def answer(self, task: Task, io: TaskIO, now: datetime | None = None) -> str:
        """Run the task to the model's final answer and return its text."""
        conversation = self._db.current_conversation()
        done = self._resume(task, conversation, now)
        if done is not None:
            return done
        # One model per task: the cached prefix and any thinking signatures belong to it.
        name = self.current_model()
        started = time.monotonic()
        while True:
            steps = self._db.count_step(task.id)
            if steps > self.settings.max_steps:
                raise AgentFailure(
                    f"stopped after {self.settings.max_steps} steps without finishing "
                    "(the step budget; raise [agent] max_steps if this task needs more)"
                )
            if time.monotonic() - started > self.settings.max_task_seconds:
                raise AgentFailure(
                    f"stopped after {self.settings.max_task_seconds / 60:.0f} minutes without "
                    "finishing (the time budget, [agent] max_task_seconds)"
                )
            reply = await self._ask(task, conversation, steps, name)
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
            self._db.append_message(conversation, task.id, "user", first_turn(task, stamp))
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

    async def _ask(self, task: Task, conversation: int, step: int, name: str) -> Any:
        """One step's request, compacting first when it would fill the context; a refusal
        as too long compacts harder and retries exactly once."""
        request = self._request(conversation)
        expected = self._gauge.expect(request.estimate)
        if expected > self.settings.compact_above:
            log.info("agent.context_full", task=task.short_id, expected=expected)
            if await self._compact(conversation, task.id, name) is not None:
                request = self._request(conversation)
        try:
            return await self._send(task, step, name, request)
        except ContextTooLong as err:
            log.warning("agent.context_too_long", task=task.short_id, error=err.message)
            if await self._compact(conversation, task.id, name, relaxed=True) is None:
                raise ContextTooLong(
                    f"{err.message} — and nothing older is left to compact; send `!new` to "
                    "start a fresh conversation"
                ) from err
            return await self._send(task, step, name, self._request(conversation))

    def _request(self, conversation: int) -> Request:
        """The request for the conversation as it stands in the store."""
        summary = self._db.latest_summary(conversation)
        rows = self._db.transcript_rows(conversation, summary.covers_up_to if summary else 0)
        messages = request_messages(
            [(row.id, row.message()) for row in rows],
            summary.text if summary else None,
            self.settings.max_tool_result_chars,
        )
        system = [{"type": "text", "text": self._system, "cache_control": dict(CACHE)}]
        if self.memory is not None:
            # After the stable part, with its own breakpoint: a memory edit re-caches only
            # from here on.
            memory = self.memory.system_block()
            system.append({"type": "text", "text": memory, "cache_control": dict(CACHE)})
        tools = self._tools.definitions()
        size = estimate_tokens({"system": system, "tools": tools, "messages": messages})
        return Request(system, messages, tools, size)

    async def _compact(
        self, conversation: int, task_id: int | None, name: str, *, relaxed: bool = False
    ) -> Compaction | None:
        self._check_budget()
        return await self._compactor.compact(conversation, task_id, name, relaxed=relaxed)

    def _check_budget(self) -> None:
        """Refuse a request once today's cost reached the daily budget."""
        budget = self.settings.daily_budget_usd
        if budget <= 0:
            return
        spent = usage.today(self._db, datetime.now(UTC)).cost_usd
        if spent >= budget:
            raise BudgetSpent(spent, budget)

    async def _send(self, task: Task, step: int, name: str, request: Request) -> Any:
        self._check_budget()
        max_tokens, thinking = self.settings.max_tokens, None
        if self.settings.thinking_budget > 0:
            budget = self.settings.thinking_budget
            thinking = {"type": "enabled", "budget_tokens": budget}
            max_tokens += budget
        log.info(
            "agent.request",
            task=task.short_id,
            step=step,
            model=name,
            messages=len(request.messages),
            estimate=request.estimate,
        )
        reply = await model.request(
            self._client,
            model=name,
            max_tokens=max_tokens,
            system=request.system,
            messages=request.messages,
            tools=request.tools,
            thinking=thinking,
        )
        counts = model.usage_counts(reply)
        self._db.record_usage(task.id, name, counts)
        self._gauge.measured(request.estimate, real_input(counts))
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

    def _learn(self, name: str, tool_input: dict[str, Any]) -> None:
        """The owner said "always": allow exactly this call from now on (kept in the store,
        never written into the config file, which stays the owner's to edit)."""
        rule = self._policy.learn(name, tool_input)
        if rule is not None:
            self._db.add_learned_rule(rule)
            log.info("policy.learned", rule=rule)

    async def _run_tool(self, use: dict[str, Any], io: TaskIO, step: int) -> dict[str, Any]:
        name, tool_input = use["name"], use.get("input") or {}
        decision = self._policy.decide(name, tool_input)
        log.info("tool.decision", tool=name, verdict=decision.verdict, rule=decision.rule)
        if decision.verdict == "deny":
            result = ToolResult.error(f"Not allowed: {decision.reason}. Do not try another way.")
            return result.as_block(use["id"])
        if decision.verdict == "ask":
            approval = await io.ask(decision)
            if not approval.approved:
                result = ToolResult.error(
                    f"The owner did not approve this ({decision.subject}). Do not do it; "
                    "continue without it or explain what you need."
                )
                return result.as_block(use["id"])
            if approval is Approval.ALWAYS:
                self._learn(name, tool_input)
        await io.progress(f"step {step}: {_describe(name, tool_input)}")
        # The shared context stays as built; each call gets its own reporter and hook.
        context = replace(self._context, on_process=io.process_started, reporter=io)
        result = await self._tools.run(name, tool_input, context)
        log.info("tool.result", tool=name, error=result.is_error)
        return _without_known_secrets(result.as_block(use["id"]))


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
    if name == "memory":
        return f"memory: {tool_input.get('action', 'view')}"
    return f"{verbs.get(name, name)} {path}" if path else name


def _without_known_secrets(block: dict[str, Any]) -> dict[str, Any]:
    """A tool result without the daemon's own secrets (its password, token, API key, the
    environment's): a command's output that holds one never reaches the model. Shapes are
    left alone: a key in the owner's file may be what the task is about."""
    for part in block["content"]:
        if part.get("type") == "text":
            part["text"] = logs.REDACTOR.known(part["text"])
    return block
