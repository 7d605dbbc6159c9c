"""`dispatch-matrix status`: whether the daemon runs and is connected, since when, its last
error, the login, and the task queue (the current task first). Read from the state folder
alone: no login, so it works while the daemon holds the homeserver session.

Much of what it shows came from outside (an owner's or a model's task text, a homeserver's
answers, an error's message): every line goes through `terminal.safe`, one line each, so
none of it can command the terminal or pass for a line of its own."""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable

from dispatch_matrix import __version__
from dispatch_matrix.app import health
from dispatch_matrix.app.config import Config
from dispatch_matrix.app.preflight import state_problem
from dispatch_matrix.core import terminal
from dispatch_matrix.queue.awake import AWAKE_META
from dispatch_matrix.queue.texts import awake_line
from dispatch_matrix.store import Database, TaskState
from dispatch_matrix.store.state import StateFolder


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

    def line(text: str) -> None:
        say(terminal.safe(text))

    return _show(config, line)


def _show(config: Config, say: Callable[[str], None]) -> int:
    state = StateFolder(config.state_dir)
    if not state.db_path.exists():
        # A mistyped [store] path is not "no state yet": the login is beside the config.
        moved = state_problem(config)
        if moved is not None:
            raise moved
        say(f"No state yet in {state.root}: run `dispatch-matrix init`, then `run`.")
        return 1
    db = Database.open(state.db_path)
    try:
        session = db.session()
        pid = _daemon_running(state)
        say(f"daemon:    {'running (pid ' + pid + ')' if pid else 'not running'}")
        stale_ms = health.stale_after_ms(config.matrix.sync_timeout_ms)
        for line in health.describe(
            health.read(db), pid is not None, int(time.time() * 1000), stale_ms
        ):
            say(line)
        if session:
            say(f"bot:       {session.user_id}  device {session.device_id}")
            say(f"server:    {session.homeserver}")
        counts = db.count_tasks()
        summary = ", ".join(f"{n} {state_}" for state_, n in sorted(counts.items())) or "none"
        say(f"tasks:     {summary}")
        active = db.tasks_in(TaskState.RUNNING, TaskState.WAITING_APPROVAL, limit=1)
        if active:
            say(f"current:   {active[0].short_id} {active[0].state}: {active[0].title()}")
        else:
            say("current:   none")
        if pid:
            held = db.get_meta(AWAKE_META) == "1"
            say(f"awake:     {awake_line(config.agent.keep_awake, True, held)}")
        for task in db.tasks_in(TaskState.QUEUED, limit=10):
            say(f"  {task.short_id} {task.state}: {task.title()}")
        say(f"version:   {__version__} (this command)")
        return 0 if pid else 1
    finally:
        db.close()
