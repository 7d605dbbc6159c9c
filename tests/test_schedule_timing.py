"""The pure core of schedules: what fires next, what is due, how late — table tests with DST
changes in the owner's zone and an owner whose zone is not the machine's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from dispatch_matrix.schedule.timing import (
    ScheduleError,
    ScheduleKind,
    Spec,
    describe_delay,
    first_fire,
    is_due,
    local_text,
    next_after,
    parse_at,
    parse_every,
    parse_spec,
    plan,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
AUCKLAND = ZoneInfo("Pacific/Auckland")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def local(zone: ZoneInfo, *parts: int, fold: int = 0) -> datetime:
    return datetime(*parts, tzinfo=zone, fold=fold)  # type: ignore[misc]


# -- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "cron", "every", "expected"),
    [
        (
            "2026-12-04T09:00:00+01:00",
            None,
            None,
            Spec(ScheduleKind.AT, "2026-12-04T09:00:00+01:00"),
        ),
        (None, "0  9 * *   1-5", None, Spec(ScheduleKind.CRON, "0 9 * * 1-5")),
        (None, None, "2h", Spec(ScheduleKind.EVERY, "2h")),
        ("", " ", "30m", Spec(ScheduleKind.EVERY, "30m")),
    ],
)
def test_parse_spec_takes_exactly_one_form(
    at: str | None, cron: str | None, every: str | None, expected: Spec
) -> None:
    assert parse_spec(at, cron, every) == expected


@pytest.mark.parametrize(
    ("at", "cron", "every", "problem"),
    [
        (None, None, None, "exactly one"),
        ("2026-12-04T09:00:00+01:00", "0 9 * * *", None, "got: at, cron"),
        ("2026-12-04T09:00:00", None, None, "no offset"),
        ("next friday", None, None, "not an ISO 8601"),
        (None, "0 9 * * * *", None, "five-field"),
        (None, "0 9 * *", None, "five-field"),
        (None, "61 9 * * *", None, "five-field"),
        (None, "@daily", None, "five-field"),
        (None, None, "4m", "too often"),
        (None, None, "two hours", "not an interval"),
        (None, None, "2x", "not an interval"),
    ],
)
def test_parse_spec_refuses_with_a_reason(
    at: str | None, cron: str | None, every: str | None, problem: str
) -> None:
    with pytest.raises(ScheduleError, match=problem):
        parse_spec(at, cron, every)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2h", 7200), ("30m", 1800), ("1d", 86400), ("1h30m", 5400), ("1D 2H", 93600), ("300s", 300)],
)
def test_parse_every(text: str, seconds: int) -> None:
    assert parse_every(text) == timedelta(seconds=seconds)


def test_parse_at_accepts_z_and_offsets() -> None:
    assert parse_at("2026-12-04T08:00:00Z") == utc(2026, 12, 4, 8)
    assert parse_at("2026-12-04T09:00+01:00") == utc(2026, 12, 4, 8)


# -- the first fire -----------------------------------------------------------------------

NOW = utc(2026, 12, 1, 10, 0)


@pytest.mark.parametrize(
    ("spec", "zone", "expected"),
    [
        (Spec(ScheduleKind.AT, "2026-12-04T09:00:00+01:00"), BERLIN, utc(2026, 12, 4, 8)),
        (Spec(ScheduleKind.EVERY, "2h"), BERLIN, utc(2026, 12, 1, 12)),
        (Spec(ScheduleKind.EVERY, "1d"), BERLIN, utc(2026, 12, 2, 10)),
        # Tuesday 10:00 UTC = 11:00 in Berlin: the next weekday 9:00 is Wednesday's.
        (Spec(ScheduleKind.CRON, "0 9 * * 1-5"), BERLIN, utc(2026, 12, 2, 8)),
        # Friday 9:00 in Auckland (NZDT, +13) is Thursday 20:00 UTC.
        (Spec(ScheduleKind.CRON, "0 9 * * 5"), AUCKLAND, utc(2026, 12, 3, 20)),
        (Spec(ScheduleKind.CRON, "0 9 * * 5"), NEW_YORK, utc(2026, 12, 4, 14)),
    ],
)
def test_first_fire(spec: Spec, zone: ZoneInfo, expected: datetime) -> None:
    assert first_fire(spec, NOW, zone) == expected


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (Spec(ScheduleKind.AT, "2026-12-01T09:00:00+01:00"), "already past"),
        (Spec(ScheduleKind.CRON, "*/2 * * * *"), "too often"),
        (Spec(ScheduleKind.CRON, "0 0 30 2 *"), "never fires"),
    ],
)
def test_first_fire_refuses(spec: Spec, problem: str) -> None:
    with pytest.raises(ScheduleError, match=problem):
        first_fire(spec, NOW, BERLIN)


# -- DST in the owner's zone ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "zone", "after", "expected_local"),
    [
        # Europe/Berlin springs forward on 2026-03-29 (02:00 → 03:00): 9:00 stays 9:00.
        (
            Spec(ScheduleKind.CRON, "0 9 * * *"),
            BERLIN,
            local(BERLIN, 2026, 3, 28, 9, 0, 30),
            local(BERLIN, 2026, 3, 29, 9, 0),
        ),
        # ... and falls back on 2026-10-25 (03:00 → 02:00): 9:00 stays 9:00.
        (
            Spec(ScheduleKind.CRON, "0 9 * * *"),
            BERLIN,
            local(BERLIN, 2026, 10, 24, 9, 0, 30),
            local(BERLIN, 2026, 10, 25, 9, 0),
        ),
        # 02:30 does not exist on the spring day: it fires just after the gap, at 03:30.
        (
            Spec(ScheduleKind.CRON, "30 2 * * *"),
            BERLIN,
            local(BERLIN, 2026, 3, 28, 12, 0),
            local(BERLIN, 2026, 3, 29, 3, 30),
        ),
        # 02:30 happens twice on the autumn day: it fires at the first ...
        (
            Spec(ScheduleKind.CRON, "30 2 * * *"),
            BERLIN,
            local(BERLIN, 2026, 10, 24, 12, 0),
            local(BERLIN, 2026, 10, 25, 2, 30, fold=0),
        ),
        # ... and not again at the second: the next is the day after.
        (
            Spec(ScheduleKind.CRON, "30 2 * * *"),
            BERLIN,
            local(BERLIN, 2026, 10, 25, 2, 30, fold=0),
            local(BERLIN, 2026, 10, 26, 2, 30),
        ),
        (
            Spec(ScheduleKind.CRON, "30 2 * * *"),
            BERLIN,
            local(BERLIN, 2026, 10, 25, 2, 10, fold=1),
            local(BERLIN, 2026, 10, 26, 2, 30),
        ),
        # America/New_York springs forward on 2026-03-08: weekday 8:00 stays 8:00.
        (
            Spec(ScheduleKind.CRON, "0 8 * * 1-5"),
            NEW_YORK,
            local(NEW_YORK, 2026, 3, 6, 8, 0, 30),
            local(NEW_YORK, 2026, 3, 9, 8, 0),
        ),
        # Auckland falls back on 2026-04-05 (03:00 → 02:00): Sunday 9:00 stays 9:00.
        (
            Spec(ScheduleKind.CRON, "0 9 * * 0"),
            AUCKLAND,
            local(AUCKLAND, 2026, 3, 30, 12, 0),
            local(AUCKLAND, 2026, 4, 5, 9, 0),
        ),
    ],
)
def test_cron_follows_the_wall_clock_across_dst(
    spec: Spec, zone: ZoneInfo, after: datetime, expected_local: datetime
) -> None:
    got = next_after(spec, after, after.astimezone(UTC), zone)
    assert got == expected_local.astimezone(UTC)
    assert got is not None and got.astimezone(zone).strftime("%H:%M") == expected_local.strftime(
        "%H:%M"
    )


def test_every_day_keeps_the_local_time_across_dst() -> None:
    anchor = local(BERLIN, 2026, 3, 27, 9, 0).astimezone(UTC)
    spec = Spec(ScheduleKind.EVERY, "1d")
    fires = []
    after = anchor
    for _ in range(4):
        nxt = next_after(spec, anchor, after, BERLIN)
        assert nxt is not None
        fires.append(nxt.astimezone(BERLIN).strftime("%m-%d %H:%M %Z"))
        after = nxt
    assert fires == ["03-28 09:00 CET", "03-29 09:00 CEST", "03-30 09:00 CEST", "03-31 09:00 CEST"]
    # The day of the change is 23 real hours long.
    mar29 = next_after(spec, anchor, local(BERLIN, 2026, 3, 28, 9, 0, 1), BERLIN)
    assert mar29 is not None
    assert mar29 - local(BERLIN, 2026, 3, 28, 9, 0) == timedelta(hours=23)


def test_every_two_hours_is_real_time_across_dst() -> None:
    anchor = local(BERLIN, 2026, 3, 29, 0, 0).astimezone(UTC)
    got = next_after(Spec(ScheduleKind.EVERY, "2h"), anchor, anchor, BERLIN)
    assert got is not None and got - anchor == timedelta(hours=2)
    # Midnight + 2 real hours is 03:00 on the clock that day (02:00 never happened).
    assert got.astimezone(BERLIN).strftime("%H:%M") == "03:00"


@pytest.fixture
def machine_in_los_angeles(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_an_owner_in_another_zone_than_the_machine(machine_in_los_angeles: None) -> None:
    assert time.strftime("%Z") in ("PST", "PDT"), "the machine's zone is Los Angeles"
    # Thursday 2026-12-03 12:00 UTC is Friday 01:00 in Auckland and Thursday 04:00 in LA.
    after = utc(2026, 12, 3, 12)
    got = next_after(Spec(ScheduleKind.CRON, "0 9 * * 5"), after, after, AUCKLAND)
    assert got == local(AUCKLAND, 2026, 12, 4, 9, 0).astimezone(UTC)
    assert local_text(got, AUCKLAND) == "Fri 2026-12-04 09:00 NZDT"
    # The same cron read in the machine's zone would be a day and many hours later.
    assert got != next_after(Spec(ScheduleKind.CRON, "0 9 * * 5"), after, after, ZoneInfo("UTC"))


# -- due, late, and missed periods --------------------------------------------------------


@pytest.mark.parametrize(
    ("next_at", "now", "due"),
    [
        (utc(2026, 12, 1, 10), utc(2026, 12, 1, 9, 59, 59), False),
        (utc(2026, 12, 1, 10), utc(2026, 12, 1, 10), True),
        (utc(2026, 12, 1, 10), utc(2026, 12, 5), True),
        (None, utc(2026, 12, 5), False),
    ],
)
def test_is_due(next_at: datetime | None, now: datetime, due: bool) -> None:
    assert is_due(next_at, now) is due


def test_a_one_shot_on_time_is_done_and_not_late() -> None:
    due = utc(2026, 12, 1, 10)
    p = plan(
        Spec(ScheduleKind.AT, "2026-12-01T10:00:00Z"), NOW, due, due + timedelta(seconds=5), BERLIN
    )
    assert p.next_at is None and not p.is_late and p.late == timedelta(seconds=5)


def test_a_recurring_one_after_a_long_stop_fires_once_and_resumes_from_now() -> None:
    anchor = utc(2026, 11, 20, 8)
    due = utc(2026, 11, 21, 8)
    now = utc(2026, 11, 26, 10, 10)
    p = plan(Spec(ScheduleKind.EVERY, "1d"), anchor, due, now, BERLIN)
    assert p.is_late and describe_delay(p.late) == "5 d 2 h"
    # The next one is tomorrow's 9:00 in Berlin, not the 22nd, 23rd, ... it missed.
    assert p.next_at == utc(2026, 11, 27, 8)
    cron = plan(Spec(ScheduleKind.CRON, "0 9 * * *"), anchor, due, now, BERLIN)
    assert cron.next_at == utc(2026, 11, 27, 8)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (30, "30 s"),
        (45 * 60, "45 min"),
        (7800, "2 h 10 min"),
        (7200, "2 h"),
        (3 * 86400 + 4 * 3600 + 59, "3 d 4 h"),
        (86400, "1 d"),
    ],
)
def test_describe_delay(seconds: int, text: str) -> None:
    assert describe_delay(timedelta(seconds=seconds)) == text
