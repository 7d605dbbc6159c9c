"""One welcome per new DM: when the bot joins a DM at an owner's invite, or when the owner
joins the DM `init` opened, it says what it is, whom it obeys, and how to stop, approve and
get help. Once per room, remembered in the store across restarts.

The welcome is a notice sent as a status message is (`Urgency.PROGRESS`): within the rate
budget like every event, but only while the budget keeps a reserve for the next answer, so
it never delays one. It waits in its own task, never in the sync loop, and looks only when a
sync changed some room's state (members, encryption) while a recorded DM still waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from dispatch_matrix.core import logs
from dispatch_matrix.core.ids import RoomID, UserID
from dispatch_matrix.matrix import texts
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.outbox import Outbox
from dispatch_matrix.matrix.sender import Urgency
from dispatch_matrix.store.matrix_tables import RoomQueries

log = logs.get(__name__)


def ready(
    *,
    encrypted: bool,
    joined: Collection[str],
    invited: Collection[str],
    owners: Collection[str],
    bot: str,
) -> bool:
    """Whether a recorded DM is ready for its welcome: encrypted, an owner has joined (not
    only been invited), and nobody but owners and the bot is in it or invited."""
    members = set(joined) | set(invited)
    private = members <= set(owners) | {bot}
    return encrypted and private and any(owner in joined for owner in owners)


class Welcome:
    """Sends each recorded DM its welcome once it is ready."""

    def __init__(
        self,
        client: MatrixClient,
        db: RoomQueries,
        outbox: Outbox,
        owners: frozenset[str],
        approval_timeout_s: float,
        *,
        enabled: bool = True,
    ) -> None:
        self._client = client
        self._db = db
        self._outbox = outbox
        self._owners = owners
        self._approval_timeout_s = approval_timeout_s
        # Off (`matrix.welcome = false`): no room is recorded at a join, and none welcomed.
        self._enabled = enabled
        self._wake = asyncio.Event()
        # Whether a recorded DM may still wait for its welcome (until a look finds none).
        self._waiting = enabled
        # The recorded DMs the bot was in at the last look: a room it is in that is not
        # among them may be a DM `init` opened meanwhile (recorded by that process, which
        # may write it down only after this process saw the room).
        self._known: set[str] = set()

    def joined(self, room_id: RoomID, inviter: str) -> None:
        """The bot joined a DM at an owner's invite: welcome it once the room is known."""
        if not self._enabled:
            return
        self._db.add_owner_room(room_id, UserID(inviter), opened_by="owner")
        self._waiting = True
        self._wake.set()

    def awaited(self) -> list[str]:
        """Owners invited to a DM init opened who have not joined it yet (as of the last
        sync): the banner tells them to accept."""
        return [
            room.owner
            for room in self._db.unwelcomed_rooms()
            if room.opened_by == "bot" and self._invited(room.room_id, room.owner)
        ]

    def _invited(self, room_id: RoomID, owner: str) -> bool:
        room = self._client.client.rooms.get(room_id)
        return room is not None and owner in room.invited_users

    def rooms_changed(self) -> None:
        """A sync changed some room's state (members, encryption): a DM may be ready."""
        if self._waiting or not self._known.issuperset(self._client.client.rooms):
            self._wake.set()

    async def run(self) -> None:
        """Send the welcomes that became due, after each change of rooms, until cancelled."""
        while self._enabled:
            await self._wake.wait()
            self._wake.clear()
            recorded = self._db.owner_rooms()
            self._known = {str(room.room_id) for room in recorded} & set(self._client.client.rooms)
            waiting = False
            for room in (room for room in recorded if not room.welcomed):
                if self._ready(room.room_id):
                    await self._send(room.room_id, room.owner)
                else:
                    waiting = True
            # A room recorded meanwhile (`joined`) set it again.
            self._waiting = waiting or self._wake.is_set()

    def _ready(self, room_id: RoomID) -> bool:
        room = self._client.client.rooms.get(room_id)
        if room is None:
            return False
        invited = set(room.invited_users)
        # nio lists invited members among `users` too.
        joined = set(room.users) - invited
        return ready(
            encrypted=room.encrypted,
            joined=joined,
            invited=invited,
            owners=self._owners,
            bot=self._client.user_id,
        )

    async def _send(self, room_id: RoomID, owner: UserID) -> None:
        event_id = await self._outbox.post(
            room_id,
            texts.welcome(owner, self._owners, self._approval_timeout_s),
            notice=True,
            key=f"welcome-{room_id}",
            kind=Urgency.PROGRESS,
        )
        # Marked also when the sender gave up on it (""): a welcome is not worth a loop.
        self._db.mark_welcomed(room_id, event_id)
        log.info("room.welcomed", room=room_id, event_id=event_id or None)
