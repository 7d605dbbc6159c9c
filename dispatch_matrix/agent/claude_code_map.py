"""The Claude Code engine's pure half: how Claude Code's tool names, permission answers,
usage and session facts map onto ours. No SDK import, no I/O: table-tested."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

# The in-process MCP server through which Claude Code reaches our own tools (the sandboxed
# shell, grep, send_file, schedule and the MCP servers of the config).
OUR_SERVER = "dispatch"
OUR_PREFIX = f"mcp__{OUR_SERVER}__"
# Claude Code's built-in tools it may use, each judged by our policy at every call. Its Bash
# is not among them (our bash runs every command inside our wall), nor its Grep (ours skips
# the files the policy denies, which a walk never shows the policy one by one), nor Agent,
# Cron, worktree or plan-mode tools (a second loop, a second scheduler, a second checkout).
BUILT_IN_TOOLS = ("Read", "Write", "Edit", "Glob", "WebSearch", "WebFetch")
# Our tools offered in their place, by our registry's names.
OUR_TOOLS = ("bash", "grep", "send_file", "schedule")
# Claude Code's spelling of a file tool → ours (the policy, the question's diff and the
# status line all speak ours).
_BUILT_IN_AS_OURS = {"Read": "read", "Write": "write", "Edit": "edit", "Glob": "glob"}

Billing = Literal["plan", "api"]


def policy_name(cli_name: str) -> str:
    """The name our policy judges a Claude Code tool call by: ours for the file tools and
    for what our server offers (`mcp__dispatch__bash` → `bash`, `mcp__dispatch__mcp__fs__x`
    → `mcp__fs__x`), Claude Code's own otherwise (`WebFetch`, as rules spell it)."""
    if cli_name.startswith(OUR_PREFIX) and len(cli_name) > len(OUR_PREFIX):
        return cli_name[len(OUR_PREFIX) :]
    return _BUILT_IN_AS_OURS.get(cli_name, cli_name)


def billing_of(api_key_source: str | None) -> Billing:
    """How Claude Code is paid, from its init message's `apiKeySource`: "none" means its own
    claude.ai login (the plan's credit); any key (the environment's, a helper's, a Console
    login's managed key) is billed to the API."""
    return "plan" if api_key_source in (None, "", "none") else "api"


_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


def usage_counts(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """One result's usage as our ledger's counts (cache writes at the 1 h rate apart)."""
    if not usage:
        return {}
    counts = {key: _int(usage.get(key)) for key in _COUNTS}
    creation = usage.get("cache_creation")
    if isinstance(creation, Mapping):
        counts["cache_write_1h"] = _int(creation.get("ephemeral_1h_input_tokens"))
    return counts


def _int(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


# Told when a task is taken again after the daemon stopped in the middle of its turn: the
# session holds whatever it did, which must not be done twice.
RESUMED_NOTE = (
    "(The computer stopped while you were working on this task; your session above shows "
    "what you had done. Check what already happened before you do anything again, then "
    "finish the task, which was:)"
)


@dataclass(frozen=True)
class ClaudeCodePrompt:
    """What one task sends to Claude Code."""

    blocks: list[dict[str, Any]]
    # Whether the task's turn had started before (a crash or kill in the middle of it).
    again: bool


def turn_for(
    task_id: int, opening: list[dict[str, Any]], running_task: int | None
) -> ClaudeCodePrompt:
    """The task's user message: its opening blocks, after a note when the ledger says this
    very task's turn was running when the daemon stopped."""
    if running_task == task_id:
        return ClaudeCodePrompt([{"type": "text", "text": RESUMED_NOTE}, *opening], again=True)
    return ClaudeCodePrompt(list(opening), again=False)


def user_message(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """A streamed user message of Claude Code's input protocol. `client_composed`: Claude
    Code takes it word for word (no `@path` mention read, no slash command run), since the
    text may carry words the owner did not write (a quoted reply, a forwarded page)."""
    return {
        "type": "user",
        "message": {"role": "user", "content": blocks},
        "parent_tool_use_id": None,
        "client_composed": True,
    }


def mcp_result(content: list[dict[str, Any]], is_error: bool) -> dict[str, Any]:
    """One of our tool results as an in-process MCP tool's answer."""
    shown = [block for block in content if block.get("type") in ("text", "image")]
    return {"content": shown or [{"type": "text", "text": "(no output)"}], "is_error": is_error}


Failure = Literal["lost_session", "outage", "no_cli", "failed"]


def failure_kind(
    kind: str, text: str, terminal_reason: str | None = None, resumed: bool = False
) -> Failure:
    """What a Claude Code failure means for the task: `kind` is the SDK error's class name.
    A session that cannot be resumed (its file gone: another CLAUDE_CONFIG_DIR, a cleaned
    ~/.claude) is started afresh; the API away or overloaded is an outage the worker waits
    out; a missing CLI, and everything else, fails the task with the reason."""
    if kind == "CLINotFoundError":
        return "no_cli"
    if resumed and "No conversation found" in text:
        return "lost_session"
    if terminal_reason == "api_error" or kind == "CLIConnectionError":
        return "outage"
    return "failed"
