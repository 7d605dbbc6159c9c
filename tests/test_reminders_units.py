"""The schedule tool, the room's reminder commands, the mention, the digest, the config and
the prompt — without a homeserver or a model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from test_schedule_units import OWNER, ROOM, T0, FakeRoom, MovedClock, add

from dispatch_matrix.agent.prompt import Machine, system_prompt
from dispatch_matrix.agent.transcript import turn_context
from dispatch_matrix.agent.usage import Totals
from dispatch_matrix.app.config import Config
from dispatch_matrix.core.errors import ConfigError
from dispatch_matrix.core.ids import EventID, UserID
from dispatch_matrix.matrix.outbox import mention_content
from dispatch_matrix.queue.intake import Command, parse
from dispatch_matrix.schedule import texts as schedule_texts
from dispatch_matrix.schedule.digest import Digest, files_written
from dispatch_matrix.schedule.reminders import Reminders, reminder_id
from dispatch_matrix.schedule.tables import ScheduleTables
from dispatch_matrix.schedule.tool import ScheduleTool
from dispatch_matrix.store import Database, TaskState
from dispatch_matrix.toolbox.base import ToolContext

BERLIN = ZoneInfo("Europe/Berlin")


def context(task_id: int | None) -> ToolContext:
    return ToolContext(
        workdir=Path("/w"), allowed_roots=(Path("/w"),), bash_timeout_s=5, task_id=task_id
    )


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database.open(tmp_path / "d.db")


def text_of(result: Any) -> str:
    return str(result.content[0]["text"])


# -- the schedule tool --------------------------------------------------------------------


async def test_the_tool_creates_and_answers_with_the_id_and_the_local_time(db: Database) -> None:
    task = db.add_task(EventID("$t"), ROOM, OWNER, "remind me friday", 1)
    assert task is not None
    nudged: list[bool] = []
    tool = ScheduleTool(ScheduleTables(db), db, MovedClock(T0), BERLIN, lambda: nudged.append(True))
    result = await tool.run(
        {"title": "Follow up", "prompt": "Send the email", "at": "2026-12-04T09:00:00+01:00"},
        context(task.id),
    )
    assert not result.is_error
    assert text_of(result).startswith('Scheduled r1 "Follow up": next Fri 2026-12-04 09:00 CET')
    assert "in 2 d 22 h" in text_of(result) and nudged == [True]
    [schedule] = ScheduleTables(db).active_schedules()
    assert (schedule.room_id, schedule.owner, schedule.origin_task) == (ROOM, OWNER, task.id)
    assert schedule.next_at == datetime(2026, 12, 4, 8, tzinfo=UTC).timestamp()
    listed = await tool.run({"action": "list"}, context(task.id))
    assert 'r1 "Follow up" next Fri 2026-12-04 09:00 CET' in text_of(listed)
    cancelled = await tool.run({"action": "cancel", "id": "r1"}, context(task.id))
    assert (
        text_of(cancelled) == 'Cancelled r1 "Follow up".'
        and ScheduleTables(db).active_schedules() == []
    )


@pytest.mark.parametrize(
    ("tool_input", "problem"),
    [
        (
            {"title": "x", "prompt": "y", "at": "2026-12-04T09:00:00+01:00", "every": "2h"},
            "exactly",
        ),
        ({"title": "x", "prompt": "y", "at": "2026-12-04T09:00:00"}, "no offset"),
        ({"title": "x", "prompt": "y", "at": "2026-11-30T09:00:00+01:00"}, "already past"),
        ({"title": "x", "prompt": "y", "cron": "* * * * *"}, "too often"),
        ({"title": "x", "prompt": "y", "cron": "0 9 * * * *"}, "five-field"),
        ({"title": "x", "every": "2h"}, "title and a prompt"),
        ({"action": "cancel", "id": "r9"}, "no active schedule r9"),
        ({"action": "explode"}, "action must be one of"),
    ],
)
async def test_the_tool_refuses_mistakes_as_error_results(
    db: Database, tool_input: dict[str, Any], problem: str
) -> None:
    from dispatch_matrix.toolbox.registry import ToolRegistry

    task = db.add_task(EventID("$t"), ROOM, OWNER, "x", 1)
    assert task is not None
    registry = ToolRegistry([ScheduleTool(ScheduleTables(db), db, MovedClock(T0), BERLIN)])
    result = await registry.run("schedule", tool_input, context(task.id))
    assert result.is_error and problem in text_of(result), text_of(result)
    assert ScheduleTables(db).active_schedules() == []


def test_the_schedule_tool_needs_no_rule_but_a_deny_rule_stops_it() -> None:
    from dispatch_matrix.permissions.policy import Policy

    def decide(deny: list[str]) -> str:
        policy = Policy([], [], deny, Path("/home/o"), Path("/home/o"))
        return policy.decide(ScheduleTool.name, {"title": "x"}).verdict

    assert decide([]) == "allow"
    assert decide(["schedule"]) == "deny"


# -- the room's commands ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "expected"), [("r3", 3), ("R3", 3), ("#3", 3), (" 3 ", 3), ("x3", None), ("", None)]
)
def test_reminder_id(arg: str, expected: int | None) -> None:
    assert reminder_id(arg) == expected


@pytest.mark.parametrize(
    ("body", "command"),
    [
        ("!reminders", Command("reminders")),
        ("!cancel-reminder r3", Command("cancel-reminder", "r3")),
        ("!Digest", Command("digest")),
    ],
)
def test_the_schedule_commands_parse(body: str, command: Command) -> None:
    assert parse(body) == command


def reminders(db: Database, room: FakeRoom, changed: list[bool]) -> Reminders:
    digest = Digest(ScheduleTables(db), db, room, BERLIN, Path("/w"), [Path("/w")])
    return Reminders(ScheduleTables(db), room, BERLIN, digest, lambda: changed.append(True))


async def test_the_list_has_one_entry_per_schedule_and_a_cross_cancels_it(db: Database) -> None:
    room, changed = FakeRoom(), []
    first = add(db, "at", "x", T0 + timedelta(hours=1), title="Call the bank")
    add(db, "every", "1d", T0 + timedelta(days=1), title="Water the plants")
    commands = reminders(db, room, changed)
    await commands.list(Command("reminders"), ROOM, EventID("$cmd"))
    texts = [room.sent[k][0] for k in room.order]
    assert texts[0].startswith("⏰ 2 reminders, times in Europe/Berlin")
    assert texts[1] == "r1 · **Call the bank** — next Tue 2026-12-01 12:00 CET (once)"
    assert texts[2] == "r2 · **Water the plants** — next Wed 2026-12-02 11:00 CET (every 1d)"
    entry = EventID(f"$cmd-$cmd-{first.short_id}")
    assert not await commands.reaction(entry, "👍", OWNER), "only ❌ cancels"
    assert await commands.reaction(entry, "❌", OWNER)
    assert [s.title for s in ScheduleTables(db).active_schedules()] == [
        "Water the plants"
    ] and changed == [True]
    assert room.sent[room.order[-1]][0] == "🗑️ Cancelled r1: Call the bank."
    assert not await commands.reaction(EventID("$other"), "❌", OWNER)


async def test_cancel_reminder_by_id_and_a_wrong_id(db: Database) -> None:
    room, changed = FakeRoom(), []
    add(db, "at", "x", T0 + timedelta(hours=1), title="Call the bank")
    commands = reminders(db, room, changed)
    await commands.cancel(Command("cancel-reminder", "r7"), ROOM, EventID("$a"))
    await commands.cancel(Command("cancel-reminder", "r1"), ROOM, EventID("$b"))
    await commands.list(Command("reminders"), ROOM, EventID("$c"))
    said = [room.sent[k][0] for k in room.order]
    assert said[0].startswith("There is no active reminder r7")
    assert said[1] == "🗑️ Cancelled r1: Call the bank."
    assert said[2] == schedule_texts.NO_REMINDERS and changed == [True]


def test_a_reminder_mentions_its_owner_as_text_that_notifies() -> None:
    content = mention_content("⏰ **Stretch** (r1)\n@owner:hs Time to stretch.", OWNER)
    assert content["msgtype"] == "m.text", "notices do not notify"
    assert content["m.mentions"] == {"user_ids": ["@owner:hs"]}
    assert "@owner:hs" in content["body"]
    assert '<a href="https://matrix.to/#/@owner:hs">@owner:hs</a>' in content["formatted_body"]


@pytest.mark.parametrize(
    "owner, pill",
    [
        # A historical user id may hold `'` and `&`: the pill is found where the renderer
        # wrote the id (it leaves `'` alone; the mention escaped it as `&#x27;` and found
        # nothing, so the owner's id was shown without its pill).
        ("@o'brien:hs", "<a href=\"https://matrix.to/#/@o'brien:hs\">@o'brien:hs</a>"),
        ("@a&b:hs", '<a href="https://matrix.to/#/@a&amp;b:hs">@a&amp;b:hs</a>'),
    ],
)
def test_a_reminder_mentions_an_owner_whose_id_the_renderer_escapes(owner: str, pill: str) -> None:
    content = mention_content(f"⏰ **Call** (r2)\n{owner} Call the bank.", UserID(owner))
    assert pill in content["formatted_body"]
    assert content["m.mentions"] == {"user_ids": [owner]}


# -- the digest -----------------------------------------------------------------------------


def use(use_id: str, name: str, path: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": use_id, "name": name, "input": {"file_path": path}}


def test_files_written_are_the_successful_writes_under_the_roots() -> None:
    messages = [
        {
            "role": "assistant",
            "content": [
                use("1", "write", "Drafts/follow-up.md"),
                use("2", "edit", "/w/notes.txt"),
                use("3", "write", "/etc/passwd"),
                use("4", "write", "/w/failed.txt"),
                use("5", "read", "/w/read-only.txt"),
                use("6", "edit", "/w/./Drafts/follow-up.md"),
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "4", "is_error": True}],
        },
    ]
    assert files_written(messages, Path("/w"), [Path("/w")]) == [
        "/w/Drafts/follow-up.md",
        "/w/notes.txt",
    ]


def test_a_digest_of_nothing_is_one_line() -> None:
    since = datetime(2026, 12, 1, 17, tzinfo=UTC)
    text = schedule_texts.digest(since, [], [], [], Totals(), BERLIN)
    assert text == "🗓️ Check-in: nothing done since Tue 2026-12-01 18:00 CET."


async def test_the_digest_lists_tasks_files_reminders_and_cost(db: Database) -> None:
    done = db.add_task(EventID("$1"), ROOM, OWNER, "Draft the follow-up email", 1)
    failed = db.add_task(EventID("$2"), ROOM, OWNER, "Deploy the site", 2)
    assert done is not None and failed is not None
    conversation = db.current_conversation()
    db.append_message(
        conversation, done.id, "assistant", [use("u1", "write", "/w/Drafts/follow-up.md")]
    )
    db.set_task_state(done.id, TaskState.DONE, result="Drafted.")
    db.set_task_state(failed.id, TaskState.FAILED, error="the API key was refused")
    db.record_usage(done.id, "claude-sonnet-4-6", {"input_tokens": 1000, "output_tokens": 200})
    add(db, "at", "x", T0 + timedelta(days=3), title="Follow up with the client")
    room = FakeRoom()
    text = Digest(ScheduleTables(db), db, room, BERLIN, Path("/w"), [Path("/w")]).text(
        datetime.now(UTC).timestamp()
    )
    lines = text.splitlines()
    assert "1 done, 1 failed, 0 cancelled" in lines[0]
    assert "- ✅ #1 Draft the follow-up email" in lines
    assert "- ❌ #2 Deploy the site — the API key was refused" in lines
    assert "- `/w/Drafts/follow-up.md`" in lines
    assert "Model: 1 request, 1.0k tokens in, 200 out, $0.0060." in lines
    assert "- r1 Follow up with the client — Fri 2026-12-04 11:00 CET" in lines


async def test_the_daily_digest_is_posted_once_a_day_and_once_after_days_away(
    db: Database,
) -> None:
    room = FakeRoom()
    db.add_task(EventID("$1"), ROOM, OWNER, "anything", 1)
    digest = Digest(
        ScheduleTables(db), db, room, BERLIN, Path("/w"), [Path("/w")], daily_at="18:00"
    )
    now = datetime(2026, 12, 1, 16, 30, tzinfo=UTC)  # 17:30 in Berlin
    assert not await digest.post_if_due(now, 1.0), "switched on: the first is the next one"
    assert digest.next_at(now) == datetime(2026, 12, 1, 17, tzinfo=UTC)
    assert await digest.post_if_due(now + timedelta(minutes=31), 2.0)
    assert not await digest.post_if_due(now + timedelta(minutes=40), 3.0)
    # Away for three days: one digest on return, not three.
    back = now + timedelta(days=3, hours=2)
    assert await digest.post_if_due(back, 4.0)
    assert not await digest.post_if_due(back + timedelta(minutes=1), 5.0)
    assert len(room.order) == 2
    assert all(room.sent[k][1]["key"].startswith("digest-") for k in room.order)


# -- config and prompt ----------------------------------------------------------------------


def base_config(**schedule: Any) -> dict[str, Any]:
    return {
        "matrix": {"homeserver": "https://hs", "user_id": "@b:hs", "owners": ["@o:hs"]},
        "schedule": schedule,
    }


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [({"timezone": "Mars/Olympus"}, "not a time zone"), ({"digest_at": "25:00"}, "time of day")],
)
def test_schedule_config_errors_name_the_key(schedule: dict[str, str], problem: str) -> None:
    from dispatch_matrix.app.config import _validate

    with pytest.raises(ConfigError) as err:
        _validate(base_config(**schedule))
    assert err.value.key.startswith("schedule.") and problem in err.value.problem


def test_schedule_config_defaults_are_off_and_the_machine_zone() -> None:
    config = Config(**base_config())
    assert config.schedule.timezone == "" and config.schedule.digest_at == ""
    assert config.schedule.test_clock is False


def test_the_prompt_states_the_zone_and_the_turn_the_local_time() -> None:
    machine = Machine("Linux", "me", "/home/me", "/home/me", ("/home/me",))
    prompt = system_prompt(["@o:hs"], machine, zone="Pacific/Auckland")
    assert "The owner's time zone is Pacific/Auckland" in prompt
    assert "schedule a check of your own work" in prompt
    now = datetime(2026, 12, 3, 20, 0, tzinfo=UTC).astimezone(ZoneInfo("Pacific/Auckland"))
    assert turn_context(now) == "[sent Fri 2026-12-04 09:00 NZDT]"


def test_the_config_init_writes_loads_with_the_schedule_section(tmp_path: Path) -> None:
    from dispatch_matrix.app.config import load_config
    from dispatch_matrix.app.onboarding import InitAnswers, render_config

    path = tmp_path / "config.toml"
    answers = InitAnswers(
        config_path=path, homeserver="https://hs", user_id="@b:hs", owners=["@o:hs"]
    )
    path.write_text(render_config(answers, path))
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "matrix-password").write_text("pw")
    loaded = load_config(path)
    assert loaded.schedule.timezone == "" and loaded.schedule.digest_at == ""
    assert "[schedule]" in path.read_text()
