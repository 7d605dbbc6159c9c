"""The pure parts of the first contact: when a DM is ready for its welcome, the welcome's
words, the DM init creates, homeserver discovery, and the store's memory of welcomes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
from aiohttp import web

from dispatch_matrix.app.config import load_config
from dispatch_matrix.app.onboarding import InitAnswers, ask_missing, explain_next
from dispatch_matrix.app.start_notices import banner
from dispatch_matrix.core.ids import RoomID, UserID
from dispatch_matrix.matrix import texts
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.direct import MEGOLM, OpenedDM, dm_create_body
from dispatch_matrix.matrix.discovery import WELL_KNOWN, base_url_of, discover, server_of
from dispatch_matrix.matrix.outbox import Outbox
from dispatch_matrix.matrix.welcome import Welcome, ready
from dispatch_matrix.store import Database
from dispatch_matrix.store.db import Session

BOT, OWNER, OTHER_OWNER, STRANGER = "@bot:x", "@me:x", "@partner:x", "@eve:x"
OWNERS = {OWNER, OTHER_OWNER}


@pytest.mark.parametrize(
    ("encrypted", "joined", "invited", "expected"),
    [
        # init's DM: the owner only invited yet, then joined.
        (True, {BOT}, {OWNER}, False),
        (True, {BOT, OWNER}, set(), True),
        # A DM the owner opened (they joined first, the bot after).
        (True, {OWNER, BOT}, set(), True),
        # Both owners in one room.
        (True, {OWNER, OTHER_OWNER, BOT}, set(), True),
        # Plaintext: the bot would obey nothing there, so it says nothing.
        (False, {BOT, OWNER}, set(), False),
        # Someone else in the room, or invited: not a private DM.
        (True, {BOT, OWNER, STRANGER}, set(), False),
        (True, {BOT, OWNER}, {STRANGER}, False),
        # No owner joined (the owner left, or only a stranger).
        (True, {BOT}, set(), False),
    ],
)
def test_ready_for_the_welcome(
    encrypted: bool, joined: set[str], invited: set[str], expected: bool
) -> None:
    assert (
        ready(encrypted=encrypted, joined=joined, invited=invited, owners=OWNERS, bot=BOT)
        is expected
    )


def test_the_welcome_says_whom_it_obeys_and_how_to_stop_approve_and_get_help() -> None:
    text = texts.welcome(OWNER, {OWNER}, 600)
    assert f"I obey only you ({OWNER})," in text and "verified sessions" in text
    for command in ("`!cancel`", "`!pause`", "`!help`", "**yes**", "**no**"):
        assert command in text
    assert "after 10 min" in text
    assert "after 1 min" in texts.welcome(OWNER, {OWNER}, 5)
    both = texts.welcome(OWNER, [OTHER_OWNER, OWNER], 600)
    assert f"I obey only you ({OWNER}) and {OTHER_OWNER}," in both


def test_the_dm_init_creates_is_an_encrypted_trusted_private_chat() -> None:
    body = dm_create_body(OWNER)
    assert body["preset"] == "trusted_private_chat" and body["is_direct"] is True
    assert body["invite"] == [OWNER]
    state = {event["type"]: event["content"] for event in body["initial_state"]}
    assert state["m.room.encryption"] == {"algorithm": MEGOLM}
    assert state["m.room.history_visibility"] == {"history_visibility": "invited"}
    # Room version 12 refuses a creator listed in the power levels: the preset does it all.
    assert "power_level_content_override" not in body


@pytest.mark.parametrize(
    ("user_id", "server"),
    [
        ("@bot:example.org", "example.org"),
        ("@bot:matrix.example.org:8448", "matrix.example.org:8448"),
        ("bot", None),
        ("@bot", None),
        ("@bot:", None),
        ("bot:example.org", None),
    ],
)
def test_server_of_a_user_id(user_id: str, server: str | None) -> None:
    assert server_of(user_id) == server


@pytest.mark.parametrize(
    ("document", "base"),
    [
        # The trailing slash goes.
        (
            {"m.homeserver": {"base_url": "https://matrix-client.example.org/"}},
            "https://matrix-client.example.org",
        ),
        ({"m.homeserver": {"base_url": "https://m.example.org"}}, "https://m.example.org"),
        ({"m.homeserver": {"base_url": "ftp://m.example.org"}}, None),
        ({"m.homeserver": "https://m.example.org"}, None),
        ({}, None),
        ([], None),
    ],
)
def test_base_url_of_a_well_known_document(document: object, base: str | None) -> None:
    assert base_url_of(document) == base


@pytest.fixture
async def well_known() -> AsyncIterator[tuple[str, dict[str, object]]]:
    """A loopback server answering the well-known path with what the test puts in `served`."""
    served: dict[str, object] = {"status": 200, "text": "{}"}

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(status=int(str(served["status"])), text=str(served["text"]))

    app = web.Application()
    app.router.add_get(WELL_KNOWN, handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"127.0.0.1:{port}", served
    finally:
        await runner.cleanup()


async def test_discovery_follows_the_well_known_document(
    well_known: tuple[str, dict[str, object]],
) -> None:
    server, served = well_known
    served["text"] = json.dumps({"m.homeserver": {"base_url": "https://hs.example.org/"}})
    assert await discover(server, scheme="http") == "https://hs.example.org"


@pytest.mark.parametrize(("status", "text"), [(404, "not here"), (200, "not json"), (200, "[]")])
async def test_discovery_without_a_document_finds_none(
    well_known: tuple[str, dict[str, object]], status: int, text: str
) -> None:
    server, served = well_known
    served["status"], served["text"] = status, text
    assert await discover(server, scheme="http") is None


async def test_discovery_of_an_unreachable_server_finds_none() -> None:
    assert await discover("127.0.0.1:9", scheme="http", timeout_s=5) is None


def test_a_welcome_is_remembered_once_per_room(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    db.add_owner_room(RoomID("!a:x"), UserID(OWNER), opened_by="bot")
    db.add_owner_room(RoomID("!b:x"), UserID(OWNER), opened_by="owner")
    db.add_owner_room(RoomID("!a:x"), UserID(OTHER_OWNER), opened_by="owner")
    assert [(r.room_id, r.owner, r.opened_by) for r in db.unwelcomed_rooms()] == [
        ("!a:x", OWNER, "bot"),
        ("!b:x", OWNER, "owner"),
    ]
    db.mark_welcomed(RoomID("!a:x"), "$welcome")
    db.close()
    again = Database.open(tmp_path / "d.db")
    assert [r.room_id for r in again.unwelcomed_rooms()] == ["!b:x"]
    assert [r.welcomed for r in again.owner_rooms()] == [True, False]
    again.close()


def test_init_says_what_to_accept_verify_and_run(tmp_path: Path) -> None:
    answers = InitAnswers(config_path=tmp_path / "c.toml", user_id=BOT, owners=[OWNER])
    dm = OpenedDM(UserID(OWNER), RoomID("!dm:x"), created=True)
    text = explain_next(answers, "DEVICEID", [dm], tmp_path / "c.toml")
    assert f"accept the invite from {BOT}" in text and f"(signed in as {OWNER})" in text
    assert text.startswith("\nNext:\n  1. On your phone")
    answers.local = True
    local = explain_next(answers, "DEVICEID", [dm], tmp_path / "c.toml")
    # The private homeserver's sign-in steps, printed before, already end with the invite.
    assert "phone" not in local and "accept the invite" not in local
    assert local.startswith("\nNext:\n  1. Optional, to see it as verified")
    answers.local = False
    assert "device DEVICEID" in text and "pair --config" in text
    assert text.rstrip().endswith(f"run --config {tmp_path / 'c.toml'}")
    without = explain_next(answers, "DEVICEID", [], tmp_path / "c.toml")
    assert f"start a chat with {BOT}" in without and "accept the invite" not in without


def test_init_asks_for_the_homeserver_only_when_the_id_does_not_lead_to_it(
    tmp_path: Path,
) -> None:
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return {"Bot ": "@mybot:example.org", "Home": "https://hs", "Owne": OWNER}[prompt[:4]]

    def found(server: str) -> str | None:
        return {"example.org": "https://matrix.example.org"}.get(server)

    answers = InitAnswers(config_path=tmp_path / "c.toml")
    ask_missing(answers, ask, lambda _prompt: "secret", found)
    assert [prompt[:4] for prompt in asked] == ["Bot ", "Owne"]
    assert answers.homeserver == "https://matrix.example.org" and answers.password == "secret"
    # No well-known document: asked, with the server name as the default.
    asked.clear()
    answers = InitAnswers(config_path=tmp_path / "c.toml", user_id="@b:other.org", owners=[OWNER])
    ask_missing(answers, lambda prompt: asked.append(prompt) or "", lambda _p: "s", found)
    assert asked == ["Homeserver URL [https://other.org]: "]
    assert answers.homeserver == "https://other.org"
    # No server in the id: asked, no default.
    asked.clear()
    answers = InitAnswers(config_path=tmp_path / "c.toml", user_id="mybot", owners=[OWNER])
    ask_missing(answers, ask, lambda _prompt: "secret", found)
    assert [prompt[:4] for prompt in asked] == ["Home"] and answers.homeserver == "https://hs"


def test_the_banner_tells_an_invited_owner_to_accept(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[matrix]\nhomeserver = "https://hs"\nuser_id = "{BOT}"\npassword = "p"\n'
        f'owners = ["{OWNER}"]\n'
    )
    loaded = load_config(config)
    session = Session("https://hs", BOT, "DEVICE", "token")
    assert f"as {OWNER}, accept the invite from {BOT}" in banner(loaded, session, 0.1, [OWNER])
    assert f"start a chat with {BOT}" in banner(loaded, session, 0.1)


class _Room:
    def __init__(self, joined: list[str], invited: list[str]) -> None:
        # nio lists invited members among `users` too.
        self.users = dict.fromkeys(joined)
        self.invited_users = dict.fromkeys(invited)
        self.encrypted = True


class _Rooms:
    def __init__(self) -> None:
        self.rooms: dict[str, _Room] = {}


class _Client:
    def __init__(self) -> None:
        self.client = _Rooms()
        self.user_id = BOT


class _Outbox:
    def __init__(self) -> None:
        self.posted: list[str] = []
        self.sent = asyncio.Event()

    async def post(self, room_id: str, text: str, **kwargs: object) -> str:
        self.posted.append(room_id)
        self.sent.set()
        return "$welcome"


class _Watched:
    """A running `Welcome` on a fresh ledger, counting its looks at the owner rooms."""

    def __init__(self, tmp_path: Path, outbox: _Outbox | None) -> None:
        self.db = Database.open(tmp_path / "d.db")
        self.client = _Client()
        self.welcome = Welcome(
            cast(MatrixClient, self.client), self.db, cast(Outbox, outbox), frozenset(OWNERS), 60
        )
        self.looks: list[str] = []
        self.db._conn.set_trace_callback(self._note)

    def _note(self, sql: str) -> None:
        if sql.lstrip().upper().startswith("SELECT") and "owner_rooms" in sql:
            self.looks.append(sql)

    async def looked(self, n: int) -> None:
        async with asyncio.timeout(5):
            while len(self.looks) < n:
                await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def watched(tmp_path: Path, outbox: _Outbox | None = None) -> AsyncIterator[_Watched]:
    """The welcome running until the block ends; its ledger closed after."""
    watch = _Watched(tmp_path, outbox)
    runner = asyncio.create_task(watch.welcome.run())
    try:
        yield watch
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        watch.db.close()


async def test_the_welcome_looks_again_only_while_a_dm_waits_or_a_room_is_new(
    tmp_path: Path,
) -> None:
    async with watched(tmp_path) as w:
        w.welcome.rooms_changed()  # the run's first sync: one look, nothing recorded
        await w.looked(1)
        w.welcome.rooms_changed()  # a member changed somewhere: nothing waits, no look
        # `init`, in another process, opened a DM: the bot is in a room it was not in at
        # the last look. The owner is only invited yet: the DM waits for its welcome …
        w.db.add_owner_room(RoomID("!dm:x"), UserID(OWNER), opened_by="bot")
        w.client.client.rooms["!dm:x"] = _Room(joined=[BOT, OWNER], invited=[OWNER])
        w.welcome.rooms_changed()
        await w.looked(2)
        w.welcome.rooms_changed()  # … so every change of rooms looks again
        await w.looked(3)
        assert len(w.looks) == 3


async def test_a_dm_the_bot_saw_before_init_recorded_it_is_still_welcomed(
    tmp_path: Path,
) -> None:
    outbox = _Outbox()
    async with watched(tmp_path, outbox) as w:
        w.welcome.rooms_changed()  # the run's first sync: nothing recorded
        await w.looked(1)
        # `init`, in another process, creates the DM; the daemon's sync brings the room
        # before `init` has written it down (it records the room once the homeserver's
        # answer reaches it): the look finds the room but no record.
        w.client.client.rooms["!dm:x"] = _Room(joined=[BOT, OWNER], invited=[OWNER])
        w.welcome.rooms_changed()
        await w.looked(2)
        w.db.add_owner_room(RoomID("!dm:x"), UserID(OWNER), opened_by="bot")
        # The owner accepts: the DM is ready and gets its welcome.
        w.client.client.rooms["!dm:x"] = _Room(joined=[BOT, OWNER], invited=[])
        w.welcome.rooms_changed()
        async with asyncio.timeout(5):
            await outbox.sent.wait()
        assert outbox.posted == ["!dm:x"]
