"""Helpers of the schedule tests: the bot's test clock (`[schedule] test_clock = true`: the
bot's clock adds the seconds written to `<state>/clock-offset`), and reading reminders and
tool results back."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from fake_messages_api import FakeMessagesAPI

from .bot import BotConfig
from .jsclient import JsClient


def schedule_config(zone: str = "Europe/Berlin", more: str = "") -> str:
    return f"""
[schedule]
test_clock = true
timezone = "{zone}"
{more}
"""


def set_clock(config: BotConfig, when: datetime) -> float:
    """Make the bot's clock read `when` now; returns the offset written."""
    offset = when.timestamp() - time.time()
    path = config.state / "clock-offset"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(f"{offset:.3f}")
    temporary.replace(path)
    return offset


def reminders_in(messages: list[dict[str, Any]], bot: str) -> list[dict[str, Any]]:
    """The bot's fired reminders: text messages that mention someone."""
    return [
        m
        for m in messages
        if m["sender"] == bot
        and m["type"] == "m.room.message"
        and "m.mentions" in m["content"]
        and m["content"]["body"].startswith("⏰")
    ]


def schedule_call(title: str, prompt: str, **when: str) -> tuple[str, dict[str, str]]:
    return ("schedule", {"title": title, "prompt": prompt, **when})


def tool_results(api: FakeMessagesAPI) -> list[str]:
    """The text of every tool result the bot sent the model."""
    found = []
    for request in api.requests:
        for block in request.body["messages"][-1]["content"]:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                found.append(str(block.get("content")))
    return found


async def set_reminder(
    owner: JsClient,
    room: str,
    bot_id: str,
    api: FakeMessagesAPI,
    ask: str,
    *calls: tuple[str, dict[str, str]],
) -> str:
    """The owner asks; the scripted model calls the tool(s) and confirms."""
    api.reply(tools=list(calls))
    api.reply("Reminder set.")
    sent = await owner.send_text(room, ask)
    await owner.wait_message(room, sender=bot_id, contains="Reminder set.")
    return sent
