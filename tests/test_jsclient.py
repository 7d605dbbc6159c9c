"""The js test client (matrix-js-sdk + Rust crypto, tests/jsclient) works end to end.

Through a real Synapse on loopback: two js clients talk over an encrypted DM; a plain
matrix-nio client (the kind of client the bot is) talks with a js client; and a js client in
"exclude insecure devices" mode (MSC4153) refuses to talk with a nio device that is not
cross-signed, which is the behaviour the bot's cross-signing has to cope with.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Homeserver
from harness.jsclient import JsClient, JsClientError, check_installed
from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinError,
    LoginError,
    MegolmEvent,
    RoomMessageText,
    RoomSendError,
    SyncResponse,
    ToDeviceEvent,
    UnknownToDeviceEvent,
)

from dispatch_matrix.app.homeserver import LocalSynapse

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]


@pytest.fixture
def _js_synapse(homeserver: Homeserver) -> LocalSynapse:
    """The session's shared Synapse (one per test run)."""
    check_installed()
    return homeserver.synapse


def _account(server: LocalSynapse, name: str) -> tuple[str, str]:
    """A fresh user (unique per test: the homeserver is shared by the session)."""
    password = f"pw-{secrets.token_hex(8)}"
    user_id = server.register(f"{name}-{secrets.token_hex(4)}", password)
    return user_id, password


@contextlib.asynccontextmanager
async def _js(server: LocalSynapse, name: str, *, strict: bool = False) -> AsyncIterator[JsClient]:
    user_id, password = _account(server, name)
    client = await JsClient.start(server.url, user_id, password, strict=strict, name=name)
    try:
        yield client
    finally:
        await client.close()


class NioPeer:
    """A matrix-nio client syncing in the background, like the bot does."""

    def __init__(self, client: AsyncClient, password: str) -> None:
        self.client = client
        self.password = password
        self.room_events: list[tuple[str, Any]] = []
        self.to_device: list[ToDeviceEvent] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        client.add_event_callback(self._on_room_event, (RoomMessageText, MegolmEvent))
        client.add_to_device_callback(self._on_to_device, ToDeviceEvent)
        client.add_response_callback(self._on_sync, SyncResponse)

    @property
    def user_id(self) -> str:
        return str(self.client.user_id)

    async def _on_room_event(self, room: Any, event: Any) -> None:
        self.room_events.append((room.room_id, event))
        self._changed.set()

    async def _on_to_device(self, event: ToDeviceEvent) -> None:
        self.to_device.append(event)
        self._changed.set()

    async def _on_sync(self, response: SyncResponse) -> None:
        self._changed.set()

    def start_sync(self) -> None:
        # sync_forever does keys_upload / keys_query / keys_claim / to-device between syncs.
        self._task = asyncio.create_task(self.client.sync_forever(timeout=1000, full_state=True))

    async def until(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Return predicate()'s first truthy value, re-checked after every sync and event."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._changed.clear()
                    value = predicate()
                    if value:
                        return value
                    if self._task is not None and self._task.done():
                        self._task.result()  # surface a crashed sync loop
                        raise AssertionError("nio sync loop stopped")
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"nio: timed out after {timeout}s waiting for {what}") from None

    def events_in(self, room_id: str, kind: type) -> list[Any]:
        return [e for r, e in self.room_events if r == room_id and isinstance(e, kind)]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.client.close()


@contextlib.asynccontextmanager
async def _nio(server: LocalSynapse, tmp_path: Path, name: str = "nio") -> AsyncIterator[NioPeer]:
    user_id, password = _account(server, name)
    store = tmp_path / f"{name}-store"
    store.mkdir()
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    client = AsyncClient(server.url, user_id, store_path=str(store), config=config)
    peer = NioPeer(client, password)
    try:
        login = await client.login(password, device_name="nio test peer")
        assert not isinstance(login, LoginError), login
        peer.start_sync()
        yield peer
    finally:
        await peer.close()


async def _nio_joins_dm(js: JsClient, peer: NioPeer) -> str:
    """js opens an encrypted DM with the nio user; nio accepts; js sees the join."""
    room_id = await js.create_dm(peer.user_id)
    await peer.until(lambda: room_id in peer.client.invited_rooms, 30, "the invite")
    joined = await peer.client.join(room_id)
    assert not isinstance(joined, JoinError), joined
    await js.wait_join(room_id, peer.user_id)
    await peer.until(lambda: room_id in peer.client.rooms, 30, "the joined room in sync")
    return room_id


async def test_two_js_clients_talk_over_an_encrypted_dm(_js_synapse: LocalSynapse) -> None:
    async with _js(_js_synapse, "alice") as alice, _js(_js_synapse, "bob") as bob:
        assert alice.device_id and bob.device_id
        room_id = await alice.create_dm(bob.user_id)
        assert await bob.call("wait_invite", room_id=room_id) == {"room_id": room_id}
        await bob.join(room_id)
        await alice.wait_join(room_id, bob.user_id)

        sent = await alice.send_text(room_id, "hello bob", html="<b>hello</b> bob")
        got = await bob.wait_message(room_id, sender=alice.user_id, contains="hello")
        assert got["event_id"] == sent
        assert got["body"] == "hello bob"
        assert got["content"]["formatted_body"] == "<b>hello</b> bob"
        assert got["was_encrypted"] is True
        assert got["decryption_failed"] is False
        # Events that arrived before the call are found in the buffer.
        again = await bob.wait_message(room_id, sender=alice.user_id, timeout=1)
        assert again["event_id"] == sent

        reply = await bob.send_text(room_id, "hi alice")
        reaction = await bob.react(room_id, sent, "👍")
        got_reply = await alice.wait_message(room_id, sender=bob.user_id, after_event_id=sent)
        assert got_reply["event_id"] == reply and got_reply["was_encrypted"]

        log = await bob.messages(room_id)
        by_id = {e["event_id"]: e for e in log}
        assert by_id[sent]["type"] == "m.room.message"
        assert by_id[sent]["wire_type"] == "m.room.encrypted"
        assert by_id[sent]["decryption_failure"] is None
        assert by_id[reaction]["type"] == "m.reaction"  # reactions are not encrypted by the sdk
        assert [e["event_id"] for e in log].index(sent) < [e["event_id"] for e in log].index(reply)
        assert await bob.decryption_failures() == []
        assert await alice.decryption_failures() == []
        # Notifications: the decrypted message was announced on stdout.
        assert any(
            n.get("event") == "timeline" and n.get("event_id") == sent for n in bob.notifications
        )

        # No cross-signing yet: alice's device is not signed by her.
        dev = await bob.device_verification(alice.user_id, alice.device_id)
        assert dev["known"] is True and dev["signed_by_owner"] is False
        keys = await alice.bootstrap_cross_signing(alice.password)
        assert keys["master_key"] and keys["device_signed_by_owner"] is True
        own = await alice.device_verification(alice.user_id, alice.device_id)
        assert own["signed_by_owner"] is True
        status = await bob.user_verification(alice.user_id)
        assert status["is_cross_signing_verified"] is False  # bob hasn't verified alice

        with pytest.raises(JsClientError, match="unknown command"):
            await alice.call("no_such_command")


async def test_js_and_nio_exchange_encrypted_messages(
    _js_synapse: LocalSynapse, tmp_path: Path
) -> None:
    async with _js(_js_synapse, "jsuser") as js, _nio(_js_synapse, tmp_path) as peer:
        room_id = await _nio_joins_dm(js, peer)

        sent = await js.send_text(room_id, "hello nio")
        texts = await peer.until(
            lambda: [e for e in peer.events_in(room_id, RoomMessageText) if e.event_id == sent],
            30,
            "js's message, decrypted",
        )
        assert texts[0].body == "hello nio"
        assert texts[0].sender == js.user_id
        assert texts[0].decrypted is True
        assert not peer.events_in(room_id, MegolmEvent)

        reply = await peer.client.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": "hello js"},
            ignore_unverified_devices=True,
        )
        assert not isinstance(reply, RoomSendError), reply
        got = await js.wait_message(room_id, sender=peer.user_id, contains="hello js")
        assert got["event_id"] == reply.event_id
        assert got["was_encrypted"] is True
        assert got["decryption_failed"] is False
        assert await js.decryption_failures() == []
        # The nio device is known to js, and (nobody cross-signs it) not signed by its owner.
        dev = await js.device_verification(peer.user_id, str(peer.client.device_id))
        assert dev["known"] is True and dev["signed_by_owner"] is False


async def test_strict_js_excludes_a_nio_device_that_is_not_cross_signed(
    _js_synapse: LocalSynapse, tmp_path: Path
) -> None:
    """What "exclude insecure devices" (OnlySignedDevicesIsolationMode) does to the bot today.

    Observed with matrix-js-sdk 43 / matrix-sdk-crypto-wasm 18.9 against matrix-nio 0.26:
    - js shares the room key only with devices cross-signed by their owner. The nio device has
      no cross-signing at all, so js sends it a plaintext `m.room_key.withheld` to-device
      event with code `m.unverified` ("The sender has disabled encrypting to unverified
      devices.") instead of the key, right before the message. nio 0.26 does not understand
      withheld codes (it surfaces it as an UnknownToDeviceEvent) and hands the message to the
      app as an undecryptable MegolmEvent.
    - The other way round, nio's message is readable cryptographically (nio shares its key
      with js), but js refuses to decrypt it: decryption_failure UNSIGNED_SENDER_DEVICE
      ("The sender identity is not cross-signed").
    The bot's own cross-signing (its device signed by its own self-signing key) fixes both.
    """
    async with _js(_js_synapse, "strict", strict=True) as js, _nio(_js_synapse, tmp_path) as peer:
        keys = await js.bootstrap_cross_signing(js.password)
        assert keys["device_signed_by_owner"] is True
        room_id = await _nio_joins_dm(js, peer)

        sent = await js.send_text(room_id, "secret for cross-signed devices only")

        def withheld() -> list[UnknownToDeviceEvent]:
            return [
                e
                for e in peer.to_device
                if isinstance(e, UnknownToDeviceEvent)
                and e.type == "m.room_key.withheld"
                and e.source["content"].get("room_id") == room_id
            ]

        def outcome() -> bool:
            arrived = [e for e in peer.room_events if e[0] == room_id and e[1].event_id == sent]
            decrypted = any(isinstance(e, RoomMessageText) for _, e in arrived)
            return decrypted or bool(arrived and withheld())

        # Bounded: both the withheld notice and the message arrive within a sync or two.
        await peer.until(outcome, 10, "js's message and either its key or a withheld notice")
        assert not [e for e in peer.events_in(room_id, RoomMessageText) if e.event_id == sent]
        undecryptable = [e for e in peer.events_in(room_id, MegolmEvent) if e.event_id == sent]
        assert len(undecryptable) == 1
        notice = withheld()[0].source["content"]
        assert notice["code"] == "m.unverified"
        assert notice["session_id"] == undecryptable[0].session_id
        assert notice["from_device"] == js.device_id

        reply = await peer.client.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": "can you read me?"},
            ignore_unverified_devices=True,
        )
        assert not isinstance(reply, RoomSendError), reply
        got = await js.wait_message(room_id, sender=peer.user_id, include_failures=True, timeout=10)
        assert got["event_id"] == reply.event_id
        assert got["was_encrypted"] is True
        assert got["decryption_failed"] is True
        assert got["decryption_failure"] == "UNSIGNED_SENDER_DEVICE"
        failures = await js.decryption_failures(settle=0)
        assert [(f["event_id"], f["reason"]) for f in failures] == [
            (reply.event_id, "UNSIGNED_SENDER_DEVICE")
        ]
