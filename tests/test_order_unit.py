"""The order an xdist run hands tests out in (tests/harness/order.py): longest expected
first, by last run's seconds where known, else end-to-end before unit."""

from __future__ import annotations

import pytest
from harness.order import E2E_GUESS_S, Planned, expected_seconds, longest_first, merged, tier_of

UNIT = Planned("tests/test_units.py::test_a", e2e=False)
E2E = Planned("tests/test_agent_e2e.py::test_b", e2e=True)


@pytest.mark.parametrize(
    ("test", "last", "expected"),
    [
        (E2E, {}, E2E_GUESS_S),
        (UNIT, {}, 0.0),
        # Measured beats guessed, either way.
        (E2E, {E2E.nodeid: 61.5}, 61.5),
        (E2E, {E2E.nodeid: 0.4}, 0.4),
        (UNIT, {UNIT.nodeid: 12.0}, 12.0),
        # Another test's time says nothing about this one.
        (UNIT, {E2E.nodeid: 30.0}, 0.0),
    ],
)
def test_expected_seconds(test: Planned, last: dict[str, float], expected: float) -> None:
    assert expected_seconds(test, last) == expected


def named(*tests: tuple[str, bool]) -> list[Planned]:
    return [Planned(name, e2e=e2e) for name, e2e in tests]


@pytest.mark.parametrize(
    ("tests", "last", "order"),
    [
        # A fresh clone (CI): every end-to-end test before every unit test, each group in
        # collection order.
        (
            named(("u1", False), ("e1", True), ("u2", False), ("e2", True)),
            {},
            ["e1", "e2", "u1", "u2"],
        ),
        # Known seconds: the longest first, whatever the kind.
        (
            named(("u1", False), ("e1", True), ("e2", True), ("e3", True)),
            {"e1": 3.0, "e2": 70.0, "e3": 20.0, "u1": 5.0},
            ["e2", "e3", "u1", "e1"],
        ),
        # Partly known: a new end-to-end test is guessed between the measured ones.
        (
            named(("e1", True), ("new", True), ("e2", True), ("u1", False)),
            {"e1": 2.0, "e2": 60.0},
            ["e2", "new", "e1", "u1"],
        ),
        # Equal times keep collection order.
        (named(("a", False), ("b", False), ("c", False)), {}, ["a", "b", "c"]),
        ([], {}, []),
    ],
)
def test_longest_first(tests: list[Planned], last: dict[str, float], order: list[str]) -> None:
    assert [tests[i].nodeid for i in longest_first(tests, last)] == order


def test_a_run_of_one_file_keeps_the_other_files_durations() -> None:
    old = {"tests/a.py::t": 4.0, "tests/b.py::t": 9.0}
    assert merged(old, {"tests/a.py::t": 6.0, "tests/c.py::t": 1.0}) == {
        "tests/a.py::t": 6.0,
        "tests/b.py::t": 9.0,
        "tests/c.py::t": 1.0,
    }


@pytest.mark.parametrize(
    ("markers", "tier"),
    [
        ((), "unit"),
        (("asyncio",), "unit"),
        (("worker",), "worker"),
        (("e2e",), "e2e"),
        (("e2e", "drill"), "drill"),
        (("claude_code", "e2e"), "e2e"),
        (("claude_code",), "claude_code"),
    ],
)
def test_a_test_is_counted_in_the_first_tier_its_markers_name(
    markers: tuple[str, ...], tier: str
) -> None:
    assert tier_of(markers) == tier
