"""Our state in one SQLite file: the task ledger, the transcript, the Matrix session."""

from dispatch_matrix.store.db import Database
from dispatch_matrix.store.models import Task, TaskState

__all__ = ["Database", "Task", "TaskState"]
