"""The encrypted DM `init` opens with each owner, so the owner only taps "accept".

The caller cross-signs the bot's device before any room exists (a strict client, MSC4153,
would otherwise withhold its room keys from the bot and never re-send them); then one room per
owner, created as Element creates a DM: `trusted_private_chat` (the invited owner gets the
creator's power level, 100), `is_direct`, Megolm encryption from the first event, and the
room listed in the bot's `m.direct`. The room is recorded in the store, where the daemon
finds it and sends its one welcome once the owner has joined.
"""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import DispatchError, HomeserverError, TrustError
from dispatch_matrix.core.ids import RoomID, UserID
from dispatch_matrix.matrix import uia
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.store.matrix_tables import RoomQueries

log = logs.get(__name__)

MEGOLM = "m.megolm.v1.aes-sha2"


@dataclass(frozen=True)
class OpenedDM:
    """The DM with one owner: created now, or found from an earlier init."""

    owner: UserID
    room_id: RoomID
    created: bool


def dm_create_body(owner: str) -> dict[str, Any]:
    """The /createRoom body of a DM with one owner.

    The preset gives the invited owner the bot's own standing, as in any DM Element makes:
    power 100 (before room version 12) or a second creator (from 12 on, where creators
    outrank every power level and may not be listed in it). The owner owns the room as much
    as the bot does (may kick it, change its settings, end it); nobody else is in it, and
    anyone invited later makes the bot stop obeying there (the privacy watch).
    """
    return {
        "preset": "trusted_private_chat",
        "is_direct": True,
        "invite": [owner],
        "initial_state": [
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}},
            # Nobody who joins later reads what was said before they were invited.
            {
                "type": "m.room.history_visibility",
                "state_key": "",
                "content": {"history_visibility": "invited"},
            },
        ],
    }


async def open_owner_dms(
    client: MatrixClient,
    db: RoomQueries,
    owners: list[str],
) -> list[OpenedDM]:
    """Make sure each owner has an encrypted DM with the bot (one init made before and the
    bot is still in is kept); recorded in the store. Call it only once the bot's device is
    cross-signed: the owner's strict client would share no keys with the bot otherwise.
    """
    # Messages the owner sends from now on are tasks, also those sent before the first `run`
    # (the daemon treats anything older than the bot's birth as history).
    if db.get_meta("born_ms") is None:
        db.set_meta("born_ms", str(int(time.time() * 1000)))
    joined = await _joined_rooms(client)
    earlier: dict[str, RoomID] = {
        room.owner: room.room_id
        for room in db.owner_rooms()
        if room.opened_by == "bot" and room.room_id in joined
    }
    opened = []
    for owner in owners:
        if owner in earlier:
            opened.append(OpenedDM(UserID(owner), earlier[owner], created=False))
            continue
        room_id = await _create(client, owner)
        db.add_owner_room(room_id, UserID(owner), opened_by="bot")
        log.info("room.dm_created", room=room_id, owner=owner)
        opened.append(OpenedDM(UserID(owner), room_id, created=True))
    await _list_as_direct(client, opened)
    return opened


async def _joined_rooms(client: MatrixClient) -> set[str]:
    reply = await client.api_ok("GET", "/_matrix/client/v3/joined_rooms")
    return {str(room) for room in reply.get("joined_rooms", [])}


async def _create(client: MatrixClient, owner: str) -> RoomID:
    status, reply = await client.api("POST", "/_matrix/client/v3/createRoom", dm_create_body(owner))
    if status != 200 or not reply.get("room_id"):
        code = reply.get("errcode", status)
        raise HomeserverError(
            f"could not open a DM with {owner}: {code} {reply.get('error', '')}".strip(),
            fix="check the owner's user id; or pass --no-dm and start a chat with the bot "
            "from Element",
        )
    return RoomID(str(reply["room_id"]))


async def _list_as_direct(client: MatrixClient, opened: list[OpenedDM]) -> None:
    """Add the rooms to the bot's `m.direct` (what clients read to call a room a DM)."""
    user = urllib.parse.quote(client.user_id, safe="")
    path = f"/_matrix/client/v3/user/{user}/account_data/m.direct"
    status, current = await client.api("GET", path)
    direct: dict[str, list[str]] = current if status == 200 else {}
    changed = False
    for dm in opened:
        rooms = list(direct.get(dm.owner, []))
        if dm.room_id not in rooms:
            direct[dm.owner] = [*rooms, dm.room_id]
            changed = True
    if changed:
        # Best effort: a room missing from m.direct is still the same encrypted room.
        status, _reply = await client.api("PUT", path, dict(direct))
        if status != 200:
            log.warning("room.direct_not_listed", status=status)


CANNOT_OPEN = (TrustError, uia.ApprovalInBrowser)


def why_not_opened(err: DispatchError) -> str:
    """What init says when it made no DM because the bot could not cross-sign first."""
    return (
        f"  no DM opened: {err.one_line()}\n"
        "  Once that is fixed, run init again with --force (the login is kept), or start a "
        "chat with the bot from Element."
    )
