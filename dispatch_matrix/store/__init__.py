"""Our state: the state folder (its layout, privacy, lock and local secrets, `state.py`) and
the one SQLite file in it: the task ledger, the transcript, the Matrix session.

Imports `core` only."""

from dispatch_matrix.store.db import Database
from dispatch_matrix.store.models import Task, TaskState

__all__ = ["Database", "Task", "TaskState"]
