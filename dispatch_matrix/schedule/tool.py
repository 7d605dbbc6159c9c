"""The `schedule` tool: the agent sets, lists and cancels reminders, recurring tasks and
follow-ups of its own work.

Its input names are part of the contract: `title`, `prompt`, and exactly one of `at` (ISO
8601 with an offset), `cron` (five fields) or `every` (`2h`, `30m`, `1d`); `action` (create,
list, cancel) and `id` (to cancel) are ours. A schedule belongs to the task that set it: its
room, its owner, and — for a follow-up — its context, which the fired task carries. It is
one of the bot's own tools (it touches only the bot's ledger), so it needs no permission
rule; a deny rule may still name it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from dispatch_matrix.core.clock import Clock
from dispatch_matrix.core.errors import ToolError
from dispatch_matrix.schedule.tables import Schedule, ScheduleTables
from dispatch_matrix.schedule.timing import (
    ScheduleError,
    describe_delay,
    first_fire,
    local_text,
    parse_spec,
)
from dispatch_matrix.store import LedgerQueries
from dispatch_matrix.toolbox.base import ToolContext, ToolResult

MAX_ACTIVE = 50
MAX_TITLE = 120
MAX_PROMPT = 4_000
_ACTIONS = ("create", "list", "cancel")


class ScheduleTool:
    """`schedule`: create (the default), list or cancel schedules."""

    name = "schedule"

    def __init__(
        self,
        schedules: ScheduleTables,
        ledger: LedgerQueries,
        clock: Clock,
        zone: ZoneInfo,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._schedules = schedules
        self._ledger = ledger
        self._clock = clock
        self._zone = zone
        # Tells the scheduler to look at the times again (a new one may be the soonest).
        self._on_change = on_change

    def definition(self) -> dict[str, Any]:
        """The tool's entry in the Messages API `tools` list."""
        return {
            "name": self.name,
            "description": (
                "Schedule a reminder, a recurring task, or a follow-up of your own work. When "
                "it fires, the owner's phone is notified and `prompt` runs as a new task in "
                "the queue, with this task's request and your answer to it as context. Times "
                f"are in the owner's zone, {self._zone.key}. Give exactly one of: `at`, one "
                "time, ISO 8601 with the offset (e.g. 2026-06-05T09:00:00+02:00); `cron`, "
                "five fields (minute hour day month weekday) in the owner's zone (e.g. "
                "'0 9 * * 1-5'); `every`, an interval from now (30m, 2h, 1d; at least 5m). "
                "Actions: create (default; needs title, prompt and the time), list, cancel "
                "(id). Say in your answer what you scheduled and when."
            ),
            "input_schema": {
                "type": "object",
                "properties": {
                    "action": {"type": "string", "enum": list(_ACTIONS)},
                    "title": {"type": "string", "description": "A short name"},
                    "prompt": {
                        "type": "string",
                        "description": "What to do or say when it fires (the task's text)",
                    },
                    "at": {"type": "string", "description": "ISO 8601 time with offset"},
                    "cron": {"type": "string", "description": "Five-field cron expression"},
                    "every": {"type": "string", "description": "Interval: 30m, 2h, 1d"},
                    "id": {"type": "string", "description": "The schedule to cancel (r3)"},
                },
            },
        }

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Do one action; mistakes come back as error results the model can correct."""
        action = str(tool_input.get("action") or "create").strip().lower()
        if action == "list":
            return ToolResult.text(self._list())
        if action == "cancel":
            return self._cancel(str(tool_input.get("id") or ""))
        if action != "create":
            return ToolResult.error(f"schedule: action must be one of {', '.join(_ACTIONS)}")
        try:
            return self._create(tool_input, ctx)
        except ScheduleError as err:
            raise ToolError(err.message) from None

    def _create(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        title = " ".join(str(tool_input.get("title") or "").split())
        prompt = str(tool_input.get("prompt") or "").strip()
        if not title or not prompt:
            raise ToolError("create needs a title and a prompt")
        if len(title) > MAX_TITLE or len(prompt) > MAX_PROMPT:
            raise ToolError(f"keep the title under {MAX_TITLE} and the prompt under {MAX_PROMPT}")
        at, cron, every = (_text(tool_input.get(key)) for key in ("at", "cron", "every"))
        spec = parse_spec(at, cron, every)
        task = self._ledger.task(ctx.task_id) if ctx.task_id is not None else None
        if task is None:
            raise ToolError("schedules can only be set while working on a task")
        if len(self._schedules.active_schedules(limit=MAX_ACTIVE + 1)) >= MAX_ACTIVE:
            raise ToolError(f"{MAX_ACTIVE} schedules are active already; cancel some first")
        now = self._clock.now()
        first = first_fire(spec, now, self._zone)
        schedule = self._schedules.add_schedule(
            title=title,
            prompt=prompt,
            kind=spec.kind.value,
            spec=spec.value,
            room_id=task.room_id,
            owner=task.sender,
            origin_task=task.id,
            anchor=now.timestamp(),
            next_at=first.timestamp(),
        )
        self._on_change()
        return ToolResult.text(
            f'Scheduled {schedule.short_id} "{title}": next {local_text(first, self._zone)} '
            f"({self._zone.key}), in {describe_delay(first - now)}"
            + ("" if not spec.recurring else f"; repeats ({spec.kind.value} {spec.value})")
            + ". The owner can list schedules with !reminders and cancel with "
            f"!cancel-reminder {schedule.short_id}."
        )

    def _list(self) -> str:
        schedules = self._schedules.active_schedules()
        if not schedules:
            return "No active schedules."
        return "\n".join(self._line(s) for s in schedules)

    def _line(self, schedule: Schedule) -> str:
        when = (
            local_text(datetime.fromtimestamp(schedule.next_at, UTC), self._zone)
            if schedule.next_at is not None
            else "—"
        )
        return (
            f'{schedule.short_id} "{schedule.title}" next {when} ({schedule.kind} '
            f"{schedule.spec}): {schedule.prompt[:200]}"
        )

    def _cancel(self, raw: str) -> ToolResult:
        text = raw.strip().lstrip("#rR")
        if not text.isdigit():
            raise ToolError("cancel needs the id of a schedule, e.g. r3 (action list shows them)")
        cancelled = self._schedules.cancel_schedule(int(text))
        if cancelled is None:
            raise ToolError(f"there is no active schedule r{text}")
        self._on_change()
        return ToolResult.text(f'Cancelled {cancelled.short_id} "{cancelled.title}".')


def _text(value: object) -> str | None:
    return None if value is None else str(value)
