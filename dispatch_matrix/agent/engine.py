"""The agent loop: ask Claude, run the tools it asks for (each past the permission policy),
give it the results, until it answers. Every model reply and every batch of tool results is
in the store before the next step, so a restart continues from the last completed step.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

import anthropic
from anthropic.types import Message, ModelInfo

from dispatch_matrix.agent import catalogue, model, usage
from dispatch_matrix.agent.calls import ToolCalls
from dispatch_matrix.agent.compaction import Compaction, Compactor
from dispatch_matrix.agent.errors import (
    AgentFailure,
    AnswerCut,
    BudgetSpent,
    ContextTooLong,
    ModelDeclined,
    RequestTooLarge,
)
from dispatch_matrix.agent.memory import Memory, MemoryTool
from dispatch_matrix.agent.model import Step, Turn
from dispatch_matrix.agent.ports import TaskIO
from dispatch_matrix.agent.settings import AgentSection
from dispatch_matrix.agent.transcript import (
    CANCELLED_RESULT,
    FAILED_RESULT,
    NOT_RUN_RESULT,
    RETRIED_AFTER_CANCEL_NOTE,
    RETRIED_NOTE,
    Gauge,
    Repair,
    Sizes,
    block_dict,
    cache_control,
    cancelled_here,
    error_result,
    estimate_tokens,
    first_turn,
    interrupted_results,
    real_input,
    request_messages,
    text_of,
)
from dispatch_matrix.connectors import web
from dispatch_matrix.core import logs
from dispatch_matrix.core.clock import Clock, SystemClock
from dispatch_matrix.permissions.policy import Policy
from dispatch_matrix.store import LedgerQueries, Task
from dispatch_matrix.toolbox.base import ToolContext
from dispatch_matrix.toolbox.registry import ToolRegistry

log = logs.get(__name__)

__all__ = ["Agent", "AgentFailure", "Request"]


@dataclass(frozen=True)
class Request:
    """What one request sends besides the model and its settings, and its size estimate."""

    system: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    estimate: int
    repair: Repair = Repair()


@dataclass(frozen=True)
class ModelPlan:
    """What a model's requests carry besides the conversation: fixed by the settings and
    the model, so made when the model is chosen, not at every request."""

    model: str
    thinking: dict[str, object] | None
    max_tokens: int

    @classmethod
    def of(cls, model: str, settings: AgentSection) -> ModelPlan:
        """The plan for `model` under `settings` (thinking adds its budget to the output cap)."""
        thinking = catalogue.thinking_for(model, settings.thinking_budget)
        extra = settings.thinking_budget if thinking else 0
        return cls(model, thinking, settings.max_tokens + extra)


class Agent:
    """Answers tasks with Claude and the local tools, keeping the conversation in the store.

    With a `memory`, its `memory` tool is added to `tools` and the file travels in every
    request's system prompt. Each turn is stamped with `clock`'s time in the owner's `zone`.
    """

    def __init__(
        self,
        db: LedgerQueries,
        client: anthropic.AsyncAnthropic,
        *,
        settings: AgentSection,
        system: str,
        tools: ToolRegistry,
        policy: Policy,
        context: ToolContext,
        memory: Memory | None = None,
        clock: Clock | None = None,
        zone: tzinfo = UTC,
        web_tools: web.WebTools | None = None,
    ) -> None:
        # The daemon's clock seam and the owner's zone, for each turn's stamp.
        self._clock = clock or SystemClock()
        self._zone = zone
        self._db = db
        self._client = client
        # The [agent] section as loaded: the one home of every knob and its default.
        self.settings = settings
        self.default_model = settings.model
        # What the settings fix for every request, worked out once.
        self._compact_above = settings.compact_above
        self._ttl = (settings.prefix_ttl, settings.tail_ttl)
        # `!model` is the only writer of the stored choice: it is read here and kept.
        self._plan = ModelPlan.of(db.get_meta("model") or settings.model, settings)
        self._system = system
        self._tools = tools
        self._calls = ToolCalls(db, policy, tools, context)
        self.memory = memory
        # The API's server tools (web search, fetch), offered after ours.
        self.web_tools = web_tools
        if memory is not None and tools.get(MemoryTool.name) is None:
            tools.add(MemoryTool(memory))
        self._compactor = Compactor(db, client, settings)
        # The tools list as the registry last gave it, and the registry's version then: the
        # same list (same bytes) goes with every request until the registry changes.
        self._tool_list: tuple[int, list[dict[str, Any]]] | None = None
        self._gauge = Gauge()
        self._sizes = Sizes()
        # The last repair logged, so a stored row that needs one is logged once, not at
        # every request of the conversation.
        self._repair_logged: tuple[int, Repair] | None = None

    # -- what the owner may change or ask for without the model ------------------------------

    def current_model(self) -> str:
        """The model for the next task: the one set with `!model`, else the config's."""
        return self._plan.model

    def set_model(self, name: str | None) -> None:
        """Use `name` from the next task on; None goes back to the config's model."""
        self._db.set_meta("model", name or "")
        self._plan = ModelPlan.of(name or self.default_model, self.settings)

    async def model_exists(self, name: str) -> bool | None:
        """Whether the API knows the model; None when it cannot be asked now."""
        return await model.exists(self._client, name)

    async def reachable(self) -> bool:
        """Whether the API answers at all right now (a free read; the worker's probe)."""
        return await model.reachable(self._client)

    async def models(self) -> list[ModelInfo] | None:
        """The models the API offers (`!model`); None when it cannot be asked now."""
        return await catalogue.available(self._client)

    async def model_status(self, name: str | None = None) -> catalogue.ModelStatus:
        """Whether a model (default: the current one) is active, deprecated or retired."""
        return await catalogue.status(self._client, name or self.current_model())

    async def compact_now(self) -> Compaction | None:
        """Compact the open conversation now (`!compact`); None if it is too short."""
        return await self._compact(self._db.current_conversation(), None, self._plan.model)

    # -- the loop ----------------------------------------------------------------------------

    async def answer(self, task: Task, io: TaskIO, now: datetime | None = None) -> str:
        """Run the task to the model's final answer and return its text."""
        conversation = self._db.current_conversation()
        # Each step's count is committed with the write before it (one sync, not two).
        with self._db.tx():
            done = self._resume(task, conversation, now)
            steps: int | None = None if done is not None else self._db.count_step(task.id)
        if done is not None:
            return done
        # One model per task: the cached prefix and any thinking signatures belong to it.
        plan = self._plan
        name = plan.model
        started = time.monotonic()
        turn = Turn()
        while True:
            if steps is None:
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
            reply, counts = await self._ask(task, conversation, steps, plan, turn)
            step, steps = steps, None
            content = [block_dict(block) for block in reply.content]
            limit = self.settings.max_continuations
            verdict = model.judge(reply.stop_reason, content, turn.continued, limit)
            with self._db.tx():
                # A reply's usage and its message are one transaction.
                self._db.record_usage(task.id, name, counts)
                if verdict.keep:
                    self._db.append_message(conversation, task.id, "assistant", verdict.keep)
                if verdict.step is Step.RESUME:
                    steps = self._db.count_step(task.id)
            if verdict.step is Step.ANSWER:
                if turn.parts:
                    return model.joined([*turn.parts, model.raw_text(content)])
                return self._final(task)
            if verdict.step is Step.TOOLS:
                turn.parts.clear()
                turn.continued = 0
                uses = [b for b in content if b.get("type") == "tool_use"]
                results = await self._run_calls(uses, io, step, task, conversation)
                with self._db.tx():
                    self._db.append_message(conversation, task.id, "user", results)
                    steps = self._db.count_step(task.id)
            elif verdict.step is not Step.RESUME:
                await self._cut(task, conversation, name, reply.stop_reason, verdict, turn)

    async def _run_calls(
        self, uses: list[dict[str, Any]], io: TaskIO, step: int, task: Task, conversation: int
    ) -> list[dict[str, Any]]:
        """The results of one reply's tool calls, run in turn. A `!cancel` or a bug among
        them still answers every call in the store (what ran, what was stopped, what never
        started), so the transcript stays one the API accepts; a restart leaves them to
        `_resume`, which says so."""
        results: list[dict[str, Any]] = []
        try:
            for use in uses:
                results.append(await self._calls.run(use, io, step, task.id))
        except asyncio.CancelledError:
            if io.cancelled():
                stopped = [
                    error_result(use["id"], NOT_RUN_RESULT if index else CANCELLED_RESULT)
                    for index, use in enumerate(uses[len(results) :])
                ]
                self._db.append_message(conversation, task.id, "user", [*results, *stopped])
                log.info("agent.tool_calls_cancelled", task=task.short_id, calls=len(stopped))
            raise
        except Exception:
            # A bug fails the task (the worker says so); the calls still get their answer.
            failed = [error_result(use["id"], FAILED_RESULT) for use in uses[len(results) :]]
            self._db.append_message(conversation, task.id, "user", [*results, *failed])
            raise
        return results

    def _resume(self, task: Task, conversation: int, now: datetime | None) -> str | None:
        """Start the task's turn, or pick it up after a restart; the answer if it had one."""
        mine = self._db.task_messages(task.id)
        local = now or self._clock.now().astimezone(self._zone)
        if not mine:
            self._db.append_message(conversation, task.id, "user", first_turn(task, local))
            return None
        if not self._at_tail(task, conversation):
            # Run again (`!retry`) after other turns, or in a fresh conversation: its earlier
            # turn stays where it is (calls left open there are answered when requests are
            # built) and the task is asked afresh, at the end.
            note = {"type": "text", "text": RETRIED_NOTE.format(task=task.short_id)}
            self._db.append_message(conversation, task.id, "user", [note, *first_turn(task, local)])
            log.info("agent.task_asked_again", task=task.short_id)
            return None
        last = mine[-1]
        if cancelled_here(last):
            note = {"type": "text", "text": RETRIED_AFTER_CANCEL_NOTE}
            self._db.append_message(conversation, task.id, "user", [note])
            log.info("agent.task_continued", task=task.short_id)
            return None
        if last["role"] == "assistant":
            repair = interrupted_results(last)
            if not repair and web.paused(last["content"]):
                return None  # stopped inside a paused server-tool turn: it goes on
            if not repair:
                return self._final(task)
            # Tool calls were running when we stopped: the model hears so, and decides.
            self._db.append_message(conversation, task.id, "user", repair)
            log.warning("agent.tool_calls_interrupted", task=task.short_id, calls=len(repair))
        return None

    def _at_tail(self, task: Task, conversation: int) -> bool:
        """Whether the open conversation ends with the task's own last message."""
        summary = self._db.latest_summary(conversation)
        rows = self._db.transcript_rows(conversation, summary.covers_up_to if summary else 0)
        return bool(rows) and rows[-1].task_id == task.id

    async def _cut(
        self,
        task: Task,
        conversation: int,
        name: str,
        stop: str | None,
        verdict: model.NextMove,
        turn: Turn,
    ) -> None:
        """A reply cut off (output limit, full context), or declined: ask for the rest, or
        give up and say why."""
        if verdict.step is Step.DECLINED:
            log.warning("agent.declined", task=task.short_id)
            self._ended(task, conversation, "the model declined it")
            raise ModelDeclined.told()
        turn.parts.append(model.raw_text(verdict.keep))
        log.warning(
            "agent.reply_cut",
            task=task.short_id,
            stop=stop,
            continued=turn.continued,
            dropped_calls=verdict.dropped_calls,
        )
        full = verdict.step is Step.COMPACT
        if full and await self._compact(conversation, task.id, name, relaxed=True) is None:
            verdict = model.NextMove(Step.CUT, verdict.keep)
        if verdict.step is Step.CUT:
            why = (
                "the context window was full"
                if stop == "model_context_window_exceeded"
                else f"of the output limit ([agent] max_tokens = {self.settings.max_tokens})"
            )
            self._ended(task, conversation, f"its answer was cut off because {why}")
            raise AnswerCut.because(why, turn.continued, model.joined(turn.parts))
        assert verdict.note is not None
        turn.continued += 1
        self._db.append_message(conversation, task.id, "user", verdict.note)

    def _ended(self, task: Task, conversation: int, why: str) -> None:
        note = {"type": "text", "text": model.ENDED_NOTE.format(why=why)}
        self._db.append_message(conversation, task.id, "user", [note])

    async def _ask(
        self, task: Task, conversation: int, step: int, plan: ModelPlan, turn: Turn | None = None
    ) -> tuple[Message, dict[str, int]]:
        """One step's request, compacting first when it would fill the context. A refusal
        as too long compacts harder and retries exactly once; one as too large (413) also
        leaves attachments out and trims tool results harder, for the rest of the task."""
        turn = turn or Turn()
        name = plan.model
        request = self._request(conversation, lean=turn.lean)
        expected = self._gauge.expect(request.estimate)
        if expected > self._compact_above:
            log.info("agent.context_full", task=task.short_id, expected=expected)
            if await self._compact(conversation, task.id, name) is not None:
                request = self._request(conversation, lean=turn.lean)
        try:
            return await self._send(task, step, plan, request)
        except ContextTooLong as err:
            too_large = isinstance(err, RequestTooLarge)
            log.warning(
                "agent.context_too_long",
                task=task.short_id,
                error=err.message,
                too_large=too_large,
            )
            compacted = await self._compact(conversation, task.id, name, relaxed=True)
            if compacted is None and (not too_large or turn.lean):
                raise type(err)(
                    f"{err.message} — and nothing older is left to compact; send `!new` to "
                    "start a fresh conversation"
                ) from err
            turn.lean = turn.lean or too_large
            retry = self._request(conversation, lean=turn.lean)
            try:
                return await self._send(task, step, plan, retry)
            except ContextTooLong as again:
                shed = "leaving attachments out and compacting" if too_large else "compacting"
                raise type(again)(
                    f"{again.message} — even after {shed}; send `!new` to start a fresh "
                    "conversation"
                ) from again

    def _request(self, conversation: int, lean: bool = False) -> Request:
        """The request for the conversation as it stands in the store; `lean` leaves images
        and documents out and trims tool results to a quarter of the usual length."""
        summary = self._db.latest_summary(conversation)
        rows = self._db.transcript_rows(conversation, summary.covers_up_to if summary else 0)
        trim_at = self.settings.max_tool_result_chars
        messages, repair = request_messages(
            [(row.id, row.message()) for row in rows],
            summary.text if summary else None,
            trim_at // 4 if lean else trim_at,
            lean=lean,
            ttl=self._ttl,
        )
        stable = cache_control(self._ttl[0])
        system = [{"type": "text", "text": self._system, "cache_control": stable}]
        if self.memory is not None:
            # After the stable part, with its own breakpoint: a memory edit re-caches only
            # from here on.
            memory = self.memory.system_block()
            system.append({"type": "text", "text": memory, "cache_control": dict(stable)})
        if self._tool_list is None or self._tool_list[0] != self._tools.version:
            self._tool_list = (self._tools.version, self._tools.definitions())
        tools = self._tool_list[1]
        if self.web_tools is not None and rows:
            # The web's use limit is per task: what the running (last) task used so far.
            task_rows = [row.message() for row in rows if row.task_id == rows[-1].task_id]
            tools = [*tools, *self.web_tools.definitions(web.uses(task_rows))]
        # Estimated from the blocks of the last request: each block once.
        size = self._sizes.messages(messages)
        size += estimate_tokens({"system": system, "tools": tools})
        if repair and self._repair_logged != (conversation, repair):
            self._repair_logged = (conversation, repair)
            log.warning(
                "agent.transcript_repaired",
                conversation=conversation,
                answered=list(repair.answered),
                dropped=list(repair.dropped),
                moved=repair.moved,
            )
        return Request(system, messages, tools, size, repair)

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

    async def _send(
        self, task: Task, step: int, plan: ModelPlan, request: Request
    ) -> tuple[Message, dict[str, int]]:
        """One request; the reply and its token counts, for the caller to record with the
        reply's message."""
        self._check_budget()
        name = plan.model
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
            max_tokens=plan.max_tokens,
            system=request.system,
            messages=request.messages,
            tools=request.tools,
            thinking=plan.thinking,
        )
        counts = model.usage_counts(reply)
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
        return reply, counts

    def _final(self, task: Task) -> str:
        """The answer: the text of the model's last turn, and the sources it cited."""
        mine = self._db.task_messages(task.id)
        since = max((i for i, m in enumerate(mine) if m["role"] == "user"), default=-1)
        content = [b for m in mine[since + 1 :] for b in m["content"]]
        text = text_of(content) or "(done; the model gave no text)"
        if not may_cite(content):
            return text
        return web.with_sources(text, web.sources(content))


def may_cite(content: list[dict[str, Any]]) -> bool:
    """Whether an answer's blocks could name a source (a citation, or a result of the web);
    a plain answer, most of them, is not searched for sources."""
    return any(
        block.get("citations") or block.get("type") in web.RESULT_BLOCKS for block in content
    )
