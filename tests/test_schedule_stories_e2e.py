"""The stories schedules are for, end to end with a moved clock: "draft it now, remind me on
Friday" in an owner's zone that is not the machine's, a daily reminder across a DST change,
and the check-in digest."""

from __future__ import annotations

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
AUCKLAND = ZoneInfo("Pacific/Auckland")


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

    set_clock(setup.config, friday + timedelta(seconds=30))
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
    set_clock(setup.config, before)
    await bot.wait_log("schedule.clock_jump")
    call = schedule_call("Vitamins", "Take the vitamins.", cron="0 9 * * *")
    await set_reminder(owner, room, bot_id, fake_api, "every day at 9, vitamins", call)
    old_zone = before.strftime("%Z")
    assert f"09:00 {old_zone}" in tool_results(fake_api)[0]

    set_clock(setup.config, before.replace(minute=0, hour=9) + timedelta(seconds=5))
    first = await owner.wait_message(room, sender=bot_id, contains="**Vitamins** (r1)")
    assert "late" not in first["body"]
    # The day of the change: 9:00 local is 23 or 25 real hours later, and it fires then.
    nine = datetime(change.year, change.month, change.day, 9, tzinfo=BERLIN)
    assert nine.strftime("%Z") != old_zone
    set_clock(setup.config, nine + timedelta(seconds=5))
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
    set_clock(setup.config, six + timedelta(seconds=10))
    daily = await owner.wait_message(
        room, sender=bot_id, contains="**Check-in**", after_event_id=full["event_id"]
    )
    assert "m.relates_to" not in daily["content"], "posted on its own, not as a reply"
    await bot.wait_log("digest.posted")
    sent = await owner.send_text(room, "!digest")
    after = await owner.wait_message(room, sender=bot_id, contains="Check-in", after_event_id=sent)
    assert "nothing done since" in after["body"], "the daily digest moved the window"
    assert len(fake_api.requests) == 2
