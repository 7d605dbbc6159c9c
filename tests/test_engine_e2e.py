"""The agent engine through the room: a `!model` switch asked for from the phone reaches the
next task's request — Synapse, a strict js client, the bot process and the scripted Messages
API. Compaction, "prompt is too long", `!compact`, usage and memory are in the worker tier:
tests/test_engine_worker.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from conftest import BotSetup, started
from fake_messages_api import FakeMessagesAPI
from harness.bot import BotProcess
from harness.jsclient import JsClient

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]
# The shell calls these tests script are plain echoes.
ECHO_ALLOWED = '\n[permissions]\nallow = ["Bash(echo:*)"]\n'


async def test_model_command_switches_the_model_for_the_next_task(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, _bot, owner, room = await started(make_bot, owner_client, running, ECHO_ALLOWED)
    bot_id = setup.bot.user_id
    await owner.send_text(room, "!model")
    shown = await owner.wait_message(room, sender=bot_id, contains="I use")
    assert "claude-sonnet-4-6" in shown["body"]
    await owner.send_text(room, "!model claude-nonexistent-1")
    await owner.wait_message(room, sender=bot_id, contains="knows no model")
    await owner.send_text(room, "!model claude-haiku-4-5")
    await owner.wait_message(room, sender=bot_id, contains="From the next task on I use")
    fake_api.reply("Answered by haiku.")
    await owner.send_text(room, "which model?")
    await owner.wait_message(room, sender=bot_id, contains="Answered by haiku")
    messages = [r for r in fake_api.requests if r.path == "/v1/messages"]
    assert [r.body["model"] for r in messages] == ["claude-haiku-4-5"]
