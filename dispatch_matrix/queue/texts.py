"""What the queue says in the room: one place, one tone."""

from __future__ import annotations

from .. import __version__
from ..store import Task, TaskState

EMOJI = {
    TaskState.QUEUED: "⏳",
    TaskState.RUNNING: "⚙️",
    TaskState.WAITING_APPROVAL: "❓",
    TaskState.DONE: "✅",
    TaskState.FAILED: "❌",
    TaskState.CANCELLED: "🚫",
    TaskState.INTERRUPTED: "⚠️",
}

HELP = """\
**dispatch-matrix** — send me a task in plain words; I queue it and work through tasks in \
order, replying to each. Commands (answered at once, even while I work):

- `!status` — what I am doing, queue length, uptime
- `!queue` — tasks waiting, with their numbers
- `!cancel [#n]` — stop the running task (or drop queued task #n)
- `!pause` / `!resume` — stop / restart taking tasks from the queue
- `!retry [#n]` — run a failed or cancelled task again (default: the latest)
- `!new` — start a fresh conversation (the old one is kept)
- `!history [n]` — the last n tasks
- `!help` — this text"""


def first_line(task: Task, width: int = 60) -> str:
    """A task's text shortened to one line."""
    line = task.body.strip().splitlines()[0] if task.body.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def duration(seconds: float) -> str:
    """1h 02m, 3m 05s, 12s."""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def status(
    current: Task | None,
    elapsed: float | None,
    queued: int,
    paused: bool,
    uptime: float,
    done_today: int,
) -> str:
    """The answer to !status."""
    if current is not None:
        doing = (
            f"⚙️ Working on {current.short_id}: {first_line(current)} — step {current.steps}, "
            f"{duration(elapsed or 0)}"
        )
    else:
        doing = "💤 Idle."
    lines = [
        doing,
        f"Queue: {queued} waiting" + (" (paused: `!resume` to go on)" if paused else ""),
    ]
    lines.append(f"Done today: {done_today}. Up {duration(uptime)}. dispatch-matrix {__version__}.")
    return "\n\n".join(lines)


def queue_list(tasks: list[Task], paused: bool) -> str:
    """The answer to !queue."""
    if not tasks:
        return "The queue is empty." + (" (Paused.)" if paused else "")
    lines = [f"- {t.short_id} {EMOJI[t.state]} {first_line(t)}" for t in tasks]
    head = f"{len(tasks)} in the queue" + (" — paused" if paused else "") + ":"
    return head + "\n" + "\n".join(lines)


def history(tasks: list[Task]) -> str:
    """The answer to !history."""
    if not tasks:
        return "Nothing done yet."
    lines = []
    for task in tasks:
        took = duration((task.finished_at or 0) - (task.started_at or task.finished_at or 0))
        lines.append(f"- {task.short_id} {EMOJI[task.state]} {first_line(task)} ({took})")
    return "\n".join(lines)


def interrupted(task: Task) -> str:
    """The daemon stopped in the middle of a task and is picking it up again."""
    return (
        f"⚠️ I was stopped while working on {task.short_id} ({first_line(task)}), after step "
        f"{task.steps}. Picking it up where it was; anything that was running at that moment is "
        "checked, not blindly repeated."
    )


CANCELLED = "🚫 Cancelled."
PAUSED = (
    "⏸️ Paused: I finish nothing new until `!resume` (the running task goes on; `!cancel` stops it)."
)
RESUMED = "▶️ Resumed."
NEW_CONVERSATION = "🆕 Started a fresh conversation. The earlier one is kept in my store."
NOTHING_RUNNING = "Nothing is running."
TOO_LONG = (
    "That message is too long for one task ({size} characters; the limit is {limit}). "
    "Send it as a file instead."
)
NOT_TEXT = "I can only take text messages for now; send the instructions as text."


def no_such_task(arg: str) -> str:
    return f"There is no task {arg} I can do that with. `!queue` and `!history` list them."


def unknown_command(word: str) -> str:
    return f"I don't know `!{word}`.\n\n{HELP}"


def retried(task: Task) -> str:
    return f"🔁 {task.short_id} is queued again."


def dropped(task: Task) -> str:
    return f"🚫 Dropped {task.short_id} from the queue."


def failed(reason: str) -> str:
    return f"❌ I could not finish this: {reason}"


def outage(reason: str) -> str:
    """The Messages API is away; the task waits."""
    return (
        f"⏳ The model is unavailable right now ({reason}). Your task keeps its place and "
        "what is done so far; I retry by myself and carry on when it answers."
    )


def access_refused(reason: str) -> str:
    """The API key or credit needs the owner's attention."""
    return (
        f"⛔ The Messages API refused me: {reason}. I paused the queue. Fix the API key or "
        "credit on the computer, then send `!resume`."
    )
