"""When a schedule fires: pure functions of (spec, anchor, now, zone), no clock, no I/O.

A schedule is one of three kinds:
- `at`: one instant, ISO 8601 with an offset (a naive time is refused: it would be read in
  whichever zone the reader guessed);
- `cron`: five fields (minute hour day month weekday) read in the owner's zone;
- `every`: an interval (`30m`, `2h`, `1d`, `1h30m`) counted from the moment it was set.

Cron and whole-day intervals follow the owner's wall clock across DST changes: "every day
at 9" stays at 9:00 local when the offset moves. They are computed on naive local times
(croniter parses and matches the fields) and only then placed in the zone with `zoneinfo`:
a local time that does not exist (the spring-forward gap) lands just after the gap, one that
happens twice (autumn) means its first occurrence. Intervals shorter than a day are spans of
real time (every 30 minutes is 30 real minutes, whatever the offset does).

A recurring schedule that missed periods (the computer slept, the bot was down) fires once
for all of them, late, and then resumes from now: `plan` collapses the missed periods.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter

from dispatch_matrix.core.errors import DispatchError

# Later than this past its time, a fire is "late" and says by how much.
LATE_AFTER = timedelta(seconds=60)
# A recurring schedule may not fire more often than this (a task each time costs money).
MIN_PERIOD = timedelta(minutes=5)

_EVERY_PART = re.compile(r"(\d+)\s*(d|h|m|s)", re.I)
_EVERY_WHOLE = re.compile(r"^\s*(?:\d+\s*[dhms]\s*)+$", re.I)
_UNIT = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_MAX_CRON_STEPS = 2_000


class ScheduleError(DispatchError):
    """A schedule's time cannot be understood or would never fire; the message says why."""


class ScheduleKind(enum.StrEnum):
    """Which of the three forms a schedule takes."""

    AT = "at"
    CRON = "cron"
    EVERY = "every"


@dataclass(frozen=True)
class Spec:
    """A schedule's timing as the owner (or the model) gave it, validated."""

    kind: ScheduleKind
    value: str

    @property
    def recurring(self) -> bool:
        """Whether it fires more than once."""
        return self.kind is not ScheduleKind.AT


@dataclass(frozen=True)
class Plan:
    """What firing a due schedule now means: the time it was due, how late it is, and the
    next time (None: it is done)."""

    due_at: datetime
    late: timedelta
    next_at: datetime | None

    @property
    def is_late(self) -> bool:
        """Whether the fire is late enough to say so."""
        return self.late >= LATE_AFTER


def parse_spec(at: str | None = None, cron: str | None = None, every: str | None = None) -> Spec:
    """Exactly one of the three forms, checked; raises ScheduleError otherwise."""
    given = [
        (kind, value.strip())
        for kind, value in (
            (ScheduleKind.AT, at),
            (ScheduleKind.CRON, cron),
            (ScheduleKind.EVERY, every),
        )
        if value is not None and str(value).strip()
    ]
    if len(given) != 1:
        names = ", ".join(kind.value for kind, _ in given) or "none"
        raise ScheduleError(f"give exactly one of at, cron or every (got: {names})")
    kind, value = given[0]
    if kind is ScheduleKind.AT:
        parse_at(value)
    elif kind is ScheduleKind.CRON:
        value = " ".join(value.split())
        _check_cron(value)
    else:
        parse_every(value)
    return Spec(kind, value)


def parse_at(text: str) -> datetime:
    """An ISO 8601 instant with an offset (or Z), as an aware datetime."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ScheduleError(
            f"at: {text!r} is not an ISO 8601 time such as 2026-06-05T09:00:00+02:00"
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise ScheduleError(
            f"at: {text!r} has no offset; add the owner's, e.g. {text.strip()}+02:00"
        )
    return when


def parse_every(text: str) -> timedelta:
    """An interval such as `2h`, `30m`, `1d`, `1h30m`; at least MIN_PERIOD."""
    if not _EVERY_WHOLE.match(text):
        raise ScheduleError(f"every: {text!r} is not an interval such as 30m, 2h, 1d or 1h30m")
    seconds = sum(int(n) * _UNIT[unit.lower()] for n, unit in _EVERY_PART.findall(text))
    span = timedelta(seconds=seconds)
    if span < MIN_PERIOD:
        raise ScheduleError(f"every: {text!r} is too often; the shortest interval is 5m")
    return span


def _check_cron(expression: str) -> None:
    fields = expression.split()
    if len(fields) != 5 or not croniter.is_valid(expression):
        raise ScheduleError(
            f"cron: {expression!r} is not a five-field expression (minute hour day month "
            "weekday), e.g. '0 9 * * 1-5' for 9:00 on weekdays"
        )


def first_fire(spec: Spec, now: datetime, zone: ZoneInfo) -> datetime:
    """When a schedule set at `now` fires first; raises ScheduleError if never or too often."""
    if spec.kind is ScheduleKind.AT:
        when = parse_at(spec.value)
        if when <= now:
            shown = when.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z")
            raise ScheduleError(f"at: {spec.value} ({shown}) is already past")
        return when.astimezone(UTC)
    first = next_after(spec, now, now, zone)
    assert first is not None
    if spec.kind is ScheduleKind.CRON:
        second = next_after(spec, now, first, zone)
        if second is not None and second - first < MIN_PERIOD:
            raise ScheduleError(
                f"cron: {spec.value!r} fires too often; recurring schedules fire at most every "
                "5 minutes"
            )
    return first


def next_after(spec: Spec, anchor: datetime, after: datetime, zone: ZoneInfo) -> datetime | None:
    """The first fire strictly after `after` (UTC); None for a one-shot past its time.

    `anchor` is when the schedule was set: `every` counts its periods from there.
    """
    if spec.kind is ScheduleKind.AT:
        when = parse_at(spec.value).astimezone(UTC)
        return when if when > after else None
    if spec.kind is ScheduleKind.CRON:
        return _next_cron(spec.value, after, zone)
    return _next_every(parse_every(spec.value), anchor, after, zone)


def _next_cron(expression: str, after: datetime, zone: ZoneInfo) -> datetime:
    # Naive local wall time in, naive local wall time out: no DST arithmetic in croniter.
    # After a fall-back the same wall time comes twice; a candidate not later than `after`
    # (its first reading, already past) is skipped by the check below.
    start = after.astimezone(zone).replace(tzinfo=None, fold=0)
    try:
        it = croniter(expression, start)
        for _ in range(_MAX_CRON_STEPS):
            local: datetime = it.get_next(datetime)
            candidate = _place(local, zone)
            if candidate > after:
                return candidate
    except CroniterError as err:
        raise ScheduleError(f"cron: {expression!r} never fires ({err})") from None
    raise ScheduleError(f"cron: {expression!r} never fires")


def _next_every(span: timedelta, anchor: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    if span % timedelta(days=1):
        # Shorter or odd spans are real time.
        periods = max(0, math.floor((after - anchor) / span)) + 1
        return (anchor + periods * span).astimezone(UTC)
    # Whole days keep the anchor's local time of day.
    days = span.days
    base = anchor.astimezone(zone).replace(tzinfo=None, fold=0)

    def nth(k: int) -> datetime:
        return _place(base + timedelta(days=k * days), zone)

    k = max(1, math.floor((after - anchor) / span) + 1)
    while k > 1 and nth(k - 1) > after:
        k -= 1
    while nth(k) <= after:
        k += 1
    return nth(k)


def _place(local: datetime, zone: ZoneInfo) -> datetime:
    """A naive local wall time as an instant (UTC). With fold=0 zoneinfo reads a time in
    the spring-forward gap with the offset before the change (02:30 that never happened is
    03:30 new time) and a time that happens twice as its first occurrence."""
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)


def plan(spec: Spec, anchor: datetime, due_at: datetime, now: datetime, zone: ZoneInfo) -> Plan:
    """Firing a schedule that was due at `due_at`, now: how late, and when next.

    Missed periods collapse: the next time is the first one after `now`, not after
    `due_at`, so a recurring schedule fires once after a long sleep, not once per period.
    """
    late = max(now - due_at, timedelta(0))
    following = next_after(spec, anchor, max(now, due_at), zone) if spec.recurring else None
    return Plan(due_at=due_at, late=late, next_at=following)


def is_due(next_at: datetime | None, now: datetime) -> bool:
    """Whether a schedule whose next time is `next_at` should fire at `now`."""
    return next_at is not None and next_at <= now


def describe_delay(delay: timedelta) -> str:
    """A delay as a person says it: `2 h 10 min`, `3 d 4 h`, `45 min`, `30 s`."""
    seconds = int(delay.total_seconds())
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


def local_text(when: datetime, zone: ZoneInfo) -> str:
    """An instant as the owner reads it: `Fri 2026-06-05 09:00 CEST`."""
    return when.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z")
