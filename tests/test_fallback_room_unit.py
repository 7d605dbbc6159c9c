"""Where the owner is told of an answer that could not go to its room (pure), that each
such answer is handed on to be told, and what telling it posts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.matrix import texts
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.failures import RequestRefused
from dispatch_matrix.matrix.outbox import Outbox, Undelivered
from dispatch_matrix.matrix.undelivered import (
    UndeliveredAnswers,
    fallback_room,
    tell_undelivered,
)
from dispatch_matrix.store import Database
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


class Room:
    def __init__(self, name: str, *users: str) -> None:
        self.display_name = name
        self.users = dict.fromkeys(users)


class Nio:
    def __init__(self, rooms: dict[str, Room]) -> None:
        self.rooms = rooms


class Client:
    def __init__(self, rooms: dict[str, Room]) -> None:
        self.client = Nio(rooms)
        self.user_id = ME


class Posts:
    """The outbox, as far as telling goes: what it was asked to post."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, str, dict[str, Any]]] = []

    async def post(self, room_id: str, text: str, **how: Any) -> str:
        self.posted.append((room_id, text, how))
        return "$told"


def answers(tmp_path: Path, rooms: dict[str, Room]) -> tuple[UndeliveredAnswers, Database, Posts]:
    db = Database.open(tmp_path / "d.db")
    posts = Posts()
    told = UndeliveredAnswers(
        asyncio.Queue(),
        cast(MatrixClient, Client(rooms)),
        db,
        cast(Outbox, posts),
        owners=OWNERS,
        # Every room here is private but the group, which Bob shares with a stranger.
        room_private=lambda room_id: room_id != "!group",
    )
    return told, db, posts


async def test_the_answer_goes_to_its_owners_other_private_room_with_why_and_its_text(
    tmp_path: Path,
) -> None:
    rooms = {
        "!kicked": Room("Work", ANN),
        "!dm": Room("Ann", ME, ANN),
        "!group": Room("Group", ME, ANN, BOB, "@stranger:hs"),
    }
    told, db, posts = answers(tmp_path, rooms)
    task = db.add_task(EventID("$work"), RoomID("!kicked"), ANN, "work", 1)
    assert task is not None
    item = OutboxItem(
        "t1.answer", RoomID("!kicked"), "m.room.message", {"body": "42"}, task.id, None
    )
    await told.tell(item, RequestRefused("PUT /send failed: M_FORBIDDEN", "M_FORBIDDEN"))
    [(room, text, how)] = posts.posted
    assert room == "!dm"
    assert text == texts.undeliverable("Work", "M_FORBIDDEN", task.short_id, "42")
    # One notice per undelivered answer, even when the telling is retried.
    assert how == {"notice": True, "key": "untold.t1.answer"}


@pytest.mark.parametrize(
    "txn, rooms",
    [
        # Telling failed too: never a notice about a notice.
        ("x-untold.t1.answer", {"!kicked": Room("Work", ANN), "!dm": Room("Ann", ME, ANN)}),
        # No private room left with the bot and an owner in it.
        ("t1.answer", {"!kicked": Room("Work", ANN), "!group": Room("Group", ME, ANN)}),
    ],
)
async def test_nothing_is_posted_when_there_is_no_one_to_tell_or_telling_failed(
    tmp_path: Path, txn: str, rooms: dict[str, Room]
) -> None:
    told, _db, posts = answers(tmp_path, rooms)
    item = OutboxItem(txn, RoomID("!kicked"), "m.room.message", {"body": "42"}, None, None)
    await told.tell(item, HomeserverError("gave up"))
    assert posts.posted == []
