"""The check-in digest: what the agent did since the last one, built from the ledger alone.

No model call: tasks that ended (done, failed, cancelled), the files its `write` and `edit`
calls changed under the allowed roots (read from the transcript, successful calls only),
the reminders ahead, and the tokens and cost from the usage table. `!digest` shows it on
demand; with `[schedule] digest_at` it is also posted once a day at that local time (a day
missed while the computer slept is posted once, late, on wake).

The window starts where the last daily digest ended, in the ledger's own time stamps (the
ones its rows carry); when it is due is read from the daemon's clock seam.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from dispatch_matrix.agent import usage
from dispatch_matrix.core import logs
from dispatch_matrix.queue.ports import Room
from dispatch_matrix.schedule import texts as schedule_texts
from dispatch_matrix.schedule.tables import ScheduleTables
from dispatch_matrix.schedule.timing import ScheduleKind, Spec, next_after
from dispatch_matrix.store import LedgerQueries

log = logs.get(__name__)

_WRITERS = ("write", "edit")
_SINCE_KEY = "digest_since"
_SENT_KEY = "digest_sent_at"
_FIRST_WINDOW = timedelta(days=1)


def files_written(
    messages: Iterable[dict[str, Any]], workdir: Path, roots: Iterable[Path]
) -> list[str]:
    """Paths that successful `write` / `edit` calls in these messages changed, under the
    roots, in first-written order (pure: paths are compared, not looked up)."""
    wanted: dict[str, str] = {}
    failed: set[str] = set()
    for message in messages:
        for block in message.get("content") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use" and block.get("name") in _WRITERS:
                path = (block.get("input") or {}).get("file_path")
                if isinstance(path, str) and path.strip():
                    wanted[str(block.get("id"))] = path
            elif block.get("type") == "tool_result" and block.get("is_error"):
                failed.add(str(block.get("tool_use_id")))
    bases = [Path(os.path.normpath(root.expanduser())) for root in roots]
    seen: list[str] = []
    for use_id, raw in wanted.items():
        if use_id in failed:
            continue
        path = Path(raw).expanduser()
        full = Path(os.path.normpath(path if path.is_absolute() else workdir / path))
        if any(full.is_relative_to(base) for base in bases) and str(full) not in seen:
            seen.append(str(full))
    return seen


def daily_spec(at: str) -> Spec:
    """The daily check-in time (`HH:MM`) as a cron schedule."""
    hour, minute = (int(part) for part in at.split(":"))
    return Spec(ScheduleKind.CRON, f"{minute} {hour} * * *")


class Digest:
    """Builds the digest text, and posts the daily one when it is due."""

    def __init__(
        self,
        schedules: ScheduleTables,
        ledger: LedgerQueries,
        room: Room,
        zone: ZoneInfo,
        workdir: Path,
        roots: list[Path],
        daily_at: str = "",
    ) -> None:
        self._schedules = schedules
        self._ledger = ledger
        self._room = room
        self._zone = zone
        self._workdir = workdir
        self._roots = roots
        self._daily = daily_spec(daily_at) if daily_at else None

    def text(self, ledger_now: float) -> str:
        """The digest since the last daily one (or the last day, before the first)."""
        stored = self._ledger.get_meta(_SINCE_KEY)
        since = float(stored) if stored else ledger_now - _FIRST_WINDOW.total_seconds()
        finished = self._ledger.tasks_finished_since(since)
        files: list[str] = []
        for task in finished:
            for path in files_written(
                self._ledger.task_messages(task.id), self._workdir, self._roots
            ):
                if path not in files:
                    files.append(path)
        ahead = self._schedules.active_schedules(limit=50)
        totals = usage.total(self._ledger.usage_rows(since=since))
        start = datetime.fromtimestamp(since, UTC)
        return schedule_texts.digest(start, finished, files, ahead, totals, self._zone)

    # -- the daily one -----------------------------------------------------------------------

    def next_at(self, now: datetime) -> datetime | None:
        """When the daily digest is next due (now or earlier if one is owed); None if off."""
        if self._daily is None:
            return None
        sent = self._sent_at(now)
        return next_after(self._daily, sent, sent, self._zone)

    def _sent_at(self, now: datetime) -> datetime:
        stored = self._ledger.get_meta(_SENT_KEY)
        if stored is None:
            # Switched on now: the first check-in is the next one ahead, not one owed.
            self._ledger.set_meta(_SENT_KEY, str(now.timestamp()))
            return now
        return datetime.fromtimestamp(float(stored), UTC)

    async def post_if_due(self, now: datetime, ledger_now: float) -> bool:
        """Post the daily digest if its time came (once however many days were missed)."""
        due = self.next_at(now)
        if due is None or due > now:
            return False
        room = self._ledger.latest_room()
        if room is None:
            log.info("digest.skipped", reason="no room yet")
        else:
            text = self.text(ledger_now)
            # Keyed by the due time: a crash between posting and recording posts nothing new.
            await self._room.post(room, text, key=f"digest-{int(due.timestamp())}")
            log.info("digest.posted", room=room, due=due.isoformat())
        self._ledger.set_meta(_SINCE_KEY, str(ledger_now))
        self._ledger.set_meta(_SENT_KEY, str(now.timestamp()))
        return True
