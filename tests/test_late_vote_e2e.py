"""A poll vote whose room key arrives late (the owner's session sent the key after the vote,
as a client whose to-device message was delayed): the bot keeps the vote it cannot read,
reads it once the key comes, judges it as any vote, and it answers the approval question
once. Synapse, the owner's strict js client, a second session of the owner's (nio) that the
js client cross-signs, and the bot process."""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import BotSetup, Homeserver, started
from fake_messages_api import FakeMessagesAPI
from harness import http
from harness.bot import BotProcess
from harness.jsclient import JsClient
from nio import AsyncClient, AsyncClientConfig, LoginError
from nio.crypto.sessions import OutboundGroupSession
from test_poll_e2e import END, START, permissions
from test_trust_e2e import bot_device

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]
RESPONSE = "org.matrix.msc3381.poll.response"


class LateSession:
    """A session of the owner's that encrypts events with a Megolm session whose key it
    sends to the bot only when told to."""

    def __init__(self, homeserver: Homeserver, user_id: str, password: str, store: Path) -> None:
        config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
        self.base = homeserver.url
        self.password = password
        self.nio = AsyncClient(homeserver.url, user_id, store_path=str(store), config=config)
        self.megolm = OutboundGroupSession()
        # Exported before the first event is encrypted: a key exported later starts at a
        # later message index, and cannot decrypt the events sent before it.
        self.session_key = self.megolm.session_key
        self.megolm.mark_as_shared()

    async def login(self) -> str:
        login = await self.nio.login(self.password, device_name="late")
        assert not isinstance(login, LoginError), login
        await self.nio.keys_upload()
        return str(self.nio.device_id)

    def send(self, room: str, kind: str, content: dict[str, Any]) -> str:
        """Send an event encrypted with the session whose key the bot does not have yet."""
        olm = self.nio.olm
        assert olm is not None and self.nio.access_token
        plaintext = {"type": kind, "content": content, "room_id": room}
        encrypted = {
            "algorithm": "m.megolm.v1.aes-sha2",
            "sender_key": olm.account.identity_keys["curve25519"],
            "ciphertext": self.megolm.encrypt(json.dumps(plaintext)),
            "session_id": self.megolm.id,
            "device_id": self.nio.device_id,
        }
        return http.send_event(
            self.base, self.nio.access_token, room, "m.room.encrypted", encrypted
        )

    async def send_key(self, room: str, user_id: str, device_id: str) -> None:
        """The session's room key, Olm-encrypted to the bot's device alone."""
        olm = self.nio.olm
        assert olm is not None and self.nio.access_token
        key = {
            "algorithm": "m.megolm.v1.aes-sha2",
            "room_id": room,
            "session_id": self.megolm.id,
            "session_key": self.session_key,
        }
        await self.nio.sync(timeout=0, full_state=True)  # the room's members: keys to query
        if self.nio.should_query_keys:
            await self.nio.keys_query()
        # A fresh Olm session (the newest is the one used), as a client that never wrote to
        # the bot's device before.
        await self.nio.keys_claim({user_id: [device_id]})
        device = self.nio.device_store[user_id][device_id]
        session = olm.session_store.get(device.curve25519)
        assert session is not None
        sealed = olm._olm_encrypt(session, device, "m.room_key", key)
        http.call(
            self.base,
            "PUT",
            f"/_matrix/client/v3/sendToDevice/m.room.encrypted/{secrets.token_hex(8)}",
            {"messages": {user_id: {device_id: sealed}}},
            self.nio.access_token,
        )


async def test_a_vote_whose_key_arrives_late_answers_the_question_once(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    homeserver: Homeserver,
    running: list[BotProcess],
    tmp_path: Path,
) -> None:
    setup, bot, owner, room = await started(
        make_bot,
        owner_client,
        running,
        extra=permissions(120),
        matrix_extra="undecryptable_grace_s = 600",
    )
    bot_id, work = setup.bot.user_id, setup.config.folder / "work"
    store = tmp_path / "late-session"
    store.mkdir()
    late = LateSession(homeserver, setup.owner.user_id, setup.owner.password, store)
    try:
        fake_api.reply(tools=[("bash", {"command": f"touch {work}/voted-late"})])
        fake_api.reply("Done, voted late.")
        await owner.send_text(room, "make the file, once I vote")
        await owner.wait_message(room, sender=bot_id, contains="May I?", timeout=60)
        poll = await owner.wait_message(room, sender=bot_id, event_type=START, timeout=30)
        # The owner's second session, cross-signed by their first (as Element verifies one
        # session from another): its vote counts once the bot can read it.
        late_device = await late.login()
        signed = await owner.cross_sign_device(late_device)
        assert signed["signed_by_owner"] is True, signed
        relation = {"rel_type": "m.reference", "event_id": poll["event_id"]}
        vote = late.send(
            room, RESPONSE, {"m.relates_to": relation, RESPONSE: {"answers": ["once"]}}
        )
        await bot.wait_log("matrix.undecryptable", where=lambda r: r["event_id"] == vote)
        assert not bot.log_events("approval.decided") and not (work / "voted-late").exists()
        # The key now; then again (a client re-sending it): the vote is read once.
        bot_user, device_id = setup.bot.user_id, bot_device(bot)
        await late.send_key(room, bot_user, device_id)
        await bot.wait_log("matrix.late_key_arrived", where=lambda r: r["event_id"] == vote)
        await late.send_key(room, bot_user, device_id)
    finally:
        await late.nio.close()
    await owner.wait_message(room, sender=bot_id, contains="Done, voted late", timeout=60)
    assert (work / "voted-late").exists()
    decided = bot.log_events("approval.decided")
    assert [(r["answer"], r["by"]) for r in decided] == [("yes", setup.owner.user_id)]
    assert len(bot.log_events("matrix.late_key_arrived")) == 1
    ended = await owner.wait_message(room, sender=bot_id, event_type=END, timeout=30)
    assert ended["content"]["m.relates_to"]["event_id"] == poll["event_id"]
    kinds = [m["type"] for m in await owner.messages(room) if m["sender"] == bot_id]
    assert kinds.count(END) == 1, "the poll ended once"
    assert not bot.log_events("vote.ignored")
