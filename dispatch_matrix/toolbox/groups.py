"""Process groups a task's tools started: recorded, so `!cancel` and the next start stop them.

The record lives in the store with this boot's id, so the start after a crash stops what the
dead run left behind, and a start after a reboot never signals a reused process id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

from dispatch_matrix.core import logs
from dispatch_matrix.store import Connection
from dispatch_matrix.toolbox.process import group_alive

log = logs.get(__name__)

# How long a group gets after SIGTERM before it is killed.
_KILL_GRACE_S = 1.0
_META_KEY = "process_groups"


def boot_id(source: Path = Path("/proc/sys/kernel/random/boot_id")) -> str:
    """This boot's id (Linux); "unknown" elsewhere, which never matches a recorded one."""
    try:
        return source.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


class ProcessGroups:
    """The groups the running task started, mirrored in the store."""

    def __init__(self, db: Connection, boot: str | None = None) -> None:
        self._db = db
        self._boot = boot if boot is not None else boot_id()
        self._groups: set[int] = set()
        # What the store holds now (None: not read yet), so an unchanged record costs no
        # transaction: a task that started no process ends without one.
        self._saved: str | None = None

    def register(self, pgid: int) -> None:
        """A tool started a process group: record it before anything else can happen."""
        self._groups.add(pgid)
        self._save()

    async def stop_all(self) -> None:
        """SIGTERM every recorded group, SIGKILL what is left after a grace period."""
        groups = sorted(self._groups)
        self._groups.clear()
        self._save()
        if groups:
            await asyncio.to_thread(_kill, groups)

    async def stop_orphans(self) -> None:
        """Stop the groups a previous run of this boot recorded and never cleared."""
        recorded = self._db.get_meta(_META_KEY) or ""
        boot, _, listed = recorded.partition(":")
        orphans = [int(g) for g in listed.split(",") if g.isdigit()]
        if boot == self._boot and orphans and self._boot != "unknown":
            log.warning("task.orphans_stopped", groups=orphans)
            await asyncio.to_thread(_kill, orphans)
        self._groups.clear()
        self._save()

    def forget(self) -> None:
        """The task ended and its tools stopped their own groups: clear the record."""
        self._groups.clear()
        self._save()

    def _save(self) -> None:
        listed = ",".join(map(str, sorted(self._groups)))
        value = f"{self._boot}:{listed}" if listed else ""
        if self._saved is None:
            self._saved = self._db.get_meta(_META_KEY)
        if value != self._saved:
            self._db.set_meta(_META_KEY, value)
            self._saved = value


def _kill(groups: list[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
                alive.append(pgid)
        if not alive or sig == signal.SIGKILL:
            return
        # Bounded, and only while stopping: the kernel tells no one when a group empties.
        deadline = time.monotonic() + _KILL_GRACE_S
        while time.monotonic() < deadline and any(group_alive(pgid) for pgid in alive):
            time.sleep(0.02)
        groups = [pgid for pgid in alive if group_alive(pgid)]
