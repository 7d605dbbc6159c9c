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
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import BotSetup, started
from fake_messages_api import FakeMessagesAPI
from harness.bot import BotProcess
from harness.jsclient import JsClient

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]
BERLIN = ZoneInfo("Europe/Berlin")
AUCKLAND = ZoneInfo("Pacific/Auckland")


def schedule_config(zone: str = "Europe/Berlin", more: str = "") -> str:
    return f"""
[schedule]
test_clock = true
timezone = "{zone}"
{more}
"""


def set_clock(setup: BotSetup, when: datetime) -> float:
    """Make the bot's clock read `when` now; returns the offset written."""
    offset = when.timestamp() - time.time()
    path = setup.config.state / "clock-offset"
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

    set_clock(setup, due - timedelta(seconds=30))
    await bot.wait_log("schedule.waiting", where=lambda r: 0 < (r["due_in_s"] or 0) <= 30.5)
    assert reminders_in(await owner.messages(room), bot_id) == [], "not before its time"
    assert bot.log_events("schedule.fired") == []

    set_clock(setup, due + timedelta(seconds=1))
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
    set_clock(setup, now + timedelta(hours=3, minutes=10, seconds=30))
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
    set_clock(setup, now + timedelta(days=5, hours=1, minutes=5))
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
    set_clock(setup, now + timedelta(days=8, hours=1, minutes=5))
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
    set_clock(setup, due + timedelta(seconds=1))
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
    set_clock(setup, now + timedelta(days=3))
    await bot.wait_log("schedule.clock_jump")
    await bot.wait_log("schedule.waiting", where=lambda r: r["next"] is None)
    assert reminders_in(await owner.messages(room), bot_id) == []
    assert len(fake_api.requests) == 2, "commands and reactions never reach the model"


def next_friday_nine(zone: ZoneInfo) -> datetime:
    """Friday 9:00 in `zone`, at least a day ahead."""
    day = (datetime.now(zone) + timedelta(days=1)).date()
    while day.weekday() != 4:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, 9, 0, tzinfo=zone)


async def test_the_follow_up_story_drafts_now_and_reminds_on_friday(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    # The owner lives in Auckland; the machine does not.
    extra = (
        schedule_config("Pacific/Auckland") + '\n[permissions]\nallow = ["Write(~/Drafts/**)"]\n'
    )
    setup = make_bot(extra=extra)
    home = setup.config.folder / "work"
    process = setup.process()
    process.env["HOME"] = str(home)
    bot = await process.start()
    running.append(bot)
    owner = await owner_client(setup.owner)
    room = await owner.create_dm(setup.bot.user_id)
    await owner.wait_join(room, setup.bot.user_id)
    bot_id = setup.bot.user_id

    friday = next_friday_nine(AUCKLAND)
    draft = "~/Drafts/follow-up-proposal.md"
    fake_api.reply(
        tools=[
            (
                "write",
                {
                    "file_path": draft,
                    "content": "Dear Ms Rivera,\n\nI hope you had a chance to look at our "
                    "proposal. I would be glad to answer any questions.\n\nKind regards\n",
                },
            ),
            schedule_call(
                "Follow up with the client about the proposal",
                f"Remind the owner to send the follow-up email about the proposal; the draft "
                f"is {draft}.",
                at=friday.isoformat(),
            ),
        ]
    )
    fake_api.reply(f"Drafted {draft}; I will remind you on Friday at 9:00.")
    await owner.send_text(
        room,
        "Remind me to follow up with the client about the proposal on Friday. Draft a polite "
        "follow-up email and save it to ~/Drafts/.",
    )
    await owner.wait_message(room, sender=bot_id, contains="I will remind you on Friday")
    written = home / "Drafts" / "follow-up-proposal.md"
    assert written.read_text().startswith("Dear Ms Rivera"), "the draft is there now"
    first = fake_api.requests[0].body
    assert "Pacific/Auckland" in str(first["system"])
    assert datetime.now(AUCKLAND).strftime("%Z") in first["messages"][-1]["content"][-1]["text"]
    assert any("next Fri" in r and "09:00 NZ" in r for r in tool_results(fake_api))

    set_clock(setup, friday + timedelta(seconds=30))
    reminder = await owner.wait_message(room, sender=bot_id, contains="⏰")
    assert "Follow up with the client about the proposal" in reminder["body"]
    assert draft in reminder["body"], "the reminder names the draft"
    assert "late" not in reminder["body"]
    await owner.wait_message(
        room, sender=bot_id, contains="echo:", after_event_id=reminder["event_id"]
    )
    fired = fake_api.requests[-1].body["messages"][-1]["content"][-1]["text"]
    assert fired.startswith("[sent Fri ") and " 09:00 NZ" in fired.splitlines()[0]
    assert "set during task #1" in fired and draft in fired
    assert "save it to ~/Drafts/" in fired, "the follow-up carries the request"
    assert "I will remind you on Friday" in fired, "and the answer it got"


def next_dst_change(zone: ZoneInfo) -> datetime:
    """The first local midnight after which the zone's offset changes."""
    day = datetime.now(zone).replace(hour=12, minute=0, second=0, microsecond=0)
    offset = day.utcoffset()
    while True:
        day += timedelta(days=1)
        if day.utcoffset() != offset:
            return day.replace(hour=0)


async def test_a_daily_reminder_stays_at_nine_across_a_dst_change(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running, schedule_config())
    bot_id = setup.bot.user_id
    change = next_dst_change(BERLIN)
    before = (change - timedelta(days=1)).replace(hour=8, minute=58)
    set_clock(setup, before)
    await bot.wait_log("schedule.clock_jump")
    call = schedule_call("Vitamins", "Take the vitamins.", cron="0 9 * * *")
    await set_reminder(owner, room, bot_id, fake_api, "every day at 9, vitamins", call)
    old_zone = before.strftime("%Z")
    assert f"09:00 {old_zone}" in tool_results(fake_api)[0]

    set_clock(setup, before.replace(minute=0, hour=9) + timedelta(seconds=5))
    first = await owner.wait_message(room, sender=bot_id, contains="**Vitamins** (r1)")
    assert "late" not in first["body"]
    # The day of the change: 9:00 local is 23 or 25 real hours later, and it fires then.
    nine = datetime(change.year, change.month, change.day, 9, tzinfo=BERLIN)
    assert nine.strftime("%Z") != old_zone
    set_clock(setup, nine + timedelta(seconds=5))
    second = await owner.wait_message(
        room, sender=bot_id, contains="**Vitamins** (r1)", after_event_id=first["event_id"]
    )
    assert "late" not in second["body"]
    assert len(reminders_in(await owner.messages(room), bot_id)) == 2
    await owner.send_text(room, "!reminders")
    entry = await owner.wait_message(room, sender=bot_id, contains="r1 ·")
    assert f"09:00 {nine.strftime('%Z')}" in entry["body"]


async def test_the_digest_lists_the_days_tasks_and_costs_and_is_empty_safe(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    extra = schedule_config(more='digest_at = "18:00"') + '\n[permissions]\nallow = ["Write"]\n'
    setup, bot, owner, room = await started(make_bot, owner_client, running, extra)
    bot_id = setup.bot.user_id
    await owner.send_text(room, "!digest")
    empty = await owner.wait_message(room, sender=bot_id, contains="Check-in")
    assert "nothing done since" in empty["body"] and "\n" not in empty["body"]

    fake_api.reply(tools=[("write", {"file_path": "notes/today.md", "content": "- shipped\n"})])
    fake_api.reply("Wrote today's notes.")
    await owner.send_text(room, "write today's notes")
    await owner.wait_message(room, sender=bot_id, contains="Wrote today's notes.")
    sent = await owner.send_text(room, "!digest")
    full = await owner.wait_message(room, sender=bot_id, contains="Check-in", after_event_id=sent)
    body = full["body"]
    assert "1 done, 0 failed, 0 cancelled" in body and "#1 write today's notes" in body
    assert str(setup.config.folder / "work" / "notes" / "today.md") in body
    assert "Model: 2 requests" in body and "$" in body
    assert len(fake_api.requests) == 2, "the digest costs no model request"

    # The daily check-in at 18:00 in the owner's zone, unprompted.
    now = datetime.now(BERLIN)
    six = now.replace(hour=18, minute=0, second=0, microsecond=0)
    if six <= now:
        six += timedelta(days=1)
    set_clock(setup, six + timedelta(seconds=10))
    daily = await owner.wait_message(
        room, sender=bot_id, contains="**Check-in**", after_event_id=full["event_id"]
    )
    assert "m.relates_to" not in daily["content"], "posted on its own, not as a reply"
    await bot.wait_log("digest.posted")
    sent = await owner.send_text(room, "!digest")
    after = await owner.wait_message(room, sender=bot_id, contains="Check-in", after_event_id=sent)
    assert "nothing done since" in after["body"], "the daily digest moved the window"
    assert len(fake_api.requests) == 2
