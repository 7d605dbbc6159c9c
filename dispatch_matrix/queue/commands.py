"""Control commands: parsed by a pure function, answered without the model.

`!help`, `!status`, `!queue`, `!cancel [id]`, `!pause`, `!resume`, `!retry [id]`, `!new`,
`!history [n]`, `!compact`, `!memory`, `!usage`, `!model [name]`, `!tools`, `!reminders`,
`!cancel-reminder ID`, `!digest`. Anything else starting with `!` gets the help text, never
the model.
"""

from __future__ import annotations

from dataclasses import dataclass

NAMES = (
    "help",
    "status",
    "queue",
    "cancel",
    "pause",
    "resume",
    "retry",
    "new",
    "history",
    "compact",
    "memory",
    "usage",
    "model",
    "reminders",
    "cancel-reminder",
    "digest",
    "tools",
)


@dataclass(frozen=True)
class Command:
    """A parsed control command."""

    name: str
    arg: str = ""

    @property
    def task_id(self) -> int | None:
        """The task number the argument names (`#3`, `3`), if any."""
        text = self.arg.strip().lstrip("#")
        return int(text) if text.isdigit() else None


def parse(body: str) -> Command | None:
    """The command in a message, or None if the message is ordinary work."""
    text = body.strip()
    if not text.startswith("!") or text.startswith("!!"):
        return None
    word, _, rest = text[1:].partition(" ")
    name = word.lower()
    if name not in NAMES:
        return Command("unknown", word)
    return Command(name, rest.strip())
