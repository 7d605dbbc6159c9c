"""What the queue says in the room: one place, one tone."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dispatch_matrix import __version__
from dispatch_matrix.agent.errors import BudgetSpent
from dispatch_matrix.agent.usage import UNKNOWN_MODEL, Totals
from dispatch_matrix.connectors.inventory import Group
from dispatch_matrix.core.errors import ModelError
from dispatch_matrix.store import Task, TaskState

if TYPE_CHECKING:
    from anthropic.types import ModelInfo

    from dispatch_matrix.agent.compaction import Compaction

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
- `!retry [#n]` — run a failed or cancelled task (or an unheard voice message) again
- `!new` — start a fresh conversation (the old one is kept)
- `!compact` — summarise the older part of the conversation now, to save room
- `!history [n]` — the last n tasks
- `!usage` — tokens and cost today, this week, and of the last tasks
- `!model [name]` — the model I use, or switch to another from the next task (`default` to go back)
- `!memory` — what I keep in mind about you across conversations
- `!reminders` — reminders and schedules with their next times; `!cancel-reminder r<n>` drops one
- `!digest` — a check-in: what I did since the last one, files written, reminders ahead, cost
- `!tools` — every tool I have now (built-in, MCP servers, web) and the rule for each
- `!help` — this text"""


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
    outage: str | None = None,
    outage_for: float = 0.0,
    awake: str | None = None,
) -> str:
    """The answer to !status (`outage`: why the API has been away for `outage_for` s;
    `awake`: the keep-awake line)."""
    if current is not None:
        doing = (
            f"⚙️ Working on {current.short_id}: {current.title()} — step {current.steps}, "
            f"{duration(elapsed or 0)}"
        )
    elif outage is not None:
        doing = f"⏳ Waiting for the model for {duration(outage_for)}: {outage}. I retry by myself."
    else:
        doing = "💤 Idle."
    lines = [
        doing,
        f"Queue: {queued} waiting" + (" (paused: `!resume` to go on)" if paused else ""),
    ]
    if awake is not None:
        lines.append(awake)
    lines.append(f"Done today: {done_today}. Up {duration(uptime)}. dispatch-matrix {__version__}.")
    return "\n\n".join(lines)


def awake_line(enabled: bool, available: bool, held: bool) -> str:
    """Whether the computer is kept awake now, for !status and `status`."""
    if not enabled:
        return "☕ Sleep: not prevented (`agent.keep_awake = false`)."
    if held:
        return "☕ Sleep: held off while I work (released when the queue is empty)."
    if not available:
        return "☕ Sleep: cannot be held off here (no working systemd-inhibit or caffeinate)."
    return "☕ Sleep: allowed (nothing running)."


def queue_list(tasks: list[Task], paused: bool) -> str:
    """The answer to !queue."""
    if not tasks:
        return "The queue is empty." + (" (Paused.)" if paused else "")
    lines = [f"- {t.short_id} {EMOJI[t.state]} {t.title()}" for t in tasks]
    head = f"{len(tasks)} in the queue" + (" — paused" if paused else "") + ":"
    return head + "\n" + "\n".join(lines)


def history(tasks: list[Task]) -> str:
    """The answer to !history."""
    if not tasks:
        return "Nothing done yet."
    lines = []
    for task in tasks:
        took = duration((task.finished_at or 0) - (task.started_at or task.finished_at or 0))
        lines.append(f"- {task.short_id} {EMOJI[task.state]} {task.title()} ({took})")
    return "\n".join(lines)


def interrupted(task: Task) -> str:
    """The daemon stopped in the middle of a task and is picking it up again."""
    return (
        f"⚠️ I was stopped while working on {task.short_id} ({task.title()}), after step "
        f"{task.steps}. Picking it up where it was; anything that was running at that moment is "
        "checked, not blindly repeated."
    )


CANCELLED = "🚫 Cancelled."


def status_final(task: Task, state: TaskState, step: str) -> str:
    """The last word of a task's status message: how it ended, and at which step."""
    how = {TaskState.DONE: "done", TaskState.FAILED: "failed", TaskState.CANCELLED: "cancelled"}
    return f"{EMOJI[state]} {task.short_id} — {how.get(state, str(state))}; it ended at {step}"


def stopping(task: Task) -> str:
    """`!cancel` of the running task, said before it stops (then "🚫 Cancelled." follows)."""
    return f"Stopping {task.short_id}…"


def edit_not_taken(task: Task) -> str:
    """The owner edited the message of a task that has already started (or ended): one
    line saying the edit changed nothing, and what does."""
    if task.state.finished:
        return (
            f"✏️ {task.short_id} had already finished, so your edit was not taken: "
            "send the new text as a new message to run it."
        )
    return (
        f"✏️ {task.short_id} is already running, so your edit was not taken: `!cancel` it "
        "and send the new text as a new message to run that instead."
    )


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
MALFORMED = (
    "I could not read that message: it does not follow the Matrix format (a broken "
    "attachment or an app bug). Nothing was done; please send it again."
)
NOT_TEXT = (
    "I take text, images and files; I cannot read this kind of message. Send the "
    "instructions as text."
)


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


def access_refused(reason: str | ModelError) -> str:
    """The API key, the credit or the daily budget needs the owner's attention."""
    if isinstance(reason, BudgetSpent):
        return budget_spent(reason)
    if isinstance(reason, ModelError):
        reason = reason.message
    return (
        f"⛔ The Messages API refused me: {reason}. I paused the queue. Fix the API key or "
        "credit on the computer, then restart me or send `!resume`."
    )


RESUMED_AFTER_RESTART = (
    "▶️ I was restarted after the Messages API refused me, so I took up the queue again. "
    "If it still refuses, I pause again and say why."
)


def budget_spent(err: BudgetSpent) -> str:
    """Today's cost reached [agent] daily_budget_usd."""
    return (
        f"⛔ The daily budget is spent: today's model cost {usd(err.spent_usd)} has reached "
        f"the limit of {usd(err.budget_usd)}. I paused the queue; your task keeps its place. "
        "To go on today, raise `daily_budget_usd` under `[agent]` in the config file (0 means "
        "no limit) and restart me; otherwise wait until tomorrow. Then send `!resume`."
    )


# -- the engine's commands: compaction, memory, usage, model ---------------------------------

NO_MEMORY = "This agent runs without a memory file, so there is nothing to show."
COMPACTING = "🗜️ Compacting the conversation: I summarise its older part and tell you when done."
STILL_COMPACTING = "🗜️ A compaction is already under way; I tell you when it is done."


def compacted(done: Compaction) -> str:
    """The answer once `!compact` has written a summary."""
    return (
        f"🗜️ Compacted: the oldest {done.summarised} messages (≈{tokens(done.tokens_before)} "
        f"tokens) are now a summary of ≈{tokens(done.tokens_after)} tokens; the newest "
        f"{done.kept} are kept word for word. The full record stays in my store."
    )


COMPACTED_BY_ENGINE = (
    "🗜️ Compacted: Claude Code summarised the older part of our conversation in its session."
)


def nothing_to_compact(keep: int) -> str:
    return (
        "🗜️ Nothing to compact yet: the conversation is short (I always keep the newest "
        f"{keep} messages word for word)."
    )


def compact_failed(reason: str) -> str:
    return f"🗜️ I could not compact the conversation: {reason}"


def memory_shown(text: str, max_bytes: int) -> str:
    """The answer to `!memory`."""
    if not text.strip():
        return (
            '🧠 My memory is empty. Tell me a lasting preference ("I prefer metric units") '
            "and I will keep it across conversations."
        )
    size = len(text.encode("utf-8"))
    return (
        f"🧠 What I keep in mind ({size} of {max_bytes} bytes):\n\n{text.strip()}\n\n"
        "Ask me in plain words to change or forget an entry."
    )


def tokens(count: int) -> str:
    """950, 12.3k, 1.25M."""
    if count >= 1_000_000:
        return f"{count / 1_000_000:.2f}M"
    if count >= 1_000:
        return f"{count / 1_000:.1f}k"
    return str(count)


def usd(amount: float) -> str:
    """$1.23, or four decimals below a cent."""
    return f"${amount:.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.4f}"


def _requests(count: int) -> str:
    return f"{count} request" + ("" if count == 1 else "s")


def _usage_line(label: str, totals: Totals) -> str:
    if not totals.requests:
        return f"- {label}: no model requests"
    if totals.unpriced == totals.requests:
        cost = f"{UNKNOWN_MODEL} ({', '.join(totals.unpriced_models)})"
    else:
        cost = usd(totals.cost_usd)
        if totals.unpriced:
            models = ", ".join(totals.unpriced_models)
            cost += f" + {_requests(totals.unpriced)} to {models} ({UNKNOWN_MODEL})"
    if totals.plan_usd:
        cost += f" + {usd(totals.plan_usd)} of plan credit (Claude Code, at list prices)"
    return (
        f"- {label}: {_requests(totals.requests)} · {tokens(totals.all_input)} tokens in "
        f"({totals.cache_read_share:.0%} read from cache) · {tokens(totals.output_tokens)} "
        f"out · {cost}"
    )


def usage_report(
    today: Totals, week: Totals, recent: list[tuple[Task | None, Totals]], budget_usd: float
) -> str:
    """The answer to `!usage`."""
    lines = ["📊 **Model usage**", _usage_line("Today", today), _usage_line("Last 7 days", week)]
    if budget_usd > 0:
        lines.append(f"- Daily budget: {usd(today.cost_usd)} of {usd(budget_usd)} spent today")
    if recent:
        lines.append("\nLast tasks:")
        for task, totals in recent:
            label = f"{task.short_id} {task.title(40)}" if task else "(a removed task)"
            lines.append(_usage_line(label, totals))
    return "\n".join(lines)


def model_shown(current: str, default: str, priced: bool) -> str:
    """The answer to `!model`."""
    origin = (
        "the config's default"
        if current == default
        else f"set with `!model`; the config says {default}"
    )
    price = "" if priced else f" ({UNKNOWN_MODEL} in `!usage`)"
    return (
        f"🤖 I use **{current}** ({origin}){price}. `!model NAME` switches from the next task "
        "on; `!model default` goes back."
    )


def models_offered(models: list[ModelInfo] | None, current: str) -> str:
    """What the Models API offers, for `!model`."""
    if models is None:
        return "(I could not ask the API which models it offers right now.)"
    if not models:
        return "The API lists no models for this key."
    lines = ["Offered by the API now (newest first):"]
    for info in models:
        notes = ["in use"] if info.id == current else []
        if info.lifecycle != "active":
            ends = f", end of life {info.retires_at.date()}" if info.retires_at else ""
            notes.append(f"{info.lifecycle}{ends}")
        extra = f" ({'; '.join(notes)})" if notes else ""
        lines.append(f"- `{info.id}` — {info.display_name}{extra}")
    return "\n".join(lines)


def model_ending(notice: str) -> str:
    """The model in use is deprecated or retired (said once in the room)."""
    return f"⚠️ {notice}"


def model_changed(name: str, priced: bool, checked: bool) -> str:
    note = (
        ""
        if checked
        else " (I could not ask the API whether it knows it; if not, the next task tells you.)"
    )
    price = "" if priced else f" I have no price for it, so `!usage` shows {UNKNOWN_MODEL}."
    return f"🤖 From the next task on I use **{name}**.{price}{note}"


def model_reset(default: str) -> str:
    return f"🤖 Back to the config's model, **{default}**, from the next task on."


def model_unknown(name: str, current: str) -> str:
    return f"🤖 The API knows no model called `{name}`; I keep using **{current}**."


def model_invalid(name: str) -> str:
    return f"🤖 `{name}` is not a model id (like `claude-sonnet-4-5`); nothing changed."


# -- connectors ------------------------------------------------------------------------------


def tools_report(groups: list[Group]) -> str:
    """The answer to !tools."""
    parts = ["🧰 **My tools now** (and the rule that applies to each):"]
    for group in groups:
        head = f"**{group.title}**" + (f" — {group.state}" if group.state else "")
        lines = [f"- `{line.name}` — {line.rule}" for line in group.lines]
        parts.append("\n".join([head, *(lines or ["- (no tools)"])]))
    return "\n\n".join(parts)


NO_TOOLS_REPORT = "This agent was started without a tool inventory."


def mcp_failed(name: str, reason: str) -> str:
    """Told once in the room when an MCP server does not start."""
    return (
        f"⚠️ The MCP server **{name}** did not start: {reason}\n\n"
        "I carry on without its tools and try it again now and then. "
        "`dispatch-matrix doctor` on the computer checks it; `!tools` shows its state."
    )


# How much of the message replied to the model is shown: enough to tell which one it is.
REFERENT_CHARS = 200


def _start_of(text: str) -> str:
    """The start of a text on one line, for the model to recognise it by."""
    line = " ".join(text.split())
    return line if len(line) <= REFERENT_CHARS else line[: REFERENT_CHARS - 1] + "…"


def reply_note(whose: str, task: str | None, text: str | None) -> str:
    """What the model is told an owner's message replies to (pure): `whose` is "answer"
    (the bot's answer to a task), "message" (another of the bot's messages), "owner" (the
    owner's own message) or "unknown" (an event not on record)."""
    if whose == "unknown" or text is None:
        return "(This message replies to an earlier message that is not on record.)"
    subject = {
        "answer": f"your answer to task {task}" if task else "your earlier answer",
        "message": f"your message about task {task}" if task else "your earlier message",
        "owner": f"the owner's message {task}" if task else "an earlier message of the owner",
    }[whose]
    return f"(This message replies to {subject}, which began: «{_start_of(text)}»)"
