"""One tool call the model asked for: judged by the policy, put to the owner when it must
be (with what would change), learned as a rule when they say "always", run with its own
context, and turned into the tool_result block the model reads next."""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import replace
from typing import Any

from dispatch_matrix.agent.ports import Approval, TaskIO
from dispatch_matrix.core import logs
from dispatch_matrix.core.verbatim import code_span, hidden_characters
from dispatch_matrix.permissions.policy import Decision, Policy
from dispatch_matrix.store import Connection
from dispatch_matrix.toolbox.base import ToolContext, ToolResult
from dispatch_matrix.toolbox.preview import preview
from dispatch_matrix.toolbox.registry import ToolRegistry
from dispatch_matrix.toolbox.secretscan import readable

log = logs.get(__name__)


class ToolCalls:
    """Runs the model's tool calls past the permission policy and the owner."""

    def __init__(
        self, db: Connection, policy: Policy, tools: ToolRegistry, context: ToolContext
    ) -> None:
        self._db = db
        self._policy = policy
        self._tools = tools
        self._context = context

    async def run(self, use: dict[str, Any], io: TaskIO, step: int, task_id: int) -> dict[str, Any]:
        """One tool call: judged, asked when it must be, run; its tool_result block."""
        name, tool_input = use["name"], use.get("input") or {}
        broken = unencodable(tool_input)
        if broken is not None:
            # Judged nowhere: a path with a lone surrogate raised UnicodeEncodeError in the
            # policy's canonical path, out of the call, failing the whole task.
            return ToolResult.error(
                f"{name}: invalid input: {broken} holds a lone surrogate ({_LONE}), which "
                "is not text; write the character itself"
            ).as_block(use["id"])
        refusal = await self.permit(name, tool_input, io)
        if refusal is not None:
            # A reason may name a resolved path (a link's target), which the model never saw.
            return without_known_secrets(ToolResult.error(refusal).as_block(use["id"]))
        await io.progress(f"step {step}: {describe(name, tool_input)}")
        # The shared context stays as built; each call gets its own reporter and hook.
        context = replace(
            self._context, on_process=io.process_started, reporter=io, task_id=task_id
        )
        result = await self._tools.run(name, tool_input, context)
        log.info("tool.result", tool=name, error=result.is_error)
        # Off the loop: an image or PDF of up to 20 MB is read through for secrets.
        return await asyncio.to_thread(without_known_secrets, result.as_block(use["id"]))

    async def permit(self, name: str, tool_input: dict[str, Any], io: TaskIO) -> str | None:
        """Judge one call by the policy, asking the owner when it must (silence is no);
        None when it may run, else what the model is told instead."""
        decision = _screened(self._policy.decide(name, tool_input), name, tool_input)
        log.info("tool.decision", tool=name, verdict=decision.verdict, rule=decision.rule)
        if decision.verdict == "deny":
            return f"Not allowed: {decision.reason}. Do not try another way."
        if decision.verdict == "ask":
            asked = replace(decision, learns=self._policy.learnable(name, tool_input))
            approval = await io.ask(asked, preview(name, tool_input))
            if not approval.approved:
                return (
                    f"The owner did not approve this ({decision.subject}). Do not do it; "
                    "continue without it or explain what you need."
                )
            if approval is Approval.ALWAYS:
                await io.learned(self._learn(name, tool_input))
        return None

    def _learn(self, name: str, tool_input: dict[str, Any]) -> str | None:
        """The owner said "always": allow exactly this call from now on (kept in the store,
        never written into the config file, which stays the owner's to edit); the rule."""
        rule = self._policy.learn(name, tool_input)
        if rule is not None:
            self._db.add_learned_rule(rule)
            log.info("policy.learned", rule=rule)
        return rule


_LONE = "a \\ud800–\\udfff escape on its own"


def unencodable(value: Any, where: str = "input") -> str | None:
    """The first place in a tool's input (`input.file_path`, `input.edits[0]`) whose text
    cannot be written as UTF-8 (a lone surrogate), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(value, dict):
        items: list[tuple[str, Any]] = [(f"{where}.{k}", v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(f"{where}[{i}]", v) for i, v in enumerate(value)]
    else:
        return None
    for place, item in items:
        found = unencodable(item, place)
        if found is not None:
            return found
    return None


# What a file-changing tool puts in the file: screened like a command is.
_WRITTEN = {"write": ("content",), "edit": ("new_string",)}


def _screened(decision: Decision, name: str, tool_input: dict[str, Any]) -> Decision:
    """An allowed write or edit whose new text holds invisible or direction-changing
    characters asks instead, as a command with them does: what the owner reviews later on a
    screen would not be what the file holds (a "Trojan Source" line)."""
    if decision.verdict != "allow" or name not in _WRITTEN:
        return decision
    written = "".join(str(tool_input.get(k, "")) for k in _WRITTEN[name])
    hidden = hidden_characters(written, prose=True)
    if not hidden:
        return decision
    reason = (
        f"the new text holds invisible or direction-changing characters ({', '.join(hidden[:8])})"
        f"{' and more' if len(hidden) > 8 else ''}, which rules never allow"
    )
    return Decision("ask", reason, decision.subject, None, decision.uncovered)


def describe(name: str, tool_input: dict[str, Any]) -> str:
    """A one-line account of a tool call for the owner's status message."""
    if name == "bash":
        command = str(tool_input.get("command", "")).strip().splitlines()
        # Redacted before it is cut: a key cut at 80 characters would go out half-shown.
        first = logs.REDACTOR.text(command[0]) if command else ""
        return f"running {code_span(first[:80])}"
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
    if name == "schedule":
        return f"schedule: {tool_input.get('action', 'create')} {tool_input.get('title', '')}"
    return f"{verbs.get(name, name)} {code_span(str(path))}" if path else name


WITHHELD = (
    "[{kind} withheld: it holds a secret this bot knows (a password, token or key it was given)]"
)


def without_known_secrets(block: dict[str, Any]) -> dict[str, Any]:
    """A tool result without the daemon's own secrets (its password, token, API key, the
    environment's): a command's output that holds one never reaches the model. Shapes are
    left alone: a key in the owner's file may be what the task is about. An image or a
    document (a file's, an MCP server's) cannot be cut, so one that holds a secret in its
    bytes is replaced by a line saying so."""
    content = block["content"]
    for index, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            part["text"] = logs.REDACTOR.known(part["text"])
        elif kind in ("image", "document") and _media_holds_secret(part):
            content[index] = {"type": "text", "text": WITHHELD.format(kind=kind)}
    return block


def _media_holds_secret(part: dict[str, Any]) -> bool:
    source = part.get("source")
    if not isinstance(source, dict):
        return False
    data = source.get("data")
    if not isinstance(data, str):
        # A URL source: the API fetches it, nothing of ours is in it.
        return False
    if source.get("type") == "base64":
        try:
            raw = base64.b64decode(data)
        except (binascii.Error, ValueError):
            # Not base64: the API refuses it; its text is looked at as it is.
            return bool(logs.REDACTOR.known_spans(data))
        return bool(logs.REDACTOR.known_spans(readable(raw)))
    # A plain-text document.
    return bool(logs.REDACTOR.known_spans(data))
