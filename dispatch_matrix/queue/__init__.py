"""The room as a queue: owner messages become tasks, run one at a time, in order."""

from .worker import Worker

__all__ = ["Worker"]
