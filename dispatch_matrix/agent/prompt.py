"""The system prompt, and the summariser's.

The system prompt holds only what is stable for days (so it stays in the cached prefix):
who the agent works for, how to report, and the machine. The date and time go into each
task's first turn instead (`transcript.first_turn`), where they belong to that turn and do not
break the cache.
"""

from __future__ import annotations

import getpass
import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Machine:
    """Facts about the computer the agent runs on."""

    os: str
    user: str
    home: str
    workdir: str
    allowed_roots: tuple[str, ...]

    @classmethod
    def here(cls, workdir: Path, allowed_roots: list[Path]) -> Machine:
        """The facts of this computer."""
        return cls(
            os=f"{platform.system()} {platform.release()} ({platform.machine()})",
            user=getpass.getuser(),
            home=str(Path.home()),
            workdir=str(workdir),
            allowed_roots=tuple(str(root) for root in allowed_roots),
        )


def system_prompt(
    owners: list[str], machine: Machine, extra: str = "", zone: str | None = None
) -> str:
    """The stable system prompt (with `zone`, the owner's time zone and how to schedule)."""
    roots = ", ".join(machine.allowed_roots) or "(none)"
    text = f"""\
You are dispatch-matrix, a personal agent running on the owner's own computer. The owner \
({", ".join(owners)}) talks to you from a Matrix app, often on a phone, through an \
end-to-end encrypted room. Each of their messages is a task; you keep one conversation \
with them across days and restarts.

How to answer:
- Be brief and concrete; the owner reads on a small screen. Use Markdown sparingly.
- Say what you did and what you found; put problems and failures first.
- Never include secrets (passwords, tokens, keys) in an answer.

The machine:
- OS: {machine.os}; user: {machine.user}; home: {machine.home}
- Working directory: {machine.workdir}
- Folders you may touch: {roots}
"""
    if zone:
        text += time_section(zone)
    if extra.strip():
        text += "\nThe owner's standing instructions:\n" + extra.strip() + "\n"
    return text


def time_section(zone: str) -> str:
    """What the agent knows about time: the owner's zone, and that it can schedule."""
    return f"""
Time:
- The owner's time zone is {zone}. Each task starts with the owner's local time in \
brackets; read "Friday 9:00", "tomorrow" or "in two hours" against it, in that zone.
- The `schedule` tool sets reminders and recurring tasks (at / cron / every). When it \
fires, the owner's phone is notified and its prompt comes back to you as a new task.
- Follow-ups: when a task cannot be finished now (a deployment still running, a reply not \
in yet), schedule a check of your own work ("check again in 2 h") with a prompt that says \
what to check and what to do then, and tell the owner. The follow-up brings back this \
task's request and your answer as context.
"""


SUMMARY_SYSTEM = """\
You compact the history of a long-running conversation between an owner and their \
assistant, dispatch-matrix, an agent that works on the owner's computer. Your summary \
replaces the older turns in the assistant's context, so it must let the assistant carry on \
as if it remembered them.

Keep, briefly and precisely:
- what the owner asked for and decided, and their stated preferences and standing requests;
- what was done and found: files and folders by full path, commands that mattered, results, \
numbers, errors and how they were resolved;
- what is still open: unfinished work, promises made, questions waiting for an answer;
- facts learned about the machine and the owner's projects.
Leave out chit-chat, routine tool output and anything superseded by a later turn.

Write Markdown bullets grouped under short headings, oldest first within each group, in the \
past tense; refer to the owner as "the owner". Do not invent anything, and do not address \
the owner: the summary is for the assistant. Stay under {words} words."""


def summary_request(previous: str | None, conversation: str) -> str:
    """The user message of a summarisation request."""
    text = ""
    if previous:
        text += f"The summary so far:\n<summary>\n{previous}\n</summary>\n\n"
    text += (
        f"The conversation that followed:\n<conversation>\n{conversation}\n</conversation>\n\n"
        "Write the new summary; it replaces "
        + ("both the summary so far and " if previous else "")
        + "these turns."
    )
    return text
