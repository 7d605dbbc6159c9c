"""`dispatch-matrix pair`: the operator and an owner compare emoji, then trust each other.

Run on the computer while the daemon is stopped: pairing needs the bot's login and crypto
store to itself. An owner starts verification from Element in their DM with the bot (or,
given `owner`, the bot asks them after a few seconds); both sides show seven emoji; when the
operator confirms they match, each side proves its keys by MAC. The bot then signs the owner's
master key with its user-signing key and pins it ("paired"); the owner's client signs the
bot's master key, because the bot's MAC vouched for it.

The protocol is `sas.py`; this module is its I/O. Its syncs start from scratch (every
room with its state, so the bot can find the DM and encrypt into it) and save no sync token
and no task, so the daemon afterwards still sees every message it must.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import (
    AlreadyRunning,
    DispatchError,
    HomeserverError,
    StateError,
    TrustError,
)
from dispatch_matrix.core.ids import RoomID
from dispatch_matrix.identity import sas_protocol
from dispatch_matrix.identity.admin import BotSettings, saved_login
from dispatch_matrix.identity.crosssign import ensure_identity, sign_user
from dispatch_matrix.identity.gate import DeviceTrust, UserKeys, device_trust, share_only_with
from dispatch_matrix.identity.sas import SasFlow
from dispatch_matrix.identity.sas_protocol import Outgoing, Party, Phase, VerificationCancelled
from dispatch_matrix.identity.signing import CrossSigningKeys
from dispatch_matrix.identity.tables import IdentityTables
from dispatch_matrix.identity.verification import (
    VerificationEvent,
    VerificationStream,
    fresh_requests,
)
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.store.state import StateFolder

log = logs.get(__name__)

REQUEST_WAIT_S = 5.0
# A request sent this long before `pair` started is still answered: the owner clicked first.
REQUEST_MAX_AGE_MS = 60_000
SYNC_TIMEOUT_MS = 5_000

Emoji = list[tuple[str, str]]
Confirm = Callable[[Emoji], Awaitable[bool]]


class PairingFailed(TrustError):
    """Pairing ended without trust: nothing was signed or pinned."""


def describe(emoji: Emoji, decimals: tuple[int, int, int] | None) -> str:
    """The short string as the terminal shows it."""
    lines = ["Compare with the emoji Element shows:", "  " + "   ".join(map(" ".join, emoji))]
    if decimals:
        lines.append(f"  (as numbers: {' '.join(map(str, decimals))})")
    return "\n".join(lines)


async def pair(
    config: BotSettings,
    say: Callable[[str], None],
    confirm: Confirm,
    owner: str | None = None,
    timeout_s: float = 300,
    *,
    request_wait_s: float = REQUEST_WAIT_S,
) -> int:
    """Verify an owner interactively; on success sign and pin their identity. Returns 0.

    `confirm(emoji)` asks the operator whether the emoji match (the text is already shown
    through `say`); it is cancelled if the owner cancels first. With `owner`, the bot sends
    the request itself when none arrived within `request_wait_s`.
    """
    owners = frozenset(config.matrix.owners)
    if owner is not None and owner not in owners:
        raise DispatchError(f"{owner} is not an owner", fix="add it to [matrix] owners first")
    state = StateFolder(config.state_dir)
    if not state.db_path.exists():
        raise StateError(
            f"no state in {state.root}", fix="run `dispatch-matrix init` and `run` first"
        )
    try:
        state.lock()
    except AlreadyRunning as err:
        raise AlreadyRunning(
            err.message, fix="stop the daemon first; pairing needs its login to itself"
        ) from None
    try:
        async with saved_login(config) as (client, db, _state):
            password = config.matrix.secret_password()
            await client.publish_device_keys()
            identity = await ensure_identity(
                client, state, password.get_secret_value() if password else None
            )
            pairing = _Pairing(client, IdentityTables(db), identity.keys, owners, owner, say)
            await pairing.run(confirm, timeout_s, request_wait_s)
    finally:
        state.unlock()
    return 0


class _Pairing:
    """One run of `pair`: find or send a request, run the flow, then sign and pin."""

    def __init__(
        self,
        client: MatrixClient,
        tables: IdentityTables,
        keys: CrossSigningKeys,
        owners: frozenset[str],
        owner: str | None,
        say: Callable[[str], None],
    ) -> None:
        self._client = client
        self._tables = tables
        self._keys = keys
        self._owners = owners
        self._owner = owner
        self._say = say
        self._me = Party(client.user_id, client.device_id)
        # Sends and key housekeeping take turns (nio's key query is not re-entrant).
        self._io = asyncio.Lock()
        self._events = VerificationStream(client, self._io, SYNC_TIMEOUT_MS)
        self._signed: dict[str, set[str]] = {}

    async def run(self, confirm: Confirm, timeout_s: float, request_wait_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        since_ms = int(time.time() * 1000) - REQUEST_MAX_AGE_MS
        own_keys = await self._own_keys()
        await self._events.start()
        try:
            room_id, flow = await self._open(own_keys, since_ms, deadline, request_wait_s)
            keys, master = await self._verify(room_id, flow, confirm, deadline)
        finally:
            await self._events.close()
        await self._trust(flow, keys, master)

    async def _own_keys(self) -> dict[str, str]:
        me, device = self._me.user_id, self._me.device_id
        published = await self._client.query_keys([me])
        device_key = published["device_keys"][me][device]["keys"][f"ed25519:{device}"]
        return {f"ed25519:{device}": device_key, self._keys.master.key_id: self._keys.master.public}

    async def _open(
        self, own_keys: dict[str, str], since_ms: int, deadline: float, request_wait_s: float
    ) -> tuple[RoomID, SasFlow]:
        """Answer the first owner's request, or send one to `owner` when none comes."""
        loop = asyncio.get_running_loop()
        who = self._owner or "an owner"
        self._say(
            f"Waiting for {who} to verify {self._me.user_id}: in Element, open your DM with the "
            "bot, select its name, then Verify."
        )
        pending = deque(fresh_requests(self._events.initial, since_ms))
        ask_at = loop.time() + request_wait_s if self._owner else deadline
        while True:
            if pending:
                event = pending.popleft()
            else:
                try:
                    event = await self._events.next(min(ask_at, deadline))
                except TimeoutError:
                    if self._owner is None or loop.time() >= deadline:
                        raise PairingFailed(
                            f"no verification request from {who} arrived",
                            fix="start the verification in Element while `pair` waits",
                        ) from None
                    return await self._request(self._owner, own_keys)
            if not self._wanted(event):
                continue
            try:
                flow = SasFlow.from_request(
                    self._me, event.sender, event.event_id, event.content, own_keys
                )
            except VerificationCancelled as refused:
                refusal = SasFlow(
                    self._me, event.sender, event.event_id, own_keys, we_requested=False
                )
                await self._quietly(event.room_id, refusal.cancel(refused.code, refused.reason))
                raise PairingFailed(
                    f"cannot answer {event.sender}'s request: {refused.reason}"
                ) from None
            self._say(f"{event.sender} asks to verify from device {flow.their_device}.")
            await self._send(event.room_id, flow.ready())
            return event.room_id, flow

    def _wanted(self, event: VerificationEvent) -> bool:
        if event.type != sas_protocol.REQUEST or event.content.get("to") != self._me.user_id:
            return False
        if event.sender not in self._owners or self._owner not in (None, event.sender):
            log.info("pairing.request_ignored", sender=event.sender, room=event.room_id)
            return False
        return True

    async def _request(self, owner: str, own_keys: dict[str, str]) -> tuple[RoomID, SasFlow]:
        nio = self._client.client
        rooms = sorted(
            room_id
            for room_id, room in nio.rooms.items()
            if room.encrypted
            and owner in room.users
            and set(room.users) | set(room.invited_users) <= {self._me.user_id, owner}
        )
        if not rooms:
            raise PairingFailed(
                f"the bot shares no encrypted DM with {owner}",
                fix="invite the bot to a DM from Element first (while the daemon runs)",
            )
        room_id = RoomID(rooms[0])
        content = sas_protocol.request_content(self._me, owner)
        event_id = await self._send(room_id, Outgoing(sas_protocol.ROOM_MESSAGE, content))
        self._say(f"No request yet, so the bot asked {owner}: accept it in Element.")
        return room_id, SasFlow(self._me, owner, event_id, own_keys, we_requested=True)

    async def _verify(
        self, room_id: RoomID, flow: SasFlow, confirm: Confirm, deadline: float
    ) -> tuple[UserKeys, str]:
        """Run the flow to its end; the owner's keys and proved master key, or raise."""
        cancel = ("m.user", "cancelled on the computer")
        try:
            await self._until(lambda: flow.emoji is not None, room_id, flow, deadline)
            emoji = flow.emoji or []
            log.info("pairing.keys_exchanged", user=flow.their_user, mac=flow.mac_method)
            self._say(describe(emoji, flow.decimals))
            if not await self._ask(confirm, emoji, room_id, flow, deadline):
                cancel = ("m.mismatched_sas", "the emoji did not match")
                raise PairingFailed(
                    "the emoji did not match: nothing was signed or pinned",
                    fix="try again; if they differ again, someone may be in the middle",
                )
            await self._send(room_id, flow.confirm())
            await self._until(lambda: flow.their_mac is not None, room_id, flow, deadline)
            keys = UserKeys.from_query(
                await self._client.query_keys([flow.their_user]), flow.their_user
            )
            device = str(flow.their_device)
            master = _vouched_master(keys, device, flow.verify_mac(_keys_of(keys, device)))
            await self._send(room_id, flow.done())
            await self._until(lambda: flow.phase is Phase.DONE, room_id, flow, deadline)
            return keys, master
        except VerificationCancelled as ended:
            cancel = (ended.code, ended.reason)
            raise PairingFailed(f"{ended.message}; nothing was signed or pinned") from None
        except TimeoutError:
            cancel = ("m.timeout", "timed out")
            raise PairingFailed(
                "the verification timed out; nothing was signed or pinned",
                fix="run `dispatch-matrix pair` again and compare the emoji promptly",
            ) from None
        finally:
            if flow.phase not in (Phase.DONE, Phase.CANCELLED):
                await self._quietly(room_id, flow.cancel(*cancel))

    async def _until(
        self, reached: Callable[[], bool], room_id: RoomID, flow: SasFlow, deadline: float
    ) -> None:
        while not reached():
            await self._feed(room_id, flow, await self._events.next(deadline))

    async def _feed(self, room_id: RoomID, flow: SasFlow, event: VerificationEvent) -> None:
        if event.room_id != room_id or event.flow_id != flow.flow_id:
            return
        for reply in flow.receive(event.type, event.sender, event.content):
            await self._send(room_id, reply)

    async def _ask(
        self, confirm: Confirm, emoji: Emoji, room_id: RoomID, flow: SasFlow, deadline: float
    ) -> bool:
        """The operator's answer, while the flow goes on (their MAC, or their cancel)."""
        answer = asyncio.ensure_future(confirm(emoji))
        try:
            while not answer.done():
                event = asyncio.ensure_future(self._events.next(deadline))
                await asyncio.wait({answer, event}, return_when=asyncio.FIRST_COMPLETED)
                if not event.done():
                    event.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await event
                if not event.cancelled():
                    await self._feed(room_id, flow, event.result())
            return answer.result()
        finally:
            if not answer.done():
                answer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await answer

    async def _trust(self, flow: SasFlow, keys: UserKeys, master: str) -> None:
        assert keys.master is not None
        await sign_user(self._client, self._keys, keys.master)
        self._tables.pin_identity(flow.their_user, master, how="paired")
        self._tables.forget_notices(f"identity:{flow.their_user}")
        log.info("pairing.done", user=flow.their_user, device=flow.their_device, master=master)
        self._say(
            f"Verified {flow.their_user} (device {flow.their_device}): their identity {master} "
            "is signed with the bot's user-signing key and pinned. Element now shows the bot "
            "as verified."
        )

    async def _send(self, room_id: RoomID, outgoing: Outgoing) -> str:
        async with self._io:
            await self._share_only_with_signed(room_id)
            event_id = await self._client.send(
                room_id, outgoing.type, outgoing.content, f"pair-{secrets.token_hex(12)}"
            )
        log.info("pairing.sent", type=outgoing.type, room=room_id, event_id=event_id)
        return event_id

    async def _quietly(self, room_id: RoomID, outgoing: Outgoing) -> None:
        """Best effort (a cancel on the way out): a failure here changes nothing."""
        with contextlib.suppress(HomeserverError, TimeoutError):
            await asyncio.wait_for(self._send(room_id, outgoing), 10)

    async def _share_only_with_signed(self, room_id: RoomID) -> None:
        """Let the room key reach only owners' devices cross-signed by the identity they
        publish now (not the pinned one: pairing is how a changed identity gets trusted).

        The daemon applies its own, stricter rule before each send and rotates the room key
        when that excludes a device pairing let in.
        """
        await self._client.after_sync()
        await share_only_with(self._client.client, room_id, self._owners, self._signed_devices)

    async def _signed_devices(self, user_id: str) -> set[str]:
        if user_id not in self._signed:
            keys = UserKeys.from_query(await self._client.query_keys([user_id]), user_id)
            self._signed[user_id] = {
                device
                for device in keys.devices
                if device_trust(keys, device, keys.master_key) is DeviceTrust.CROSS_SIGNED
            }
        return self._signed[user_id]


def _keys_of(keys: UserKeys, device_id: str) -> dict[str, str]:
    """The keys a MAC from `device_id` may prove: its own and its user's master key."""
    found = {}
    device_key = keys.devices.get(device_id, {}).get("keys", {}).get(f"ed25519:{device_id}")
    if isinstance(device_key, str):
        found[f"ed25519:{device_id}"] = device_key
    if keys.master_key is not None:
        found[f"ed25519:{keys.master_key}"] = keys.master_key
    return found


def _vouched_master(keys: UserKeys, device_id: str, proved: tuple[str, ...]) -> str:
    """The master key the verified device vouched for, if its owner's identity signed it."""
    master = keys.master_key
    if master is None or f"ed25519:{master}" not in proved:
        raise VerificationCancelled(
            "m.user", f"{keys.user_id}'s client did not vouch for their cross-signing identity"
        )
    if f"ed25519:{device_id}" not in proved:
        raise VerificationCancelled("m.key_mismatch", f"device {device_id}'s key was not proved")
    # A device the identity did not sign (a thief's login) cannot vouch for that identity.
    if device_trust(keys, device_id, master) is not DeviceTrust.CROSS_SIGNED:
        raise VerificationCancelled(
            "m.user", f"device {device_id} is not cross-signed by {keys.user_id}'s identity"
        )
    return master
