"""Time as an input: the pure "what fires next" core, the owner's zone, and the agent's
`schedule` tool, firing due schedules into the queue (`firing.py`), reminders and follow-ups
(`reminders.py`) and the daily digest (`digest.py`). The clock seam they read is
`core/clock.py`. Schedules, their fires and the list entries are its tables (`tables.py`;
their schema is a step of the store's one migration list).

May import `core`, `store`, `queue` (a due schedule becomes a task), `agent` and `toolbox`
(the `schedule` tool)."""

from dispatch_matrix.schedule.timing import ScheduleError, ScheduleKind, Spec

__all__ = ["ScheduleError", "ScheduleKind", "Spec"]
