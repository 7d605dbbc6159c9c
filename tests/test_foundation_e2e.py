"""The first round trip, end to end: a real Synapse, a real second client (matrix-js-sdk with
Rust crypto), the bot as a real process, and the scripted Messages API.

The owner's client is cross-signed and runs in the strict device-isolation mode (MSC4153's
"exclude insecure devices"), so each round trip also proves the bot cross-signed its device.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from conftest import BotSetup, beside_bot_start
from fake_messages_api import FakeMessagesAPI
from harness.bot import BotProcess, console_script
from harness.jsclient import JsClient

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]


async def open_dm(owner: JsClient, bot: BotSetup) -> str:
    """The owner invites the bot to an encrypted DM and waits until it has joined."""
    room = await owner.create_dm(bot.bot.user_id)
    await owner.wait_join(room, bot.bot.user_id, timeout=30)
    return room


async def test_owner_message_is_answered_in_the_encrypted_dm(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup = make_bot()
    bot = setup.process()
    running.append(bot)
    owner = await beside_bot_start(bot, owner_client(setup.owner))
    room = await open_dm(owner, setup)
    fake_api.reply("All **three** tests pass.\n\n- `test_a`\n- `test_b`")

    sent = await owner.send_text(room, "run the tests please")
    answer = await owner.wait_message(room, sender=setup.bot.user_id, timeout=30)

    assert answer["body"] == "All **three** tests pass.\n\n- `test_a`\n- `test_b`"
    assert answer["was_encrypted"] is True
    assert answer["decryption_failed"] is False
    assert "<strong>three</strong>" in answer["content"]["formatted_body"]
    assert answer["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == sent
    request = fake_api.requests[-1].body
    assert request["messages"][-1]["role"] == "user"
    assert "run the tests please" in request["messages"][-1]["content"][-1]["text"]
    assert request["stream"] is True
    # Every message event of the bot's travelled encrypted (state events never are).
    bot_messages = [
        m
        for m in await owner.messages(room)
        if m["sender"] == setup.bot.user_id and m["type"] == "m.room.message"
    ]
    assert bot_messages and all(m["wire_type"] == "m.room.encrypted" for m in bot_messages)
    assert await owner.decryption_failures() == []


async def test_restart_keeps_the_device_and_the_conversation(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup = make_bot()
    bot = await setup.process().start()
    running.append(bot)
    first_banner = next(line for line in bot.stdout if "device" in line)
    owner = await owner_client(setup.owner)
    room = await open_dm(owner, setup)
    fake_api.reply("My name is Dispatch.")
    await owner.send_text(room, "what is your name?")
    first = await owner.wait_message(room, sender=setup.bot.user_id, contains="Dispatch")

    assert await bot.stop() == 0
    bot = await setup.process().start()
    running.append(bot)
    assert next(line for line in bot.stdout if "device" in line) == first_banner

    fake_api.reply("You asked for my name.")
    await owner.send_text(room, "what did I ask you before?")
    second = await owner.wait_message(
        room, sender=setup.bot.user_id, contains="You asked", after_event_id=first["event_id"]
    )
    assert second["was_encrypted"] and not second["decryption_failed"]
    texts = str(fake_api.requests[-1].body["messages"])
    assert "what is your name?" in texts
    assert "My name is Dispatch." in texts
    devices = {d["device_id"] for d in await owner.devices(setup.bot.user_id)}
    assert len(devices) == 1, f"one device for the bot's life, got {devices}"


async def test_invite_from_a_stranger_is_rejected(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    homeserver: object,
    running: list[BotProcess],
) -> None:
    setup = make_bot()
    bot = await setup.process().start()
    running.append(bot)
    stranger = await owner_client(homeserver.new_user("stranger"), name="stranger")  # type: ignore[attr-defined]
    room = await stranger.create_dm(setup.bot.user_id)
    # The bot's rejection shows up on the stranger's side as the invite turning to "leave".
    await stranger.call(
        "wait_membership",
        room_id=room,
        user_id=setup.bot.user_id,
        membership="leave",
        timeout_ms=30000,
    )
    rejected = await bot.wait_log("room.invite_rejected", where=lambda r: r.get("room") == room)
    assert rejected[0]["reason"] == "inviter is not an owner"
    assert bot.log_events("room.joined") == []


async def test_second_instance_on_the_same_state_refuses(
    make_bot: Callable[..., BotSetup], running: list[BotProcess]
) -> None:
    setup = make_bot()
    first = await setup.process().start()
    running.append(first)
    second = setup.process()
    await second.spawn()
    code = await second.wait_exit(30)
    assert code == 4
    assert len(second.stderr) == 1
    assert "already running" in second.stderr[0] and "stop it first" in second.stderr[0]


async def test_wrong_password_is_one_clear_line(
    make_bot: Callable[..., BotSetup], running: list[BotProcess]
) -> None:
    setup = make_bot()
    setup.config.password = "not-the-password"
    setup.config.write()
    bot = setup.process()
    await bot.spawn()
    code = await bot.wait_exit(30)
    assert code == 6
    errors = [line for line in bot.stderr if line.startswith("dispatch-matrix:")]
    assert len(errors) == 1
    assert "rejected the password" in errors[0] and "check [matrix] password" in errors[0]
    assert "not-the-password" not in "\n".join(bot.stderr + bot.stdout)


async def test_unreachable_homeserver_is_retried_not_fatal(
    make_bot: Callable[..., BotSetup], running: list[BotProcess]
) -> None:
    setup = make_bot()
    setup.config.homeserver = "http://127.0.0.1:9"  # nothing listens on the discard port
    setup.config.write()
    bot = setup.process()
    await bot.spawn()
    running.append(bot)
    # Said once, with the next try's time; the tries after it are debug lines, spaced wider.
    retries = await bot.wait_log("matrix.retrying", count=2, timeout=30)
    assert retries[1]["retry_in"] > retries[0]["retry_in"]
    [said] = bot.log_events("matrix.unreachable")
    assert said["level"] == "warning" and said["next_try"]
    assert "[matrix] homeserver" in said["fix"]
    assert bot.process is not None and bot.process.returncode is None
    assert await bot.stop() == 0


async def test_malformed_config_is_one_clear_line(tmp_path: object) -> None:
    config = tmp_path / "config.toml"  # type: ignore[operator]
    config.write_text('[matrix]\nhomeserver = "matrix.example.org"\n')
    process = await asyncio.create_subprocess_exec(
        console_script(),
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1
    assert "matrix.homeserver" in lines[0] and "http(s) URL" in lines[0]
