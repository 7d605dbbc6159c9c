"""Time as an input: the clock seam, the pure "what fires next" core, the owner's zone, and
the agent's `schedule` tool. Firing schedules into the queue is `queue/scheduler.py`'s."""

from .clock import Clock, SystemClock
from .timing import Kind, ScheduleError, Spec

__all__ = ["Clock", "Kind", "ScheduleError", "Spec", "SystemClock"]
