"""Pairing end to end: `pair()` in this process against a real Synapse, with the owner's side
played by matrix-js-sdk's own verification (Rust crypto), cross-signed and strict.

The bot process opens the DM and is stopped (pairing needs its login to itself); afterwards
it starts again and still answers, so pairing did not disturb the daemon's sync.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import BotSetup, Homeserver
from fake_messages_api import FakeMessagesAPI
from harness import http
from harness.bot import BotProcess
from harness.jsclient import JsClient, JsClientError

from dispatch_matrix.app.config import load_config
from dispatch_matrix.core.errors import AlreadyRunning
from dispatch_matrix.identity.pairing import Emoji, PairingFailed, pair
from dispatch_matrix.identity.signing import key_of, verify
from dispatch_matrix.identity.tables import IdentityTables
from dispatch_matrix.store import Database

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]


async def dm_with_stopped_bot(
    make_bot: Callable[..., BotSetup], owner_client: StartClient, running: list[BotProcess]
) -> tuple[BotSetup, JsClient, str]:
    """The owner opens a DM with the bot, then the bot is stopped (as `pair` requires)."""
    setup = make_bot()
    bot = await setup.process().start()
    running.append(bot)
    owner = await owner_client(setup.owner)
    room = await owner.create_dm(setup.bot.user_id)
    await owner.wait_join(room, setup.bot.user_id)
    assert await bot.stop() == 0
    return setup, owner, room


class Operator:
    """The person at the computer: reads what `pair` says and answers its question."""

    def __init__(self, owner: JsClient, answer: bool | None = True) -> None:
        self.owner = owner
        self.answer = answer
        self.said: list[str] = []
        self.waiting = asyncio.Event()
        self.request_id: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.shown: dict[str, Emoji] = {}

    def say(self, text: str) -> None:
        self.said.append(text)
        if text.startswith("Waiting for"):
            self.waiting.set()

    async def confirm(self, emoji: Emoji) -> bool:
        """Compare with what the owner's client shows; None: never answer (wait forever)."""
        self.shown["bot"] = emoji
        self.shown["owner"] = await self.owner.sas_emoji(await self.request_id)
        if self.answer is None:
            await asyncio.Event().wait()
        return bool(self.answer) and emoji == self.shown["owner"]


async def first_of(pairing: asyncio.Task[int], event: asyncio.Event, timeout: float = 60) -> None:
    """Wait for `event`, failing at once if pairing ended first."""
    waiter = asyncio.ensure_future(event.wait())
    done, _ = await asyncio.wait({pairing, waiter}, timeout=timeout, return_when="FIRST_COMPLETED")
    waiter.cancel()
    if pairing in done:
        pairing.result()
        raise AssertionError("pairing ended before it was waiting")
    assert waiter in done, "pairing never said it was waiting"


def published(homeserver: Homeserver, setup: BotSetup) -> dict[str, Any]:
    """/keys/query for the owner and the bot, asked with the bot's own (stopped) login."""
    db = Database.open(setup.config.state / "dispatch.db")
    try:
        session = db.session()
    finally:
        db.close()
    assert session is not None
    users = {setup.owner.user_id: [], setup.bot.user_id: []}
    reply: dict[str, Any] = http.call(
        homeserver.url,
        "POST",
        "/_matrix/client/v3/keys/query",
        {"device_keys": users},
        session.access_token,
    )
    return reply


def signed_by_bot(keys: dict[str, Any], setup: BotSetup) -> bool:
    """Whether the owner's master key carries a valid signature by the bot's user-signing key."""
    master = keys["master_keys"][setup.owner.user_id]
    usk = key_of(keys["user_signing_keys"][setup.bot.user_id])
    assert usk is not None
    return verify(master, setup.bot.user_id, f"ed25519:{usk}", usk)


def pins(setup: BotSetup) -> list[tuple[str, str, str]]:
    db = Database.open(setup.config.state / "dispatch.db")
    try:
        return [(user, master, how) for user, master, _at, how in IdentityTables(db).identities()]
    finally:
        db.close()


async def still_answers(
    setup: BotSetup, owner: JsClient, room: str, api: FakeMessagesAPI, running: list[BotProcess]
) -> None:
    """The daemon starts again and a message round-trips."""
    bot = await setup.process().start()
    running.append(bot)
    api.reply("still here after pairing")
    await owner.send_text(room, "are you there?")
    answer = await owner.wait_message(room, sender=setup.bot.user_id, contains="still here")
    assert answer["was_encrypted"] and not answer["decryption_failed"]


async def assert_paired(
    setup: BotSetup, owner: JsClient, request_id: str, operator: Operator, homeserver: Homeserver
) -> None:
    assert operator.shown["bot"] == operator.shown["owner"]
    assert len(operator.shown["bot"]) == 7
    assert (await owner.verification_done(request_id))["phase"] == "done"
    trusted = await owner.wait_user_verified(setup.bot.user_id)
    assert trusted["is_cross_signing_verified"] is True
    keys = published(homeserver, setup)
    owner_master = key_of(keys["master_keys"][setup.owner.user_id])
    assert pins(setup) == [(setup.owner.user_id, owner_master, "paired")]
    assert signed_by_bot(keys, setup)
    assert any("Verified" in line for line in operator.said)


async def test_owner_starts_verification_and_both_sides_trust_each_other(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    homeserver: Homeserver,
    running: list[BotProcess],
) -> None:
    setup, owner, room = await dm_with_stopped_bot(make_bot, owner_client, running)
    operator = Operator(owner)
    config = load_config(setup.config.path)
    pairing = asyncio.create_task(
        pair(config, operator.say, operator.confirm, owner=setup.owner.user_id, request_wait_s=60)
    )
    await first_of(pairing, operator.waiting)

    request_id = await owner.request_verification(room, setup.bot.user_id)
    operator.request_id.set_result(request_id)
    await owner.start_sas(request_id)
    await owner.sas_emoji(request_id)
    await owner.confirm_sas(request_id)
    assert await asyncio.wait_for(pairing, 60) == 0

    await assert_paired(setup, owner, request_id, operator, homeserver)
    # Every verification event of the bot's travelled encrypted.
    bot_events = [
        m
        for m in await owner.messages(room)
        if m["sender"] == setup.bot.user_id and m["type"].startswith("m.key.verification.")
    ]
    assert {m["type"] for m in bot_events} >= {
        "m.key.verification.ready",
        "m.key.verification.accept",
        "m.key.verification.key",
        "m.key.verification.mac",
        "m.key.verification.done",
    }
    assert {m["wire_type"] for m in bot_events} == {"m.room.encrypted"}
    await still_answers(setup, owner, room, fake_api, running)


async def test_the_bot_asks_an_owner_who_did_not_start(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    homeserver: Homeserver,
    running: list[BotProcess],
) -> None:
    setup, owner, room = await dm_with_stopped_bot(make_bot, owner_client, running)
    operator = Operator(owner)
    config = load_config(setup.config.path)
    pairing = asyncio.create_task(
        pair(config, operator.say, operator.confirm, owner=setup.owner.user_id, request_wait_s=1)
    )
    incoming = await owner.wait_verification_request(setup.bot.user_id, timeout=60)
    assert incoming["room_id"] == room
    request_id = incoming["request_id"]
    operator.request_id.set_result(request_id)
    await owner.accept_verification(request_id)
    await owner.start_sas(request_id, wait_for_other=True)
    await owner.sas_emoji(request_id)
    await owner.confirm_sas(request_id)
    assert await asyncio.wait_for(pairing, 60) == 0

    await assert_paired(setup, owner, request_id, operator, homeserver)
    await still_answers(setup, owner, room, fake_api, running)


@pytest.mark.parametrize("who_says_no", ["operator", "owner"])
async def test_emoji_that_do_not_match_end_pairing_with_nothing_signed_or_pinned(
    who_says_no: str,
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    homeserver: Homeserver,
    running: list[BotProcess],
) -> None:
    setup, owner, room = await dm_with_stopped_bot(make_bot, owner_client, running)
    # The operator says no, or never answers before the owner's phone says no.
    operator = Operator(owner, answer=False if who_says_no == "operator" else None)
    config = load_config(setup.config.path)
    pairing = asyncio.create_task(
        pair(config, operator.say, operator.confirm, owner=setup.owner.user_id, request_wait_s=60)
    )
    await first_of(pairing, operator.waiting)
    request_id = await owner.request_verification(room, setup.bot.user_id)
    operator.request_id.set_result(request_id)
    await owner.start_sas(request_id)
    await owner.sas_emoji(request_id)
    if who_says_no == "owner":
        await owner.confirm_sas(request_id, match=False)

    with pytest.raises(PairingFailed) as failed:
        await asyncio.wait_for(pairing, 60)
    assert "m.mismatched_sas" in str(failed.value) or "did not match" in str(failed.value)
    assert "nothing was signed or pinned" in failed.value.one_line()
    ended = await owner.verification_done(request_id)
    assert ended["phase"] == "cancelled"
    assert ended["code"] == "m.mismatched_sas"
    expected_canceller = setup.bot.user_id if who_says_no == "operator" else setup.owner.user_id
    assert ended["cancelled_by"] == expected_canceller
    assert (await owner.user_verification(setup.bot.user_id))["is_cross_signing_verified"] is False
    assert all(how != "paired" for _user, _master, how in pins(setup))
    assert not signed_by_bot(published(homeserver, setup), setup)
    await still_answers(setup, owner, room, fake_api, running)


async def test_pairing_refuses_while_the_daemon_runs(
    make_bot: Callable[..., BotSetup], running: list[BotProcess]
) -> None:
    setup = make_bot()
    bot = await setup.process().start()
    running.append(bot)
    config = load_config(setup.config.path)

    async def never(_emoji: Emoji) -> bool:
        raise AssertionError("pairing must not get this far")

    with pytest.raises(AlreadyRunning) as refused:
        await pair(config, lambda _text: None, never)
    assert "stop the daemon" in refused.value.one_line()


async def test_pairing_is_how_the_operator_trusts_an_owners_reset_identity(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    homeserver: Homeserver,
    running: list[BotProcess],
) -> None:
    setup = make_bot()
    bot = await setup.process().start()
    running.append(bot)
    first = await owner_client(setup.owner)
    room = await first.create_dm(setup.bot.user_id)
    await first.wait_join(room, setup.bot.user_id)
    fake_api.reply("hello owner")
    await first.send_text(room, "hello")
    await first.wait_message(room, sender=setup.bot.user_id, contains="hello owner")
    (pinned,) = pins(setup)
    assert pinned[2] == "first contact"
    # The owner resets their identity from a new device; the bot now ignores them.
    owner = await owner_client(setup.owner, strict=False, name="reset")
    # matrix-js-sdk vouches (MACs) only for an own identity it counts as verified, and after
    # the first reset it still holds the old one as its own; a second reset settles it.
    # Seen here: now and then the first extra reset does not settle it either; a bounded
    # number of tries keeps the test about the bot, not about the js-sdk's timing.
    for attempt in range(3):
        await owner.bootstrap_cross_signing(setup.owner.password)
        try:
            await owner.wait_user_verified(setup.owner.user_id, timeout=15)
            break
        except JsClientError:
            if attempt == 2:
                raise
    assert await bot.stop() == 0

    operator = Operator(owner)
    config = load_config(setup.config.path)
    pairing = asyncio.create_task(
        pair(config, operator.say, operator.confirm, owner=setup.owner.user_id, request_wait_s=60)
    )
    await first_of(pairing, operator.waiting)
    request_id = await owner.request_verification(room, setup.bot.user_id)
    operator.request_id.set_result(request_id)
    await owner.start_sas(request_id)
    await owner.sas_emoji(request_id)
    await owner.confirm_sas(request_id)
    assert await asyncio.wait_for(pairing, 60) == 0

    await assert_paired(setup, owner, request_id, operator, homeserver)
    assert pins(setup)[0][1] != pinned[1], "the new identity replaced the old pin"
    await still_answers(setup, owner, room, fake_api, running)
