"""The Messages API through the room, where only the room shows it: a deprecated model is
reported at start, and once in the room across restarts of the bot process. Synapse, a
strict js client, the bot process, the strict stand-in. What the queue and the agent make of
the API's bad days (broken streams, stop reasons, refusals, a 413, a refused key, `!retry`,
`!new`, `!cancel #n`, `!model`) is in the worker tier: tests/test_api_worker.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import BotSetup, started
from fake_messages_api import FakeMessagesAPI
from harness.bot import BotProcess
from harness.jsclient import JsClient

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]


def bot_texts(messages: list[dict[str, Any]], bot: str) -> list[str]:
    return [
        str(m["content"].get("body", ""))
        for m in messages
        if m["sender"] == bot and m["type"] == "m.room.message"
    ]


async def test_a_deprecated_model_is_reported_at_start_and_once_in_the_room(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(
        make_bot, owner_client, running, model="claude-sonnet-4-5"
    )
    bot_id = setup.bot.user_id
    (logged,) = await bot.wait_log("model.deprecated")
    assert logged["replacement"] == "claude-sonnet-5-5"
    # The first start had no room to say it in; the next start says it there, once.
    for starts in (2, 3):
        await bot.stop()
        bot = await setup.process().start()
        running.append(bot)
        await bot.wait_log("model.deprecated", count=starts)
    said = await owner.wait_message(room, sender=bot_id, contains="is deprecated")
    assert "claude-sonnet-5-5" in said["body"]
    await owner.send_text(room, "!status")
    await owner.wait_message(room, sender=bot_id, contains="Queue:")
    texts = bot_texts(await owner.messages(room), bot_id)
    assert sum("is deprecated" in t for t in texts) == 1
