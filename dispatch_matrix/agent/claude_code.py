"""The second engine: Claude Code, through its Agent SDK, with the owner's own Claude Code
login (or an API key). The queue sees the same `answer(task, io)` as the API engine's.

One Claude Code session per conversation, its id in the ledger, resumed for each task (the
CLI runs for one task at a time: nothing of it outlives a turn, so a crash leaves nothing to
reconnect). Every tool call passes our policy and, when it must, the owner's answer in the
room (`can_use_tool`, forced for every call by a PreToolUse hook that answers "ask"); the
shell is ours, inside our wall, offered through an in-process MCP server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKClient,
    ClaudeSDKError,
    HookContext,
    HookInput,
    HookJSONOutput,
    HookMatcher,
    PermissionResultAllow,
    PermissionResultDeny,
    ResultMessage,
    SdkMcpTool,
    SystemMessage,
    TextBlock,
    ToolPermissionContext,
    create_sdk_mcp_server,
)

from dispatch_matrix.agent import catalogue
from dispatch_matrix.agent.calls import ToolCalls, describe, without_known_secrets
from dispatch_matrix.agent.claude_code_map import (
    BUILT_IN_TOOLS,
    OUR_SERVER,
    OUR_TOOLS,
    Billing,
    billing_of,
    failure_kind,
    mcp_result,
    policy_name,
    turn_for,
    usage_counts,
    user_message,
)
from dispatch_matrix.agent.errors import AgentFailure, ModelOutage, ModelUnreachable
from dispatch_matrix.agent.ports import TaskIO
from dispatch_matrix.agent.settings import AgentSection
from dispatch_matrix.agent.tables import EngineSessions
from dispatch_matrix.agent.transcript import first_turn
from dispatch_matrix.core import logs
from dispatch_matrix.core.clock import Clock, SystemClock
from dispatch_matrix.core.errors import ToolError
from dispatch_matrix.permissions.policy import Policy
from dispatch_matrix.store import LedgerQueries, Task
from dispatch_matrix.toolbox.base import ToolContext
from dispatch_matrix.toolbox.paths import resolve, resolve_for_write
from dispatch_matrix.toolbox.registry import ToolRegistry

if TYPE_CHECKING:
    from anthropic.types import ModelInfo

    from dispatch_matrix.agent.memory import Memory

log = logs.get(__name__)

__all__ = ["ClaudeCodeAgent"]


class ClaudeCodeAgent:
    """Answers tasks with Claude Code, keeping its session id in the store."""

    def __init__(
        self,
        db: LedgerQueries,
        *,
        settings: AgentSection,
        system: str,
        tools: ToolRegistry,
        policy: Policy,
        context: ToolContext,
        env: Mapping[str, str],
        cli_path: str | None = None,
        clock: Clock | None = None,
        zone: tzinfo = UTC,
    ) -> None:
        self._db = db
        self._sessions = EngineSessions(db)
        self.settings = settings
        self.default_model = settings.model
        # Claude Code keeps its own context; `!memory` has nothing of ours to show.
        self.memory: Memory | None = None
        self._system = system
        self._tools = tools
        self._context = context
        self._calls = ToolCalls(db, policy, tools, context)
        # What the CLI's environment adds to the daemon's (the stand-in's URL, a key).
        self._env = dict(env)
        self._cli_path = cli_path
        # The daemon's clock seam and the owner's zone, for each turn's stamp.
        self._clock = clock or SystemClock()
        self._zone = zone
        # `!model` is the only writer of the stored choice: it is read here and kept.
        self._model = db.get_meta("model") or settings.model
        # The task running now: the permission callback and our tools report to its room.
        self._io: TaskIO | None = None
        self._task_id: int | None = None
        self._steps = 0

    # -- what the owner may change or ask for without the model ------------------------------

    def current_model(self) -> str:
        """The model for the next task: the one set with `!model`, else the config's."""
        return self._model

    def set_model(self, name: str | None) -> None:
        """Use `name` from the next task on; None goes back to the config's model."""
        self._db.set_meta("model", name or "")
        self._model = name or self.default_model

    async def model_exists(self, name: str) -> bool | None:
        """Unknown: a plan login cannot list models, so Claude Code is told and judges."""
        return None

    async def reachable(self) -> bool:
        """Claude Code retries on its own; the worker's next task is the probe."""
        return True

    async def models(self) -> list[ModelInfo] | None:
        """Not listed here (see `model_exists`)."""
        return None

    async def model_status(self, name: str | None = None) -> catalogue.ModelStatus:
        """Unknown: Claude Code reports a model it cannot use when a task asks for it."""
        return catalogue.ModelStatus(name or self.current_model(), "unknown")

    async def compact_now(self) -> bool | None:
        """Ask Claude Code to compact the open conversation's session (`!compact`); None
        when there is no session yet."""
        stored = self._sessions.engine_session(self._db.current_conversation())
        if stored is None:
            return None
        billing: Billing = "plan"
        try:
            # Not `client_composed`: this one is meant as Claude Code's own slash command.
            async with ClaudeSDKClient(self._options(stored.session_id)) as client:
                await client.query("/compact")
                async for message in client.receive_response():
                    if isinstance(message, SystemMessage) and message.subtype == "init":
                        billing = billing_of(message.data.get("apiKeySource"))
                    elif isinstance(message, ResultMessage):
                        self._record(None, message, billing)
        except ClaudeSDKError as err:
            raise ModelUnreachable(f"Claude Code could not compact ({err})") from err
        log.info("claude_code.compacted", session=stored.session_id[:8])
        return True

    # -- the task ------------------------------------------------------------------------------

    async def answer(self, task: Task, io: TaskIO, now: datetime | None = None) -> str:
        """Run the task as one turn of the conversation's Claude Code session; its answer."""
        conversation = self._db.current_conversation()
        stored = self._sessions.engine_session(conversation)
        local = now or self._clock.now().astimezone(self._zone)
        turn = turn_for(
            task.id, first_turn(task, local), stored.running_task if stored is not None else None
        )
        if turn.again:
            log.warning("claude_code.task_taken_again", task=task.short_id)
        self._io, self._task_id, self._steps = io, task.id, 0
        resume = stored.session_id if stored else None
        try:
            async with asyncio.timeout(self.settings.max_task_seconds):
                try:
                    return await self._turn(task, conversation, resume, turn.blocks)
                except _LostSession:
                    # Claude Code no longer has the session (its files are gone): a fresh
                    # one, told so, rather than every task failing from now on.
                    log.warning("claude_code.session_lost", session=(resume or "")[:8])
                    note = {"type": "text", "text": SESSION_LOST_NOTE}
                    return await self._turn(task, conversation, None, [note, *turn.blocks])
        except TimeoutError:
            raise AgentFailure(
                f"stopped after {self.settings.max_task_seconds / 60:.0f} minutes without "
                "finishing (the time budget, [agent] max_task_seconds)"
            ) from None
        finally:
            self._io, self._task_id = None, None

    async def _turn(
        self, task: Task, conversation: int, resume: str | None, blocks: list[dict[str, Any]]
    ) -> str:
        try:
            return await self._run(task, conversation, resume, blocks)
        except ClaudeSDKError as err:
            kind = failure_kind(
                type(err).__name__, str(err), getattr(err, "terminal_reason", None), bool(resume)
            )
            log.warning("claude_code.failed", kind=kind, error=type(err).__name__)
            if kind == "lost_session":
                raise _LostSession from err
            if kind == "outage":
                raise ModelOutage(f"Claude Code could not reach the model ({err})") from err
            if kind == "no_cli":
                raise AgentFailure(
                    "Claude Code's CLI was not found (reinstall with the claude-code extra; "
                    "`dispatch-matrix doctor` checks it)"
                ) from err
            raise AgentFailure(f"Claude Code failed: {str(err)[:300]}") from err

    async def _run(
        self, task: Task, conversation: int, resume: str | None, blocks: list[dict[str, Any]]
    ) -> str:
        client = ClaudeSDKClient(self._options(resume))
        await client.connect()
        billing: Billing = "plan"
        texts: list[str] = []
        model = self.current_model()
        try:
            await client.query(_one(user_message(blocks)))
            async for message in client.receive_response():
                if isinstance(message, SystemMessage) and message.subtype == "init":
                    billing = billing_of(message.data.get("apiKeySource"))
                    session = str(message.data.get("session_id", ""))
                    if session:
                        # Before any tool runs: a crash from here on resumes this session
                        # and is told that this task's turn was under way.
                        self._sessions.save_engine_session(conversation, session, task.id)
                elif isinstance(message, AssistantMessage) and message.parent_tool_use_id is None:
                    model = message.model or model
                    said = [b.text for b in message.content if isinstance(b, TextBlock)]
                    if said:
                        texts = said
                elif isinstance(message, ResultMessage):
                    with self._db.tx():
                        self._record(task.id, message, billing, model)
                        self._sessions.save_engine_session(conversation, message.session_id, None)
                    if message.is_error and "No conversation found" in (message.result or ""):
                        raise _LostSession
                    if message.is_error:
                        raise AgentFailure(_failure(message))
                    return (message.result or "\n\n".join(texts)).strip() or "(done)"
        except asyncio.CancelledError:
            # `!cancel` or shutdown: stop the turn where it is (its session keeps what it
            # did); our shell's processes die through the worker's process groups.
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wait_for(client.interrupt(), 5))
            stored = self._sessions.engine_session(conversation)
            if stored is not None and self._io is not None and self._io.cancelled():
                # The owner stopped it: a `!retry` later is a new attempt, not a crash's.
                self._sessions.save_engine_session(conversation, stored.session_id, None)
            raise
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(client.disconnect())
        raise AgentFailure("Claude Code ended without a result")

    def _record(
        self, task_id: int | None, result: ResultMessage, billing: Billing, model: str = ""
    ) -> None:
        counts = usage_counts(result.usage)
        if counts:
            self._db.record_usage(task_id, model or self.current_model(), counts, billing)
        log.info(
            "claude_code.result",
            task=task_id,
            turns=result.num_turns,
            subtype=result.subtype,
            billing=billing,
            input_tokens=counts.get("input_tokens"),
            output_tokens=counts.get("output_tokens"),
            cache_read=counts.get("cache_read_input_tokens"),
            cache_write=counts.get("cache_creation_input_tokens"),
            duration_ms=result.duration_ms,
        )

    # -- permissions and our tools ------------------------------------------------------------

    async def _can_use_tool(
        self, name: str, tool_input: dict[str, Any], _context: ToolPermissionContext
    ) -> PermissionResultAllow | PermissionResultDeny:
        """Every tool call Claude Code wants: our policy, then the owner, then no."""
        io = self._io
        if io is None:
            return PermissionResultDeny(message="No task is running.", interrupt=True)
        ours = policy_name(name)
        outside = confinement_refusal(ours, tool_input, self._context)
        if outside is not None:
            log.info("tool.confined", tool=ours, why=outside)
            return PermissionResultDeny(message=f"Not allowed: {outside}.")
        refusal = await self._calls.permit(ours, tool_input, io)
        if refusal is not None:
            return PermissionResultDeny(message=refusal)
        self._steps += 1
        await io.progress(f"step {self._steps}: {describe(ours, tool_input)}")
        return PermissionResultAllow(updated_input=tool_input)

    def _our_tools(self) -> list[SdkMcpTool[Any]]:
        """Our tools Claude Code reaches through the in-process server: the sandboxed shell,
        grep, send_file, schedule, and every MCP server's tools as our hub runs them."""
        offered: list[SdkMcpTool[Any]] = []
        for definition in self._tools.definitions():
            name = str(definition["name"])
            if name in OUR_TOOLS or name.startswith("mcp__"):
                offered.append(
                    SdkMcpTool(
                        name=name,
                        description=str(definition.get("description", "")),
                        input_schema=dict(definition.get("input_schema") or {"type": "object"}),
                        handler=self._handler(name),
                    )
                )
        return offered

    def _handler(self, name: str) -> Callable[[dict[str, Any]], Any]:
        async def run(arguments: dict[str, Any]) -> dict[str, Any]:
            io = self._io
            if io is None:
                return mcp_result([{"type": "text", "text": "No task is running."}], True)
            context = replace(
                self._context, on_process=io.process_started, reporter=io, task_id=self._task_id
            )
            result = await self._tools.run(name, arguments, context)
            log.info("tool.result", tool=name, error=result.is_error)
            block = without_known_secrets(result.as_block(name))
            return mcp_result(block["content"], result.is_error)

        return run

    def _options(self, resume: str | None) -> ClaudeAgentOptions:
        return claude_options(
            workdir=str(self._context.workdir),
            roots=[str(root) for root in self._context.allowed_roots],
            system=self._system,
            model=self.current_model(),
            resume=resume,
            env=self._env,
            our_server=create_sdk_mcp_server(OUR_SERVER, tools=self._our_tools()),
            can_use_tool=self._can_use_tool,
            max_turns=self.settings.max_steps,
            cli_path=self._cli_path,
        )


def claude_options(
    *,
    workdir: str,
    roots: list[str],
    system: str,
    model: str,
    resume: str | None,
    env: Mapping[str, str],
    our_server: Any,
    can_use_tool: Any,
    max_turns: int,
    cli_path: str | None,
) -> ClaudeAgentOptions:
    """Claude Code's options, chosen so that nothing runs without our policy's word:

    - `setting_sources=[]`: no settings file (the owner's ~/.claude, a project's .claude)
      adds allow rules, hooks, MCP servers or an API key helper; `strict_mcp_config` the
      same for MCP servers;
    - `permission_mode="default"` and no `allowed_tools`: nothing is pre-approved;
    - a PreToolUse hook answering "ask" for every tool: Claude Code's own defaults (reads in
      the working folder) would let some calls through without a prompt, so without it
      `can_use_tool` would not hear of them;
    - `tools`: only the built-ins listed in the mapping, and our own through `our_server`.
    """
    return ClaudeAgentOptions(
        tools=list(BUILT_IN_TOOLS),
        allowed_tools=[],
        permission_mode="default",
        setting_sources=[],
        strict_mcp_config=True,
        mcp_servers={OUR_SERVER: our_server},
        hooks={"PreToolUse": [HookMatcher(matcher=None, hooks=[_always_ask])]},
        can_use_tool=can_use_tool,
        system_prompt={"type": "preset", "preset": "claude_code", "append": system},
        model=model,
        resume=resume,
        cwd=workdir,
        add_dirs=[root for root in roots if root != workdir],
        env=dict(env),
        max_turns=max_turns,
        cli_path=cli_path,
        stderr=_stderr,
    )


async def _always_ask(
    _hook_input: HookInput, _tool_use_id: str | None, _context: HookContext
) -> HookJSONOutput:
    """Every tool call becomes a permission prompt, which `can_use_tool` answers."""
    return {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "ask",
            "permissionDecisionReason": "dispatch-matrix judges every call",
        }
    }


# Told when the conversation's session could not be resumed and a fresh one began.
SESSION_LOST_NOTE = (
    "(Your earlier conversation with the owner could not be restored, so you start afresh; "
    "say so if the task refers to something earlier.)"
)


class _LostSession(Exception):
    """The stored session cannot be resumed."""


def _stderr(line: str) -> None:
    log.debug("claude_code.stderr", line=line[:500])


async def _one(message: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    yield message


def _failure(result: ResultMessage) -> str:
    """Why a turn ended in error, for the owner."""
    if result.subtype == "error_max_turns":
        return (
            f"stopped after {result.num_turns} turns without finishing (the step budget; "
            "raise [agent] max_steps if this task needs more)"
        )
    detail = (result.result or "").strip()
    return f"Claude Code ended the turn with an error ({result.subtype})" + (
        f": {detail[:300]}" if detail else ""
    )


# Claude Code's own file tools, by our name, and the input field that names their path.
_CONFINED = {"read": "file_path", "write": "file_path", "edit": "file_path", "glob": "path"}


def confinement_refusal(ours: str, tool_input: Mapping[str, Any], ctx: ToolContext) -> str | None:
    """Why one of Claude Code's own file tools may not touch its path, whatever the rules
    say; None when it may. The same confinement our own file tools apply when they run
    (allowed roots, the hidden paths, every symlink followed; a write also never where
    something runs later), here before Claude Code opens anything: its tools do not pass
    through ours, so a rule such as `Read` must not reach past the roots or through a
    link to a secret."""
    field = _CONFINED.get(ours)
    if field is None:
        return None
    if ours == "glob":
        pattern = str(tool_input.get("pattern", ""))
        if pattern.startswith(("/", "~")) or ".." in Path(pattern).parts:
            return f"the glob pattern {pattern!r} reaches outside its folder"
    spelled = tool_input.get(field)
    if ours == "glob" and not spelled:
        spelled = str(ctx.workdir)
    try:
        if ours in ("write", "edit"):
            resolve_for_write(str(spelled or ""), ctx)
        else:
            resolve(str(spelled or ""), ctx)
    except ToolError as err:
        return err.message
    return None
