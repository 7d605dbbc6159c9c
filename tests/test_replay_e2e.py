"""Replay of an owner's old encrypted event after a restart, end to end: a hostile
homeserver (here: the owner's own account, which the homeserver could forge) sends the
`m.room.encrypted` content of an old message again under a new event id. It decrypts, but
the bot refuses it before the trust gate: no task, no "yes", no notice; it keeps working."""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import vodozemac
from conftest import BotSetup, Homeserver, started
from fake_messages_api import FakeMessagesAPI
from harness import http
from harness.bot import BotProcess
from harness.jsclient import JsClient

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]

PERMISSIONS = """
[permissions]
allow = ["Bash(echo:*)"]
approval_timeout_s = 10
"""


def wire_content(base: str, token: str, room: str, event_id: str) -> dict[str, Any]:
    """The encrypted content of an event as the homeserver holds it."""
    path = (
        f"/_matrix/client/v3/rooms/{urllib.parse.quote(room)}/event/{urllib.parse.quote(event_id)}"
    )
    event = http.call(base, "GET", path, token=token)
    assert event["type"] == "m.room.encrypted", "the owner's message went encrypted"
    content: dict[str, Any] = event["content"]
    return content


def ledger(setup: BotSetup, query: str, *args: Any) -> list[Any]:
    with sqlite3.connect(setup.config.state / "dispatch.db") as db:
        return db.execute(query, args).fetchall()


def asked(api: FakeMessagesAPI) -> list[str]:
    """The owner text each model request ended with."""
    return [
        r.body["messages"][-1]["content"][-1].get("text", "").splitlines()[-1]
        for r in api.requests
        if r.body["messages"][-1]["content"][-1].get("type") == "text"
    ]


async def restarted(setup: BotSetup, bot: BotProcess, running: list[BotProcess]) -> BotProcess:
    assert await bot.stop() == 0
    again = await setup.process().start()
    running.append(again)
    return again


async def test_a_replayed_task_after_a_restart_never_runs(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    homeserver: Homeserver,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running)
    bot_id = setup.bot.user_id

    original = await owner.send_text(room, "deploy the release once")
    await owner.wait_message(room, sender=bot_id, contains="deploy the release once")
    token = http.login(homeserver.url, setup.owner.user_id, setup.owner.password)
    content = wire_content(homeserver.url, token, room, original)
    index = vodozemac.MegolmMessage.from_base64(content["ciphertext"]).message_index()

    bot = await restarted(setup, bot, running)
    replay = http.send_event(homeserver.url, token, room, "m.room.encrypted", content)
    assert replay != original
    # The bot keeps answering (in room order, after the replay), and the model heard the
    # release order once.
    await owner.send_text(room, "what did you do")
    await owner.wait_message(room, sender=bot_id, contains="what did you do")
    assert asked(fake_api) == ["deploy the release once", "what did you do"]
    [refused] = await bot.wait_log("message.replayed", where=lambda r: r["event_id"] == replay)
    assert refused["first_event_id"] == original
    assert refused["index"] == index and refused["session"] == content["session_id"]
    assert ledger(setup, "SELECT id FROM tasks WHERE event_id = ?", replay) == []
    assert ledger(setup, "SELECT event_id FROM undecrypted") == []
    answers = [
        m
        for m in await owner.messages(room)
        if m["sender"] == bot_id
        and (m["content"].get("m.relates_to") or {}).get("m.in_reply_to", {}).get("event_id")
        == replay
    ]
    assert answers == [], "a replay gets no answer, not even a notice"
    assert bot.log_events("message.ignored") == []


async def test_a_replayed_yes_after_a_restart_approves_nothing(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    homeserver: Homeserver,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running, PERMISSIONS)
    bot_id, work = setup.bot.user_id, setup.config.folder / "work"

    fake_api.reply(tools=[("bash", {"command": f"touch {work}/approved"})])
    fake_api.reply("Made the approved file.")
    await owner.send_text(room, "make the approved file")
    first = await owner.wait_message(room, sender=bot_id, contains="May I?")
    yes = await owner.send_text(room, "yes")
    await owner.wait_message(room, sender=bot_id, contains="Made the approved file")
    assert (work / "approved").exists()
    token = http.login(homeserver.url, setup.owner.user_id, setup.owner.password)
    content = wire_content(homeserver.url, token, room, yes)

    bot = await restarted(setup, bot, running)
    fake_api.reply(tools=[("bash", {"command": f"touch {work}/never"})])
    fake_api.reply("I left it alone.")
    await owner.send_text(room, "make the never file")
    await owner.wait_message(
        room, sender=bot_id, contains="May I?", after_event_id=first["event_id"]
    )
    replay = http.send_event(homeserver.url, token, room, "m.room.encrypted", content)
    await owner.wait_message(room, sender=bot_id, contains="I left it alone", timeout=40)
    assert not (work / "never").exists()
    # The question went unanswered: the replayed "yes" decided nothing.
    assert [r["by"] for r in bot.log_events("approval.decided")] == [setup.owner.user_id, "timeout"]
    [refused] = await bot.wait_log("message.replayed", where=lambda r: r["event_id"] == replay)
    assert refused["first_event_id"] == yes
