"""Reminders, schedules and follow-ups end to end, with a moved clock: through Synapse, a
strict js client, the bot process and the scripted Messages API.

The bot runs with `[schedule] test_clock = true`, so its clock adds the seconds a test
writes to `<state>/clock-offset`; no test sleeps for real minutes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from conftest import BotSetup, started
from fake_messages_api import FakeMessagesAPI
from harness.bot import BotProcess
from harness.clock import (
    reminders_in,
    schedule_call,
    schedule_config,
    set_clock,
    set_reminder,
    tool_results,
)
from harness.jsclient import JsClient

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]
BERLIN = ZoneInfo("Europe/Berlin")


async def test_a_reminder_a_minute_ahead_fires_at_its_time_not_before(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running, schedule_config())
    bot_id = setup.bot.user_id
    due = datetime.now(BERLIN).replace(microsecond=0) + timedelta(seconds=90)
    call = schedule_call("Stretch", "Time to stand up and stretch.", at=due.isoformat())
    await set_reminder(owner, room, bot_id, fake_api, "remind me to stretch in 90 s", call)
    assert "Scheduled r1" in tool_results(fake_api)[0]
    assert due.strftime("%H:%M") in tool_results(fake_api)[0]

    set_clock(setup.config, due - timedelta(seconds=30))
    await bot.wait_log("schedule.waiting", where=lambda r: 0 < (r["due_in_s"] or 0) <= 30.5)
    assert reminders_in(await owner.messages(room), bot_id) == [], "not before its time"
    assert bot.log_events("schedule.fired") == []

    set_clock(setup.config, due + timedelta(seconds=1))
    moved = time.monotonic()
    reminder = await owner.wait_message(room, sender=bot_id, contains="⏰")
    print(f"reminder in the room {time.monotonic() - moved:.2f}s after the clock reached it")
    content = reminder["content"]
    assert content["msgtype"] == "m.text", "a notice would not notify"
    assert content["m.mentions"] == {"user_ids": [setup.owner.user_id]}
    assert setup.owner.user_id in content["body"] and "late" not in content["body"]
    assert f"https://matrix.to/#/{setup.owner.user_id}" in content["formatted_body"]
    assert "Time to stand up and stretch." in content["body"] and reminder["was_encrypted"]
    # The fired task runs through the same queue and answers as a reply to the reminder.
    answer = await owner.wait_message(room, sender=bot_id, contains="echo:")
    assert answer["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == reminder["event_id"]
    assert "[Scheduled task r1" in answer["body"] and "stretch" in answer["body"]


async def test_a_reminder_due_while_stopped_fires_once_on_restart_marked_late(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running, schedule_config())
    bot_id = setup.bot.user_id
    now = datetime.now(BERLIN).replace(microsecond=0)
    in_an_hour = (now + timedelta(hours=1)).isoformat()
    call = schedule_call("Call the bank", "Call the bank about the card.", at=in_an_hour)
    await set_reminder(owner, room, bot_id, fake_api, "remind me in an hour", call)
    assert await bot.stop() == 0
    # Asleep for 3 h 10 min: the reminder was due 2 h 10 min ago.
    set_clock(setup.config, now + timedelta(hours=3, minutes=10, seconds=30))
    bot = await setup.process().start()
    running.append(bot)
    reminder = await owner.wait_message(room, sender=bot_id, contains="⏰")
    assert reminder["body"].startswith("⏰ 2 h 10 min late: **Call the bank**"), reminder["body"]
    await owner.wait_message(room, sender=bot_id, contains="echo:")
    # Once: a further restart fires nothing again.
    assert await bot.stop() == 0
    bot = await setup.process().start()
    running.append(bot)
    await owner.send_text(room, "!reminders")
    await owner.wait_message(room, sender=bot_id, contains="No reminders")
    assert len(reminders_in(await owner.messages(room), bot_id)) == 1
    assert len(bot.log_events("schedule.fired")) == 1


async def test_a_recurring_one_after_a_long_stop_or_sleep_fires_once(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running, schedule_config())
    bot_id = setup.bot.user_id
    now = datetime.now(BERLIN).replace(microsecond=0)
    call = schedule_call("Water the plants", "Remind the owner to water the plants.", every="1d")
    await set_reminder(owner, room, bot_id, fake_api, "remind me daily to water the plants", call)
    assert await bot.stop() == 0
    # Five days and an hour away: four periods missed, one fire.
    set_clock(setup.config, now + timedelta(days=5, hours=1, minutes=5))
    bot = await setup.process().start()
    running.append(bot)
    reminder = await owner.wait_message(room, sender=bot_id, contains="⏰")
    assert "4 d 1 h late" in reminder["body"]
    await owner.wait_message(room, sender=bot_id, contains="echo:")
    # The next is the first period after now (its wall time, five days on), not a missed one.
    first = re.search(r"next \w{3} (\d{4}-\d{2}-\d{2} \d{2}:\d{2})", tool_results(fake_api)[0])
    assert first is not None
    following = datetime.strptime(first.group(1), "%Y-%m-%d %H:%M") + timedelta(days=5)
    await owner.send_text(room, "!reminders")
    entry = await owner.wait_message(room, sender=bot_id, contains="r1 ·")
    assert following.strftime("%Y-%m-%d %H:%M") in entry["body"], entry["body"]
    assert len(reminders_in(await owner.messages(room), bot_id)) == 1
    assert len(bot.log_events("schedule.fired")) == 1
    # Asleep for two more days while running: noticed on wake, fired once, late.
    set_clock(setup.config, now + timedelta(days=8, hours=1, minutes=5))
    again = await owner.wait_message(
        room, sender=bot_id, contains="2 d 1 h late", after_event_id=entry["event_id"]
    )
    assert again["body"].startswith("⏰ 2 d 1 h late: **Water the plants**")
    await bot.wait_log("schedule.waiting", where=lambda r: (r["due_in_s"] or 0) > 80_000)
    assert len(reminders_in(await owner.messages(room), bot_id)) == 2
    assert len(bot.log_events("schedule.fired")) == 2


async def test_a_one_shot_killed_between_firing_and_finishing_does_not_fire_again(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running, schedule_config())
    bot_id = setup.bot.user_id
    due = datetime.now(BERLIN).replace(microsecond=0) + timedelta(minutes=1)
    call = schedule_call("Backup", "Check that last night's backup finished.", at=due.isoformat())
    await set_reminder(owner, room, bot_id, fake_api, "in a minute, check the backup", call)
    fake_api.reply("too late to matter", delay=600)
    set_clock(setup.config, due + timedelta(seconds=1))
    await owner.wait_message(room, sender=bot_id, contains="⏰")
    await fake_api.await_requests(3)
    await bot.kill9()

    fake_api.reply("The backup finished at 03:12.")
    bot = await setup.process().start()
    running.append(bot)
    await owner.wait_message(room, sender=bot_id, contains="I was stopped")
    final = await owner.wait_message(room, sender=bot_id, contains="The backup finished")
    [reminder] = reminders_in(await owner.messages(room), bot_id)
    assert final["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == reminder["event_id"]
    await owner.send_text(room, "!reminders")
    await owner.wait_message(room, sender=bot_id, contains="No reminders")
    assert len(bot.log_events("schedule.fired")) == 1
    assert len(reminders_in(await owner.messages(room), bot_id)) == 1


async def test_cancelling_from_the_room_by_command_and_by_reaction(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running, schedule_config())
    bot_id = setup.bot.user_id
    now = datetime.now(BERLIN).replace(microsecond=0)
    calls = [
        schedule_call("Dentist", "Dentist at 10.", at=(now + timedelta(hours=2)).isoformat()),
        schedule_call("Standup", "Standup notes.", cron="0 9 * * 1-5"),
    ]
    await set_reminder(owner, room, bot_id, fake_api, "two reminders please", *calls)
    await owner.send_text(room, "!reminders")
    await owner.wait_message(room, sender=bot_id, contains="2 reminders")
    standup = await owner.wait_message(room, sender=bot_id, contains="r2 ·")
    await owner.send_text(room, "!cancel-reminder r1")
    await owner.wait_message(room, sender=bot_id, contains="Cancelled r1: Dentist")
    # A reaction in clear proves nothing about its device: ignored.
    plain = await owner.react(room, standup["event_id"], "❌")
    await bot.wait_log("reaction.ignored", where=lambda r: r["event_id"] == plain)
    await owner.react_encrypted(room, standup["event_id"], "❌")
    cancelled = await owner.wait_message(room, sender=bot_id, contains="Cancelled r2: Standup")
    assert cancelled["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == standup["event_id"]
    sent = await owner.send_text(room, "!reminders")
    await owner.wait_message(room, sender=bot_id, contains="No reminders", after_event_id=sent)
    set_clock(setup.config, now + timedelta(days=3))
    await bot.wait_log("schedule.clock_jump")
    await bot.wait_log("schedule.waiting", where=lambda r: r["next"] is None)
    assert reminders_in(await owner.messages(room), bot_id) == []
    assert len(fake_api.requests) == 2, "commands and reactions never reach the model"
