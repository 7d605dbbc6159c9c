"""Owners' identities: fetched from the homeserver, pinned on first contact, re-checked when
their device lists change, and applied to whom the bot shares room keys with.

The decisions themselves are the pure functions in `trust.py`; this module feeds them the
published keys and the pins, and turns their answers into nio device states.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nio import AsyncClient

from dispatch_matrix.core import logs
from dispatch_matrix.core.ids import RoomID
from dispatch_matrix.identity.tables import IdentityTables
from dispatch_matrix.identity.trust import DeviceTrust, UserKeys, device_trust
from dispatch_matrix.matrix.client import MatrixClient

log = logs.get(__name__)


class Identities:
    """Published keys of the users the bot deals with, and their pinned master keys."""

    def __init__(
        self, client: MatrixClient, tables: IdentityTables, owners: frozenset[str]
    ) -> None:
        self._client = client
        self._tables = tables
        self._owners = owners
        self._keys: dict[str, UserKeys] = {}
        # Verdicts on the cached keys: each one checks two signatures, and every message
        # and every send asks again. Dropped with the keys (and on a pin change).
        self._verdicts: dict[tuple[str, str | None, str | None], DeviceTrust] = {}
        # How many times keys were fetched: held messages are judged again after one.
        self.fetches = 0

    def forget(self, user_ids: list[str]) -> None:
        """Drop cached keys (their device list changed); the next check re-fetches."""
        for user_id in user_ids:
            self._keys.pop(user_id, None)
        self._verdicts.clear()

    async def keys(self, user_id: str, refresh: bool = False) -> UserKeys:
        """A user's published keys (cached until their device list changes)."""
        if refresh or user_id not in self._keys:
            reply = await self._client.query_keys([user_id])
            self.fetches += 1
            keys = UserKeys.from_query(reply, user_id)
            self._keys[user_id] = keys
            self._verdicts.clear()
            self._pin_on_first_contact(keys)
        return self._keys[user_id]

    def _trust(self, keys: UserKeys, device_id: str | None) -> DeviceTrust:
        """`device_trust` against the pinned identity (or the published one), remembered
        for these keys."""
        pinned = self.pinned(keys.user_id) or keys.master_key
        memo = (keys.user_id, device_id, pinned)
        verdict = self._verdicts.get(memo)
        if verdict is None or self._keys.get(keys.user_id) is not keys:
            verdict = device_trust(keys, device_id, pinned)
            if self._keys.get(keys.user_id) is keys:
                self._verdicts[memo] = verdict
        return verdict

    def pinned(self, user_id: str) -> str | None:
        """The master key pinned for a user, if any."""
        return self._tables.pinned_identity(user_id)

    def _pin_on_first_contact(self, keys: UserKeys) -> None:
        master = keys.master_key
        if master is None or keys.user_id not in self._owners:
            return
        if self._tables.pinned_identity(keys.user_id) is None:
            self._tables.pin_identity(keys.user_id, master, how="first contact")
            log.info("identity.pinned", user=keys.user_id, master=master, how="first contact")

    async def judge(self, user_id: str, sender_key: str | None) -> DeviceTrust:
        """The standing of the device that holds `sender_key` (curve25519)."""
        keys = await self.keys(user_id)
        device_id = keys.device_by_curve_key(sender_key) if sender_key else None
        if device_id is None and sender_key:
            # A device that appeared since we last looked: ask once more.
            keys = await self.keys(user_id, refresh=True)
            device_id = keys.device_by_curve_key(sender_key)
        return self._trust(keys, device_id)

    async def restrict_sharing(self, room_id: RoomID) -> None:
        """Let room keys reach only owners' devices that pass the gate against the pinned
        identity (mirrors MSC4153); called before every send."""
        await share_only_with(self._client.client, room_id, self._owners, self._trusted_devices)

    async def _trusted_devices(self, user_id: str) -> set[str]:
        keys = await self.keys(user_id)
        return {device for device in keys.devices if self._trust(keys, device).trusted}


# Which of an owner's devices may get room keys: the one thing the daemon and pairing judge
# differently (the pinned identity, or the one published now).
TrustedDevices = Callable[[str], Awaitable[set[str]]]


async def share_only_with(
    nio: AsyncClient, room_id: RoomID, owners: frozenset[str], trusted: TrustedDevices
) -> None:
    """Mark every device in the room verified (gets room keys) or blacklisted (gets none) in
    nio's store: only owners' devices that `trusted` names get them. If a device lost its
    standing, the outbound session is dropped, so the next message starts one it never sees.
    """
    room = nio.rooms.get(room_id)
    if room is None or nio.olm is None or not room.encrypted:
        return
    revoked = False
    for user_id in set(room.users) | set(room.invited_users):
        if user_id == nio.user_id:
            continue
        allowed = await trusted(user_id) if user_id in owners else set()
        for device in nio.device_store.active_user_devices(user_id):
            if device.id in allowed:
                if device.blacklisted:
                    nio.unblacklist_device(device)
                if not device.verified:
                    nio.verify_device(device)
            elif not device.blacklisted:
                revoked = True
                nio.blacklist_device(device)
                log.info("trust.device_excluded", user=user_id, device=device.id, room=room_id)
    if revoked:
        nio.olm.outbound_group_sessions.pop(room_id, None)
