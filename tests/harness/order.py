"""The order an xdist run hands tests to its workers: longest first.

Workers take the next test from one list as they come free, so the run ends when the last
long test does. Started first, the minute-long end-to-end tests overlap one another and the
thousands of quick unit tests fill the gaps at the end (longest processing time first). A
test's length is what it took last time in this checkout (pytest's cache); a fresh clone,
as on CI, knows none and guesses from what the test starts: Synapse or not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# Where the last run's seconds per test are kept (pytest's cache, .pytest_cache/).
DURATIONS_KEY = "dispatch/durations"
# The guess for an end-to-end test never timed here: about 1,000 s over 110 such tests
# (issue 29's count). A unit test is guessed at nothing: they take milliseconds.
E2E_GUESS_S = 9.0


@dataclass(frozen=True)
class Planned:
    """One collected test, as the ordering sees it."""

    nodeid: str
    # It starts Synapse (the e2e marker, or the homeserver fixture).
    e2e: bool


def expected_seconds(test: Planned, last: Mapping[str, float]) -> float:
    """How long the test should take: its last time here, else the guess for its kind."""
    if test.nodeid in last:
        return last[test.nodeid]
    return E2E_GUESS_S if test.e2e else 0.0


def longest_first(tests: Sequence[Planned], last: Mapping[str, float]) -> list[int]:
    """The indexes of `tests`, longest expected first; ties keep collection order (the
    sort is stable), so unit tests stay grouped by module."""
    return sorted(range(len(tests)), key=lambda i: -expected_seconds(tests[i], last))


def merged(old: Mapping[str, float], new: Mapping[str, float]) -> dict[str, float]:
    """The durations to keep: this run's where it ran a test, the old ones elsewhere (a
    run of one file must not forget the others)."""
    return {**old, **new}


# The suite's tiers, the first marker a test carries deciding (a drill through Synapse is a
# drill): where the suite's minutes go, said at the end of every run.
TIERS = ("drill", "e2e", "claude_code", "worker")


def tier_of(keywords: Iterable[str]) -> str:
    """The tier of a test by its markers (pure): a drill, end to end, the Claude Code
    engine, the worker tier, or a unit test."""
    names = set(keywords)
    return next((tier for tier in TIERS if tier in names), "unit")
