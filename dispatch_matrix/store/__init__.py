"""Our state in one SQLite file: the task ledger, the transcript, the Matrix session."""

from .db import Database
from .models import Task, TaskState

__all__ = ["Database", "Task", "TaskState"]
