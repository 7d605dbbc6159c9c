"""The room as a queue: owner messages become tasks, run one at a time, in order; control
commands, approvals, the mirror of each task's state, and keeping the computer awake while
a task runs.

May import `core`, `store`, `matrix` (the room it answers in), `agent`, `toolbox`,
`permissions` and `connectors`; never `app` nor another feature (`identity`, `voice`,
`schedule`)."""

from dispatch_matrix.queue.worker import Worker

__all__ = ["Worker"]
