"""A device whose keys were lost here, replaced at a login: deleted from the account, said
by init on the console and by run in every room, once.

`connect.retire_device` (the login's lifecycle, run and init alike) writes what
`start_notices.announce_replacement` reads; the two live in different modules since init
retires a device too, so this holds them to one record."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
from test_sync_news_unit import FakeOutbox

from dispatch_matrix.app.connect import retire_device
from dispatch_matrix.app.onboarding import _retire_lost
from dispatch_matrix.app.start_notices import announce_replacement
from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.matrix import texts
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.outbox import Outbox
from dispatch_matrix.store import Database

REFUSED = HomeserverError("device deletion is not allowed here", fix="delete OLDDEV in Element")


class Nio:
    def __init__(self) -> None:
        self.rooms = {"!a:hs": object(), "!b:hs": object()}


class Client:
    """The bot's client as the replacement uses it: its rooms, its device, a deletion."""

    def __init__(self, refusal: HomeserverError | None = None) -> None:
        self.client = Nio()
        self.device_id = "NEWDEV"
        self.deleted: list[tuple[str, str | None]] = []
        self._refusal = refusal

    async def delete_device(self, device_id: str, password: str | None) -> None:
        if self._refusal is not None:
            raise self._refusal
        self.deleted.append((device_id, password))


@pytest.mark.parametrize("refusal", [None, REFUSED])
async def test_each_room_hears_of_the_replaced_device_once_with_what_became_of_it(
    tmp_path: Path, refusal: HomeserverError | None
) -> None:
    db = Database.open(tmp_path / "d.db")
    client, outbox = Client(refusal), FakeOutbox()
    bot = cast(MatrixClient, client)
    await retire_device(bot, db, "OLDDEV", "secret")
    assert client.deleted == ([] if refusal else [("OLDDEV", "secret")])
    await announce_replacement(bot, db, cast(Outbox, outbox))
    removal = None if refusal is None else refusal.one_line()
    said = texts.device_replaced("OLDDEV", "NEWDEV", removal)
    assert outbox.posts == [("!a:hs", said), ("!b:hs", said)]
    # Told once: a later start says nothing more.
    await announce_replacement(bot, db, cast(Outbox, outbox))
    assert len(outbox.posts) == 2


@pytest.mark.parametrize(
    "refusal, line",
    [
        (None, "  the old device OLDDEV (its keys were lost here) was deleted from the account."),
        (
            REFUSED,
            "  the old device OLDDEV (its keys were lost here) is still on the account: "
            "device deletion is not allowed here — delete OLDDEV in Element",
        ),
    ],
)
async def test_init_says_whether_the_device_it_replaced_was_deleted_and_the_fix_if_not(
    tmp_path: Path, refusal: HomeserverError | None, line: str
) -> None:
    db = Database.open(tmp_path / "d.db")
    said: list[str] = []
    await _retire_lost(cast(MatrixClient, Client(refusal)), db, "OLDDEV", "secret", said.append)
    assert said == [line]
