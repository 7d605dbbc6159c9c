"""`dispatch-matrix status`: the login, whether the daemon runs, and the task queue."""

from __future__ import annotations

import fcntl
from collections.abc import Callable

from .config import Config
from .state import StateFolder
from .store import Database, TaskState


def _daemon_running(state: StateFolder) -> str | None:
    if not state.lock_path.exists():
        return None
    with state.lock_path.open("r") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "?"
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return None


def show_status(config: Config, say: Callable[[str], None]) -> int:
    """Print the status; 0 if a daemon is running, 1 if not."""
    state = StateFolder(config.state_dir)
    if not state.db_path.exists():
        say(f"No state yet in {state.root}: run `dispatch-matrix init`, then `run`.")
        return 1
    db = Database.open(state.db_path)
    try:
        session = db.session()
        pid = _daemon_running(state)
        say(f"daemon:  {'running (pid ' + pid + ')' if pid else 'not running'}")
        if session:
            say(f"bot:     {session.user_id}  device {session.device_id}")
            say(f"server:  {session.homeserver}")
        counts = db.count_tasks()
        summary = ", ".join(f"{n} {state_}" for state_, n in sorted(counts.items())) or "none"
        say(f"tasks:   {summary}")
        for task in db.tasks_in(TaskState.RUNNING, TaskState.QUEUED, limit=10):
            first_line = task.body.splitlines()[0][:60] if task.body else ""
            say(f"  {task.short_id} {task.state}: {first_line}")
        return 0 if pid else 1
    finally:
        db.close()
