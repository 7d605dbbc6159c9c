"""What the bot says about schedules, reminders and the daily check-in (beside `texts.py`,
which is the rest of the queue's voice)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from dispatch_matrix.agent.usage import Totals
from dispatch_matrix.queue.texts import EMOJI, tokens, usd
from dispatch_matrix.schedule.tables import Fire, Schedule
from dispatch_matrix.schedule.timing import describe_delay, local_text
from dispatch_matrix.store import Task, TaskState

# Longest piece of the originating task carried into a follow-up's body.
_CONTEXT_CHARS = 1_200
_LIST_LIMIT = 15


def _at(epoch: float | None, zone: ZoneInfo) -> str:
    if epoch is None:
        return "never again"
    return local_text(datetime.fromtimestamp(epoch, UTC), zone)


def how_often(schedule: Schedule) -> str:
    """`once`, `every 2h`, `cron 0 9 * * 1-5`."""
    if schedule.kind == "at":
        return "once"
    if schedule.kind == "every":
        return f"every {schedule.spec}"
    return f"cron `{schedule.spec}`"


def _late(fire: Fire) -> str:
    if fire.late_s < 60:
        return ""
    return f"{describe_delay(timedelta(seconds=fire.late_s))} late: "


def reminder(schedule: Schedule, fire: Fire, zone: ZoneInfo) -> str:
    """The message that fires a schedule; it names the owner so their phone notifies."""
    lines = [
        f"⏰ {_late(fire)}**{schedule.title}** ({schedule.short_id})",
        f"{schedule.owner} {schedule.prompt}",
    ]
    if schedule.next_at is not None and schedule.kind != "at":
        lines.append(f"Next: {_at(schedule.next_at, zone)} ({how_often(schedule)}).")
    lines.append("I am on it; my answer follows as a reply.")
    return "\n".join(lines)


def task_body(schedule: Schedule, fire: Fire, origin: Task | None, zone: ZoneInfo) -> str:
    """The task a fire puts in the queue: the prompt, what it is, and where it came from."""
    due = _at(fire.due_at, zone)
    late = f", fired {_late(fire).removesuffix(': ')}" if _late(fire) else ""
    setter = f", set during task {origin.short_id}" if origin is not None else ""
    head = (
        f'[Scheduled task {schedule.short_id} "{schedule.title}" ({how_often(schedule)}'
        f"{setter}) — due {due}{late}. The owner was just notified with a reminder; do what "
        "it says now.]"
    )
    text = f"{head}\n{schedule.prompt}"
    if origin is not None:
        asked = _clip(origin.body)
        text += f"\n\nContext from task {origin.short_id} — the owner asked:\n{asked}"
        if origin.result:
            text += f"\n\nYour answer to it then:\n{_clip(origin.result)}"
        elif origin.state is not TaskState.DONE:
            text += f"\n\n(Task {origin.short_id} ended {origin.state}, without an answer.)"
    return text


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _CONTEXT_CHARS else text[: _CONTEXT_CHARS - 1] + "…"


NO_REMINDERS = "⏰ No reminders or schedules. Ask me to remind you of something, any time."


def reminders_header(count: int, shown: int, zone: ZoneInfo) -> str:
    """The first message of `!reminders`; one message per schedule follows."""
    more = f" (the first {shown} below)" if shown < count else ""
    plural = "" if count == 1 else "s"
    return (
        f"⏰ {count} reminder{plural}{more}, times in {zone.key}. To cancel one, react ❌ to "
        "it (from an app that encrypts reactions) or send `!cancel-reminder r<n>`."
    )


def reminder_entry(schedule: Schedule, zone: ZoneInfo) -> str:
    """One schedule in the `!reminders` list."""
    return (
        f"{schedule.short_id} · **{schedule.title}** — next {_at(schedule.next_at, zone)} "
        f"({how_often(schedule)})"
    )


def reminder_cancelled(schedule: Schedule) -> str:
    return f"🗑️ Cancelled {schedule.short_id}: {schedule.title}."


def no_such_reminder(arg: str) -> str:
    shown = arg.strip() or "(none given)"
    return f"There is no active reminder {shown}. `!reminders` lists them with their ids."


def digest(
    since: datetime,
    finished: list[Task],
    files: list[str],
    ahead: list[Schedule],
    usage: Totals,
    zone: ZoneInfo,
) -> str:
    """The check-in: what ended since `since`, files written, reminders ahead, the cost.

    A stretch with nothing done says so in one line."""
    when = local_text(since, zone)
    lines: list[str] = []
    if not finished and not usage.requests:
        lines.append(f"🗓️ Check-in: nothing done since {when}.")
    else:
        counts = dict.fromkeys((TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED), 0)
        for task in finished:
            counts[task.state] = counts.get(task.state, 0) + 1
        lines.append(
            f"🗓️ **Check-in** since {when}: {counts[TaskState.DONE]} done, "
            f"{counts[TaskState.FAILED]} failed, {counts[TaskState.CANCELLED]} cancelled."
        )
        for task in finished[-_LIST_LIMIT:]:
            why = f" — {first_line_of(task.error)}" if task.error else ""
            lines.append(f"- {EMOJI[task.state]} {task.short_id} {task.title(50)}{why}")
        if len(finished) > _LIST_LIMIT:
            lines.append(f"- … and {len(finished) - _LIST_LIMIT} earlier (`!history` lists more)")
        if files:
            lines.append(f"Files written ({len(files)}):")
            lines.extend(f"- `{path}`" for path in files[:_LIST_LIMIT])
            if len(files) > _LIST_LIMIT:
                lines.append(f"- … and {len(files) - _LIST_LIMIT} more")
        lines.append(f"Model: {_usage(usage)}")
    if ahead:
        lines.append(f"Reminders ahead ({len(ahead)}):")
        lines.extend(
            f"- {s.short_id} {s.title} — {_at(s.next_at, zone)}" for s in ahead[:_LIST_LIMIT]
        )
    return "\n".join(lines)


def first_line_of(text: str, width: int = 60) -> str:
    """The first line of a text, shortened."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _usage(totals: Totals) -> str:
    if not totals.requests:
        return "no requests."
    plural = "" if totals.requests == 1 else "s"
    cost = usd(totals.cost_usd)
    if totals.unpriced:
        cost += f" (+{totals.unpriced} at an unknown price)"
    if totals.plan_usd:
        cost += f" + {usd(totals.plan_usd)} of plan credit (Claude Code, at list prices)"
    return (
        f"{totals.requests} request{plural}, {tokens(totals.all_input)} tokens in, "
        f"{tokens(totals.output_tokens)} out, {cost}."
    )
