"""One turn of the conversation: append the owner's message, ask Claude, keep the answer.

Every message is written to the store before the next step, so a restart continues from
the last completed step and the conversation survives days and reboots.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import anthropic

from .. import logs
from ..errors import ModelError
from ..store import Database, Task
from .prompt import turn_context

log = logs.get(__name__)

_CACHE = {"type": "ephemeral"}


class AgentFailure(ModelError):
    """The model could not answer this task; the message says why, for the owner."""


def normalize(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages the API accepts: roles alternate (same-role neighbours merged), user first."""
    merged: list[dict[str, Any]] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1] = {
                "role": message["role"],
                "content": [*merged[-1]["content"], *message["content"]],
            }
        else:
            merged.append({"role": message["role"], "content": list(message["content"])})
    while merged and merged[0]["role"] != "user":
        merged.pop(0)
    return merged


def with_cache_breakpoint(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy whose last block carries a cache breakpoint, so the next turn reads it back."""
    if not messages:
        return messages
    out = copy.deepcopy(messages)
    out[-1]["content"][-1]["cache_control"] = dict(_CACHE)
    return out


def _block(block: Any) -> dict[str, Any]:
    data: dict[str, Any] = block.model_dump(mode="json", exclude_none=True)
    # Keep only what the API accepts back in a later request.
    allowed = {
        "text": {"type", "text"},
        "tool_use": {"type", "id", "name", "input"},
        "thinking": {"type", "thinking", "signature"},
        "redacted_thinking": {"type", "data"},
    }.get(data.get("type", ""))
    return {k: v for k, v in data.items() if k in allowed} if allowed else data


class Agent:
    """Answers tasks with Claude, keeping the conversation in the store."""

    def __init__(
        self,
        db: Database,
        client: anthropic.AsyncAnthropic,
        *,
        model: str,
        max_tokens: int,
        system: str,
    ) -> None:
        self._db = db
        self._client = client
        self.model = model
        self._max_tokens = max_tokens
        self._system = system

    async def answer(self, task: Task, now: datetime | None = None) -> str:
        """Run the task to the model's final answer and return its text."""
        conversation = self._db.current_conversation()
        if not self._db.task_messages(task.id):
            stamp = turn_context(now or datetime.now(UTC))
            content = [{"type": "text", "text": f"{stamp}\n{task.body}"}]
            self._db.append_message(conversation, task.id, "user", content)
        else:
            done = [m for m in self._db.task_messages(task.id) if m["role"] == "assistant"]
            if done:
                # The answer was recorded before a restart; do not ask (and pay) twice.
                return _text_of(done[-1]["content"])
        messages = with_cache_breakpoint(normalize(self._db.transcript(conversation)))
        system = [{"type": "text", "text": self._system, "cache_control": dict(_CACHE)}]
        log.info("agent.request", task=task.short_id, model=self.model, messages=len(messages))
        try:
            async with self._client.messages.stream(
                model=self.model,
                max_tokens=self._max_tokens,
                system=system,  # type: ignore[arg-type]
                messages=messages,  # type: ignore[arg-type]
            ) as stream:
                reply = await stream.get_final_message()
        except anthropic.APIStatusError as err:
            raise AgentFailure(_api_problem(err)) from err
        except anthropic.APIConnectionError as err:
            raise AgentFailure(f"the Messages API could not be reached ({err})") from err
        content = [_block(block) for block in reply.content]
        self._db.append_message(conversation, task.id, "assistant", content)
        usage = reply.usage.model_dump(exclude_none=True) if reply.usage else {}
        self._db.record_usage(
            task.id, self.model, {k: int(v) for k, v in usage.items() if isinstance(v, int)}
        )
        log.info(
            "agent.reply",
            task=task.short_id,
            stop=reply.stop_reason,
            input_tokens=usage.get("input_tokens"),
            output_tokens=usage.get("output_tokens"),
            cache_read=usage.get("cache_read_input_tokens"),
        )
        return _text_of(content)


def _text_of(content: list[dict[str, Any]]) -> str:
    text = "\n\n".join(b["text"] for b in content if b.get("type") == "text").strip()
    return text or "(the model returned no text)"


def _api_problem(err: anthropic.APIStatusError) -> str:
    message = err.message
    body = err.body if isinstance(err.body, dict) else None
    if body and isinstance(body.get("error"), dict):
        message = str(body["error"].get("message", message))
    return f"the Messages API answered {err.status_code}: {message}"
