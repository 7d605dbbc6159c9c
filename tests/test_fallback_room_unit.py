"""Where the owner is told of an answer that could not go to its room (pure), and that
each such answer is handed on to be told."""

from __future__ import annotations

import asyncio

import pytest

from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.core.ids import RoomID, UserID
from dispatch_matrix.matrix import texts
from dispatch_matrix.matrix.outbox import Undelivered
from dispatch_matrix.matrix.undelivered import fallback_room, tell_undelivered
from dispatch_matrix.store.matrix_tables import OutboxItem

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


@pytest.mark.parametrize(
    "code, task, says",
    [
        ("M_FORBIDDEN", "#3", "the answer to #3 in Work: I am no longer allowed to post there"),
        ("M_UNKNOWN_ROOM", "#3", "in Work: the room is gone"),
        ("M_BAD_JSON", None, "a message in Work: the homeserver refused it (M_BAD_JSON)"),
        (None, "#3", "in Work: it could not be sent there, however often I tried"),
    ],
)
def test_the_owner_is_told_why_with_the_text(code: str | None, task: str | None, says: str) -> None:
    told = texts.undeliverable("Work", code, task, "the answer itself")
    assert says in told and told.endswith("Here it is instead:\n\nthe answer itself")


async def test_each_undelivered_answer_is_told_in_turn_and_a_failure_to_tell_is_not_the_end() -> (
    None
):
    undelivered: asyncio.Queue[Undelivered] = asyncio.Queue()
    told: list[str] = []
    both = asyncio.Event()

    async def tell(item: OutboxItem, err: HomeserverError) -> None:
        told.append(item.txn_id)
        if len(told) == 2:
            both.set()
        if item.txn_id == "first":
            raise HomeserverError("no other room answered")

    for txn in ("first", "second"):
        item = OutboxItem(txn, RoomID("!kicked"), "m.room.message", {"body": txn}, 1, None)
        undelivered.put_nowait((item, HomeserverError("M_FORBIDDEN")))
    teller = asyncio.create_task(tell_undelivered(undelivered, tell))
    try:
        await asyncio.wait_for(both.wait(), 5)
    finally:
        teller.cancel()
    assert told == ["first", "second"]
