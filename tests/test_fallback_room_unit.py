"""Where the owner is told of an answer that could not go to its room (pure)."""

from __future__ import annotations

import pytest

from dispatch_matrix.ids import RoomID, UserID
from dispatch_matrix.matrix.router import fallback_room

ME, ANN, BOB = UserID("@bot:hs"), UserID("@ann:hs"), UserID("@bob:hs")
OWNERS = frozenset({ANN, BOB})


def rooms(**members: set[UserID]) -> dict[RoomID, frozenset[UserID]]:
    return {RoomID(f"!{name}"): frozenset(users) for name, users in members.items()}


@pytest.mark.parametrize(
    "known, owner, expected",
    [
        # The kicked room is not a way to tell anyone; the DM is.
        (rooms(kicked={ANN}, dm={ME, ANN}), ANN, "!dm"),
        # The smallest room the owner shares with the bot: their DM before a group.
        (rooms(kicked={ANN}, group={ME, ANN, BOB}, dm={ME, ANN}), ANN, "!dm"),
        # Never another owner's DM: the answer is the task's owner's.
        (rooms(kicked={ANN}, bobs={ME, BOB}), ANN, None),
        # A room the bot has left too is no way to tell anyone.
        (rooms(kicked={ANN}, left={ANN}), ANN, None),
        # No task (a notice): any owner's room.
        (rooms(kicked={ANN}, bobs={ME, BOB}), None, "!bobs"),
        (rooms(kicked={ME, ANN}), ANN, None),
    ],
)
def test_fallback_room(
    known: dict[RoomID, frozenset[UserID]], owner: UserID | None, expected: str | None
) -> None:
    assert fallback_room(known, RoomID("!kicked"), owner, OWNERS, ME) == expected
