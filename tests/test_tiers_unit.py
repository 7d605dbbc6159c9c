"""The tiers' guard: a test that reaches Synapse without the e2e marker is named, so the
collection hook in tests/conftest.py can refuse the run."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from conftest import without_e2e_marker


@dataclass
class Item:
    """What the guard reads of a collected test."""

    nodeid: str
    fixturenames: list[str]
    markers: list[str] = field(default_factory=list)

    def get_closest_marker(self, name: str) -> str | None:
        return name if name in self.markers else None


@pytest.mark.parametrize(
    "item, named",
    [
        (Item("t::direct", ["homeserver"]), True),
        # make_bot, owner_client and shared_dm bring the homeserver along: pytest lists
        # every fixture a test reaches in fixturenames.
        (Item("t::through_make_bot", ["make_bot", "homeserver", "fake_api"]), True),
        (Item("t::marked", ["make_bot", "homeserver"], ["e2e"]), False),
        (Item("t::marked_drill_only", ["homeserver"], ["drill"]), True),
        (Item("t::worker", ["make_bench", "fake_api"], ["worker"]), False),
        (Item("t::unit", ["tmp_path"]), False),
    ],
)
def test_only_a_synapse_test_without_the_e2e_marker_is_named(item: Item, named: bool) -> None:
    assert without_e2e_marker([item]) == ([item.nodeid] if named else [])  # type: ignore[list-item]
