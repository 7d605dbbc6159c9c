"""The path most owners take: an account they already have, Element on their phone.

`init` against the homeserver opens the encrypted DM itself, so the owner only accepts the
invite; the bot, once running, welcomes them there exactly once (also across a restart), and
answers. A DM the owner opens themselves is welcomed once too. The owner's client is the
strict one (cross-signed, excluding devices that are not), so every welcome it reads also
proves the bot's device was cross-signed before the room had any message.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import BotSetup, Homeserver, started
from fake_messages_api import FakeMessagesAPI
from harness.bot import BotConfig, BotProcess, console_script
from harness.jsclient import JsClient

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]
# A phrase of the welcome (matrix/texts.py), and what marks it as the welcome alone.
WELCOME = "I obey only"


async def cli(*args: str, timeout: float = 120) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        console_script(),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def bot_of(config: Path, api: FakeMessagesAPI) -> BotProcess:
    """The bot `init` configured (its config names no API: the environment does)."""
    process = BotProcess(BotConfig(config.parent, "", "", "", [], api.url))
    process.env = {"ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": "sk-ant-test-0000000"}
    return process


async def welcomes(owner: JsClient, room: str, bot: str) -> list[dict[str, Any]]:
    return [
        m
        for m in await owner.messages(room)
        if m["sender"] == bot
        and m["type"] == "m.room.message"
        and WELCOME in str(m["content"].get("body", ""))
    ]


async def test_init_opens_the_encrypted_dm_and_the_owner_only_accepts(
    homeserver: Homeserver,
    fake_api: FakeMessagesAPI,
    owner_client: StartClient,
    tmp_path: Path,
    running: list[BotProcess],
) -> None:
    bot, owner_account = homeserver.new_user("bot"), homeserver.new_user("owner")
    owner = await owner_client(owner_account)
    secret = tmp_path / "pw"
    secret.write_text(bot.password)
    config = tmp_path / "state" / "config.toml"
    code, out, err = await cli(
        "init",
        "--config",
        str(config),
        "--homeserver",
        homeserver.url,
        "--user-id",
        bot.user_id,
        "--password-file",
        str(secret),
        "--owner",
        owner_account.user_id,
    )
    assert code == 0, out + err
    device = out.split("as device ")[1].split(";")[0]
    assert f"device {device}" in out and "pair --config" in out, "what to verify, and how"
    assert f"run --config {config}" in out

    # The phone sees an invite to an encrypted DM from the bot, and only accepts it.
    room = await owner.wait_invite(timeout=30)
    invite = await owner.room_info(room)
    assert invite["inviter"] == bot.user_id and invite["is_direct"] is True
    assert invite["encryption"] == {"algorithm": "m.megolm.v1.aes-sha2"}
    assert f"{owner_account.user_id} invited: {room}" in out

    process = bot_of(config, fake_api)
    await process.start()
    running.append(process)
    assert any(f"accept the invite from {bot.user_id}" in line for line in process.stdout)
    await owner.join(room)
    joined = await owner.room_info(room)
    # The owner's standing equals the bot's: a second creator (room version 12 on), or 100.
    owner_level = joined["power_levels"]["users"].get(owner_account.user_id)
    assert owner_account.user_id in joined["additional_creators"] or owner_level == 100, joined
    assert joined["creator"] == bot.user_id
    assert joined["join_rule"] == "invite"

    welcome = await owner.wait_message(room, sender=bot.user_id, contains=WELCOME, timeout=30)
    assert welcome["was_encrypted"] and not welcome["decryption_failed"]
    assert welcome["content"]["msgtype"] == "m.notice"
    for command in ("!help", "!cancel", "!pause", "yes"):
        assert command in welcome["body"]

    fake_api.reply("Hello from the DM init opened.")
    await owner.send_text(room, "are you there?")
    answer = await owner.wait_message(room, sender=bot.user_id, contains="init opened")
    assert answer["was_encrypted"] and not answer["decryption_failed"]

    # A restart remembers the welcome: the next answer comes, and no second welcome.
    assert await process.stop() == 0
    process = bot_of(config, fake_api)
    await process.start()
    running.append(process)
    fake_api.reply("Still here after a restart.")
    await owner.send_text(room, "and now?")
    await owner.wait_message(
        room, sender=bot.user_id, contains="after a restart", after_event_id=answer["event_id"]
    )
    assert len(await welcomes(owner, room, bot.user_id)) == 1
    assert await owner.decryption_failures() == []


async def test_init_again_keeps_the_dm_it_opened(
    homeserver: Homeserver, owner_client: StartClient, tmp_path: Path
) -> None:
    bot, owner_account = homeserver.new_user("bot"), homeserver.new_user("owner")
    config = tmp_path / "state" / "config.toml"
    flags = [
        "--config",
        str(config),
        "--homeserver",
        homeserver.url,
        "--user-id",
        bot.user_id,
        f"--password={bot.password}",
        "--owner",
        owner_account.user_id,
    ]
    code, first, err = await cli("init", *flags)
    assert code == 0, first + err
    code, second, err = await cli("init", "--force", *flags)
    assert code == 0, second + err
    room = first.split(f"{owner_account.user_id} invited: ")[1].split()[0]
    assert f"{owner_account.user_id} already has its DM: {room}" in second
    owner = await owner_client(owner_account)
    assert await owner.wait_invite(room) == room


async def test_init_with_no_dm_opens_none(
    homeserver: Homeserver, owner_client: StartClient, tmp_path: Path
) -> None:
    bot, owner_account = homeserver.new_user("bot"), homeserver.new_user("owner")
    code, out, err = await cli(
        "init",
        "--config",
        str(tmp_path / "s" / "config.toml"),
        "--homeserver",
        homeserver.url,
        "--user-id",
        bot.user_id,
        f"--password={bot.password}",
        "--owner",
        owner_account.user_id,
        "--no-dm",
    )
    assert code == 0, out + err
    assert "invited" not in out and f"start a chat with {bot.user_id}" in out


async def test_a_dm_the_owner_opens_is_welcomed_once(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, _bot, owner, room = await started(make_bot, owner_client, running, welcome=True)
    bot = setup.bot.user_id
    welcome = await owner.wait_message(room, sender=bot, contains=WELCOME, timeout=30)
    assert welcome["was_encrypted"] and not welcome["decryption_failed"]
    fake_api.reply("Answered after the welcome.")
    await owner.send_text(room, "hello")
    await owner.wait_message(room, sender=bot, contains="after the welcome")
    assert len(await welcomes(owner, room, bot)) == 1


async def test_a_message_sent_before_the_first_run_is_answered_at_start(
    homeserver: Homeserver,
    fake_api: FakeMessagesAPI,
    owner_client: StartClient,
    tmp_path: Path,
    running: list[BotProcess],
) -> None:
    """The owner accepts at once and writes before `run`: init cross-signed the bot's device,
    so the strict phone shared its keys with it, and the bot was born at init, so the
    message is a task, not history."""
    bot, owner_account = homeserver.new_user("bot"), homeserver.new_user("owner")
    owner = await owner_client(owner_account)
    config = tmp_path / "state" / "config.toml"
    code, out, err = await cli(
        "init",
        "--config",
        str(config),
        "--homeserver",
        homeserver.url,
        "--user-id",
        bot.user_id,
        f"--password={bot.password}",
        "--owner",
        owner_account.user_id,
    )
    assert code == 0, out + err
    room = await owner.wait_invite(timeout=30)
    await owner.join(room)
    await owner.send_text(room, "written before the bot ever ran")
    fake_api.reply("Read it at my first start.")
    process = bot_of(config, fake_api)
    await process.start()
    running.append(process)
    answer = await owner.wait_message(room, sender=bot.user_id, contains="first start")
    assert answer["was_encrypted"] and not answer["decryption_failed"]
    assert "written before the bot ever ran" in str(fake_api.requests[-1].body["messages"])
    await owner.wait_message(room, sender=bot.user_id, contains=WELCOME)
    assert len(await welcomes(owner, room, bot.user_id)) == 1
    assert await owner.decryption_failures() == []


async def test_init_for_an_account_with_an_identity_made_elsewhere_says_what_to_do(
    homeserver: Homeserver, owner_client: StartClient, tmp_path: Path
) -> None:
    """A bot account first signed in with Element has cross-signing keys the bot does not
    hold: no DM is opened (the phone would share no keys with the bot), the config is still
    written, and init names the fix."""
    bot, owner_account = homeserver.new_user("bot"), homeserver.new_user("owner")
    elsewhere = await owner_client(bot, name="bot-in-element")
    await elsewhere.close()
    config = tmp_path / "state" / "config.toml"
    code, out, err = await cli(
        "init",
        "--config",
        str(config),
        "--homeserver",
        homeserver.url,
        "--user-id",
        bot.user_id,
        f"--password={bot.password}",
        "--owner",
        owner_account.user_id,
    )
    assert code == 0, out + err
    assert "no DM opened" in out and "reset-identity" in out and "invited" not in out
    assert config.exists()
