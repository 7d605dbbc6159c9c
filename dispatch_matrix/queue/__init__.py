"""The room as a queue: owner messages become tasks, run one at a time, in order."""

from dispatch_matrix.queue.worker import Worker

__all__ = ["Worker"]
