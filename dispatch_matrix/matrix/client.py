"""Our one wrapper around nio's AsyncClient: connect, sync, send.

nio reports failures two ways (exceptions and error responses); here both become
HomeserverError (or its subclasses), so the rest of the code handles one kind of failure.
Which device the bot is signed in as is `device.py`'s job; the client uses what it made.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import aiohttp
from nio import (
    AsyncClient,
    ErrorResponse,
    JoinError,
    LocalProtocolError,
    MessageDirection,
    SyncResponse,
    WhoamiResponse,
)

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.core.ids import DeviceID, EventID, RoomID, UserID
from dispatch_matrix.matrix import uia
from dispatch_matrix.matrix.device import Devices
from dispatch_matrix.matrix.failures import (
    DEFAULT_RETRY_AFTER_MS,
    UNREACHABLE,
    UNREACHABLE_FIX,
    CannotSend,
    RateLimited,
    RequestRefused,
    TokenRejected,
    Unreachable,
    checked,
    failure,
    is_keys_clash,
    why_unreachable,
)
from dispatch_matrix.store import Database
from dispatch_matrix.store.db import Session
from dispatch_matrix.store.state import StateFolder

log = logs.get(__name__)

# Room timelines of up to 100 events per sync; a longer gap is filled from /messages.
# Presence, typing and receipts are left out: the bot reads none of them, and each one
# (its own receipt and typing included) would end a long poll for an empty answer.
_SYNC_FILTER: dict[str, Any] = {
    "presence": {"not_types": ["*"]},
    "room": {"timeline": {"limit": 100}, "ephemeral": {"not_types": ["*"]}},
}


class MatrixClient:
    """The bot's connection to its homeserver."""

    def __init__(
        self,
        homeserver: str,
        user_id: UserID,
        state: StateFolder,
        db: Database,
        device_name: str = "dispatch-matrix",
    ) -> None:
        self.homeserver = homeserver
        self.user_id = user_id
        self.state = state
        self.db = db
        self.nio: AsyncClient | None = None
        self._devices = Devices(homeserver, user_id, state, db, device_name)
        # Set when the saved device's crypto store was lost and a new device replaced it.
        self.replaced_device: str | None = None

    @property
    def client(self) -> AsyncClient:
        """The nio client; only after `connect`."""
        if self.nio is None:
            raise RuntimeError("connect() first")
        return self.nio

    @property
    def connected(self) -> bool:
        """Whether `connect` made a device to speak as (a failed login leaves none)."""
        return self.nio is not None

    @property
    def device_id(self) -> DeviceID:
        """The bot's device id."""
        return DeviceID(self.client.device_id)

    def make_nio(self, device_id: str | None) -> AsyncClient:
        """A nio client for one of the bot's devices, on our encrypted crypto store."""
        return self._devices.nio_for(device_id)

    async def connect(self, password: str | None, access_token: str | None = None) -> Session:
        """Restore the saved device or sign in for the first time (`Devices.open`), and
        publish its keys; a device it replaced because its keys were lost (or clash with
        the homeserver's) is kept in `replaced_device`, for the caller to delete and
        announce."""
        if self.nio is not None:
            # A try before this one (the homeserver was away) leaves no session open.
            await self.nio.close()
            self.nio = None
        device = await self._devices.open(password, access_token)
        self.nio = device.nio
        if device.replaced is not None:
            self.replaced_device = device.replaced
        try:
            await self.publish_device_keys()
        except RequestRefused as err:
            if not is_keys_clash(err):
                raise
            # A start stopped (Ctrl-C) between uploading this device's one-time keys and
            # saving them: the homeserver keeps keys under ids this device would make again
            # with other values, and refuses its every upload. Only a new device gets past.
            aside = self._devices.set_aside(device.session, "keys-clash")
            log.error("matrix.device_keys_clash", device=self.device_id, moved_to=str(aside))
            await self.nio.close()
            self.nio = None
            device = await self._devices.open(password, access_token)
            self.nio = device.nio
            self.replaced_device = device.replaced
            await self.publish_device_keys()
        return device.session

    async def delete_device(self, device_id: str, password: str | None) -> None:
        """Delete one of the bot's devices (user-interactive auth with the password).

        Raises `uia.ApprovalInBrowser` where only a browser may approve it (MAS), and
        HomeserverError where the server does not let clients delete devices at all.
        """
        path = _path("devices", device_id)
        status, reply = await self.api("DELETE", path, {})
        if uia.wants_auth(status, reply):
            if not uia.password_flow(reply) or not password:
                raise uia.ApprovalInBrowser(
                    f"removing the bot's old device {device_id}", uia.browser_url(reply)
                )
            auth = uia.password_auth(self.user_id, password, reply.get("session"))
            status, reply = await self.api("DELETE", path, {"auth": auth})
        if status == 200 or (status == 404 and reply.get("errcode") == "M_NOT_FOUND"):
            return
        raise HomeserverError(
            f"could not delete old device {device_id}: {reply.get('errcode', status)}",
            fix="remove it from the bot's device list in the account settings",
        )

    async def close(self) -> None:
        """Close the HTTP session (the login stays valid for the next start)."""
        if self.nio is not None:
            await self.nio.close()

    # -- requests --------------------------------------------------------------------------

    async def call(self, what: str, coro: Any) -> Any:
        """Await one nio request; its failure as one of our error kinds."""
        return await checked(self.homeserver, what, coro)

    async def api(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """A raw client-server API call nio has no method for; returns (status, JSON)."""
        headers = {"Authorization": f"Bearer {self.client.access_token}"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body)
        try:
            response = await self.client.send(method, path, data, headers)
            status = response.status
            try:
                reply = await response.json(content_type=None)
            except (ValueError, aiohttp.ContentTypeError):
                reply = {}
        except UNREACHABLE as err:
            raise Unreachable(
                f"{method} {path}: cannot reach {self.homeserver} ({why_unreachable(err)})",
                fix=UNREACHABLE_FIX,
            ) from err
        if status == 401 and reply.get("errcode") in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"):
            raise TokenRejected(f"{method} {path}: the homeserver rejected our access token")
        return status, reply if isinstance(reply, dict) else {}

    async def api_ok(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Like `api`, raising HomeserverError for any status but 200."""
        status, reply = await self.api(method, path, body)
        if status != 200:
            code = reply.get("errcode", status)
            raise HomeserverError(f"{method} {path} failed: {code} {reply.get('error', '')}")
        return reply

    async def query_keys(self, user_ids: list[str]) -> dict[str, Any]:
        """/keys/query: device keys and cross-signing keys of these users, as JSON."""
        body: dict[str, Any] = {"device_keys": {user: [] for user in user_ids}}
        return await self.api_ok("POST", "/_matrix/client/v3/keys/query", body)

    async def whoami(self) -> str:
        """Check the token; returns the user id it belongs to."""
        response: WhoamiResponse = await self.call("whoami", self.client.whoami())
        return str(response.user_id)

    async def sync(
        self, since: str | None, timeout_ms: int, presence: str = "online", full_state: bool = False
    ) -> SyncResponse:
        """One /sync; nio decrypts what it can while receiving it."""
        response: SyncResponse = await self.call(
            "sync",
            self.client.sync(
                timeout=timeout_ms,
                since=since,
                set_presence=presence,
                full_state=full_state,
                sync_filter=_SYNC_FILTER,
            ),
        )
        return response

    async def publish_device_keys(self) -> None:
        """Upload our device keys now if the homeserver lacks them: a new device, or one the
        homeserver forgot. Another session that logs the bot out deletes its device and
        keys; the next login with the device's id makes the device again, without keys,
        while nio remembers them as uploaded (cross-signing then found no device to sign,
        at every start)."""
        olm = self.client.olm
        if olm is not None and not self.client.should_upload_keys:
            published = await self.query_keys([self.user_id])
            if self.device_id not in published.get("device_keys", {}).get(self.user_id, {}):
                log.warning("matrix.device_keys_gone", device=self.device_id)
                olm.account.shared = False
        if self.client.should_upload_keys:
            await self.call("keys/upload", self.client.keys_upload())

    async def backfill(self, room_id: str, start: str, until: str) -> list[Any]:
        """The events between `until` (an earlier sync token) and `start` (a gapped
        timeline's prev_batch), oldest first, decrypted where nio can."""
        events: list[Any] = []
        token: str | None = start
        while token:
            response = await self.call(
                f"messages {room_id}",
                self.client.room_messages(
                    room_id, start=token, end=until, direction=MessageDirection.back, limit=100
                ),
            )
            if not response.chunk:
                break
            events.extend(response.chunk)
            token = response.end if response.end != token else None
        events.reverse()
        return events

    async def after_sync(self) -> None:
        """Key housekeeping between syncs: to-device messages, key upload, query, claim."""
        client = self.client
        await self.call("to-device", _all_ok(client.send_to_device_messages()))
        if client.should_upload_keys:
            await self.call("keys/upload", client.keys_upload())
        if client.should_query_keys:
            await self.call("keys/query", client.keys_query())
        if client.should_claim_keys:
            users = client.get_users_for_key_claiming()
            await self.call("keys/claim", client.keys_claim(users))

    async def join(self, room_id: RoomID) -> None:
        """Join a room we were invited to."""
        response = await self.client.join(room_id)
        if isinstance(response, JoinError):
            raise failure(f"join {room_id}", response)

    async def reject(self, room_id: RoomID) -> None:
        """Reject an invite (leave before joining) and forget the room."""
        await self.call(f"reject {room_id}", self.client.room_leave(room_id))

    async def send(
        self, room_id: RoomID, event_type: str, content: dict[str, Any], txn_id: str
    ) -> EventID:
        """Send one event with a fixed transaction id, so a retry is de-duplicated.

        Everything the bot sends into an encrypted room is encrypted, reactions included
        (nio would send those in the clear). A 429 is not waited out here: it is raised as
        RateLimited at once, so the outbox decides what goes first meanwhile.
        """
        client = self.client
        room = client.rooms.get(room_id)
        if room is None:
            raise CannotSend(f"send to {room_id}: not a room the bot is in (yet)")
        if room.encrypted:
            await self._prepare_encryption(room_id)
            try:
                event_type, content = client.encrypt(room_id, event_type, content)
            except LocalProtocolError as err:
                raise CannotSend(f"send to {room_id}: {err}") from err
        path = _path("rooms", room_id, "send", event_type, txn_id)
        reply = await self._room_request(f"send to {room_id}", "PUT", path, content)
        return EventID(str(reply.get("event_id", "")))

    async def send_delayed(
        self,
        room_id: RoomID,
        event_type: str,
        content: dict[str, Any],
        txn_id: str,
        delay_ms: int,
    ) -> tuple[str, dict[str, Any]]:
        """Schedule an event the homeserver sends by itself after `delay_ms` unless its timer
        is restarted or it is cancelled (MSC4140 delayed events); encrypted now, as `send`
        would, in an encrypted room. Returns its delay id and the content scheduled; a
        refusal is raised as `_room_request` raises it (RequestRefused for a server without
        delayed events)."""
        room = self.client.rooms.get(room_id)
        if room is None:
            raise CannotSend(f"delayed send to {room_id}: not a room the bot is in (yet)")
        if room.encrypted:
            await self._prepare_encryption(room_id)
            try:
                event_type, content = self.client.encrypt(room_id, event_type, content)
            except LocalProtocolError as err:
                raise CannotSend(f"delayed send to {room_id}: {err}") from err
        # The room send endpoint itself, with the delay as an (unstable) query parameter.
        path = _path("rooms", room_id, "send", event_type, txn_id)
        path += f"?org.matrix.msc4140.delay={int(delay_ms)}"
        reply = await self._room_request(f"delayed send to {room_id}", "PUT", path, content)
        delay_id = reply.get("delay_id")
        if not isinstance(delay_id, str) or not delay_id:
            raise RequestRefused(
                f"delayed send to {room_id}: no delay_id in the reply", "M_UNRECOGNIZED"
            )
        return delay_id, content

    async def update_delayed(self, delay_id: str, action: str) -> tuple[int, str]:
        """Restart, cancel or send now a delayed event; (HTTP status, errcode or "")."""
        path = _DELAYED + "/delayed_events/" + urllib.parse.quote(delay_id, safe="")
        status, reply = await self.api("POST", path, {"action": action})
        return status, str(reply.get("errcode") or "")

    async def _room_request(
        self, what: str, method: str, path: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """A rate-limited request the caller schedules: failures by kind, 429 included."""
        status, reply = await self.api(method, path, body)
        if status == 200:
            return reply
        code = str(reply.get("errcode") or status)
        text = f"{what} failed: {code} {reply.get('error', '')}".strip()
        if status == 429 or code == "M_LIMIT_EXCEEDED":
            wait_ms = reply.get("retry_after_ms") or DEFAULT_RETRY_AFTER_MS
            raise RateLimited(f"{what}: rate limited", float(wait_ms) / 1000)
        if code.startswith("M_"):
            raise RequestRefused(text, code)
        raise HomeserverError(text)

    async def _prepare_encryption(self, room_id: RoomID) -> None:
        # What nio's room_send does before encrypting, for the events it would not encrypt.
        client = self.client
        room = client.rooms[room_id]
        if not room.members_synced:
            await self.call("members", client.joined_members(room_id))
        if client.should_query_keys:
            await self.call("keys/query", client.keys_query())
        if client.olm is not None and client.olm.should_share_group_session(room_id):
            await self.call(
                "share room key",
                client.share_group_session(room_id, ignore_unverified_devices=True),
            )

    async def redact(self, room_id: RoomID, event_id: str, txn_id: str) -> None:
        """Redact one of our events (a superseded status reaction); a 429 is raised."""
        path = _path("rooms", room_id, "redact", event_id, txn_id)
        await self._room_request(f"redact in {room_id}", "PUT", path, {})

    async def read_receipt(self, room_id: RoomID, event_id: str, thread_id: str = "main") -> None:
        """Mark an event read (the owner sees the bot took their message); `thread_id` is
        the root of the thread it is in (a receipt for the main timeline is refused)."""
        await self.call(
            "receipt", self.client.update_receipt_marker(room_id, event_id, thread_id=thread_id)
        )

    async def typing(self, room_id: RoomID, on: bool, timeout_ms: int = 30_000) -> None:
        """Show or clear the typing notice."""
        await self.call("typing", self.client.room_typing(room_id, on, timeout=timeout_ms))

    async def set_presence(self, presence: str, status: str | None = None) -> None:
        """Set presence and its status message; a 429 is raised, not waited out."""
        body: dict[str, Any] = {"presence": presence}
        if status is not None:
            body["status_msg"] = status
        path = _path("presence", self.user_id, "status")
        await self._room_request("presence", "PUT", path, body)


# The unstable prefix of delayed events (MSC4140), as Synapse serves them.
_DELAYED = "/_matrix/client/unstable/org.matrix.msc4140"


def _path(*parts: str) -> str:
    """A client-server API v3 path, each part escaped."""
    return "/_matrix/client/v3/" + "/".join(urllib.parse.quote(part, safe="") for part in parts)


async def _all_ok(coro: Any) -> Any:
    responses = await coro
    for response in responses or []:
        if isinstance(response, ErrorResponse):
            return response
    return None
