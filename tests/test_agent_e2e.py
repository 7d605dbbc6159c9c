"""The agent with its tools, end to end: tool calls past the permission policy, approvals
from the phone, errors by kind, budgets, caching — Synapse, a strict js client, the bot
process, and the scripted Messages API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import BotSetup, Homeserver, started
from fake_messages_api import FakeMessagesAPI
from harness import http
from harness.bot import BotProcess
from harness.jsclient import JsClient

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]

PERMISSIONS = """
[permissions]
allow = ["Bash(echo:*)", "Read"]
ask = []
deny = ["Bash(rm:*)"]
approval_timeout_s = {timeout}
"""


def permissions(timeout: float = 30) -> str:
    """The [permissions] section, with an approval timeout of `timeout` seconds."""
    return PERMISSIONS.format(timeout=timeout)


def tool_results(request: Any) -> list[dict[str, Any]]:
    """The tool_result blocks of a recorded request's last message."""
    return [b for b in request.body["messages"][-1]["content"] if b.get("type") == "tool_result"]


def result_text(block: dict[str, Any]) -> str:
    content = block["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


async def test_an_allowed_command_runs_and_its_output_reaches_the_model(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, _bot, owner, room = await started(make_bot, owner_client, running, permissions())
    fake_api.reply("Let me check.", tools=[("bash", {"command": "echo hello-from-bash"})])
    fake_api.reply("The shell said hello.")
    await owner.send_text(room, "say hello in the shell")
    await owner.wait_message(room, sender=setup.bot.user_id, contains="The shell said hello")
    results = tool_results(fake_api.requests[1])
    assert len(results) == 1 and not results[0].get("is_error")
    assert "hello-from-bash" in result_text(results[0])
    progress = await owner.wait_message(room, sender=setup.bot.user_id, contains="step 1")
    assert "running `echo hello-from-bash`" in progress["body"]
    # Its last edit says how the task ended, and at which step.
    final = await owner.wait_message(room, sender=setup.bot.user_id, contains="✅ #1 — done")
    assert final["content"]["m.relates_to"] == {
        "rel_type": "m.replace",
        "event_id": progress["event_id"],
    }
    assert "it ended at step 1: running `echo hello-from-bash`" in final["body"]


async def test_a_denied_command_never_runs_and_the_model_is_told(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, _bot, owner, room = await started(make_bot, owner_client, running, permissions())
    victim = setup.config.folder / "work" / "keep.txt"
    victim.write_text("precious")
    fake_api.reply(tools=[("bash", {"command": f"rm {victim}"})])
    fake_api.reply("I was not allowed to delete it.")
    await owner.send_text(room, "delete keep.txt")
    await owner.wait_message(room, sender=setup.bot.user_id, contains="not allowed")
    result = tool_results(fake_api.requests[1])[0]
    assert result["is_error"] and "Not allowed" in result_text(result)
    assert victim.read_text() == "precious"


async def test_ask_rule_yes_runs_no_does_not_silence_denies(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running, permissions(4))
    work = setup.config.folder / "work"
    bot_id = setup.bot.user_id

    # 1. An unmatched command asks; "yes" runs it.
    fake_api.reply(tools=[("bash", {"command": f"touch {work}/approved"})])
    fake_api.reply("Created it.")
    await owner.send_text(room, "create the approved file")
    question = await owner.wait_message(room, sender=bot_id, contains="May I?")
    assert f"touch {work}/approved" in question["body"]
    assert not (work / "approved").exists()
    await owner.send_text(room, "yes")
    await owner.wait_message(room, sender=bot_id, contains="Created it")
    assert (work / "approved").exists()

    # 2. "no" refuses, and the model hears it.
    fake_api.reply(tools=[("bash", {"command": f"touch {work}/refused"})])
    fake_api.reply("Understood, I did not.")
    await owner.send_text(room, "create the refused file")
    second = await owner.wait_message(
        room, sender=bot_id, contains="May I?", after_event_id=question["event_id"]
    )
    await owner.send_text(room, "no")
    await owner.wait_message(room, sender=bot_id, contains="Understood")
    assert not (work / "refused").exists()
    assert "did not approve" in result_text(tool_results(fake_api.requests[-1])[0])

    # 3. Silence is a no.
    fake_api.reply(tools=[("bash", {"command": f"touch {work}/ignored"})])
    fake_api.reply("Nobody answered, so I left it.")
    await owner.send_text(room, "create the ignored file")
    await owner.wait_message(
        room, sender=bot_id, contains="May I?", after_event_id=second["event_id"]
    )
    await owner.wait_message(room, sender=bot_id, contains="No answer")
    await owner.wait_message(room, sender=bot_id, contains="Nobody answered")
    assert not (work / "ignored").exists()
    decided = [r["by"] for r in bot.log_events("approval.decided")]
    assert decided == [setup.owner.user_id, setup.owner.user_id, "timeout"]


async def test_an_unencrypted_yes_from_the_owners_account_approves_nothing(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    homeserver: Homeserver,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running, permissions(5))
    work = setup.config.folder / "work"
    fake_api.reply(tools=[("bash", {"command": f"touch {work}/sneaky"})])
    fake_api.reply("Left it alone.")
    await owner.send_text(room, "make the sneaky file")
    question = await owner.wait_message(room, sender=setup.bot.user_id, contains="May I?")
    # A thief with the password answers in plaintext, and reacts ✅ in plaintext.
    token = http.login(homeserver.url, setup.owner.user_id, setup.owner.password)
    said = http.send_plaintext(homeserver.url, token, room, "yes")
    reaction = {
        "m.relates_to": {"rel_type": "m.annotation", "event_id": question["event_id"], "key": "✅"}
    }
    reacted = http.send_event(homeserver.url, token, room, "m.reaction", reaction)
    # Both reached the bot while the question was open, and the gate turned both away.
    for name, event_id in (("message.ignored", said), ("reaction.ignored", reacted)):
        [ignored] = await bot.wait_log(name, where=lambda r, e=event_id: r["event_id"] == e)
        assert "plaintext" in ignored["reason"]
    assert bot.log_events("approval.decided") == []
    await owner.wait_message(room, sender=setup.bot.user_id, contains="Left it alone", timeout=30)
    assert not (work / "sneaky").exists()
    assert [r["by"] for r in bot.log_events("approval.decided")] == ["timeout"]


async def test_a_read_outside_the_allowed_roots_is_refused_also_through_a_symlink(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, _bot, owner, room = await started(make_bot, owner_client, running, permissions())
    outside = setup.config.folder / "outside.txt"
    outside.write_text("secret outside the roots")
    link = setup.config.folder / "work" / "link.txt"
    link.symlink_to(outside)
    fake_api.reply(
        tools=[("read", {"file_path": str(outside)}), ("read", {"file_path": str(link)})]
    )
    fake_api.reply("Both were refused.")
    await owner.send_text(room, "read those files")
    await owner.wait_message(room, sender=setup.bot.user_id, contains="Both were refused")
    results = tool_results(fake_api.requests[1])
    assert len(results) == 2
    for result in results:
        assert result["is_error"]
        assert "outside the allowed roots" in result_text(result)
        assert "secret outside" not in result_text(result)


async def test_overloaded_twice_then_success_still_answers(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, _bot, owner, room = await started(make_bot, owner_client, running, permissions())
    fake_api.fail(529, times=2)
    fake_api.reply("Made it through the overload.")
    await owner.send_text(room, "are you there?")
    await owner.wait_message(room, sender=setup.bot.user_id, contains="Made it through")
    assert [r.status for r in fake_api.requests] == [529, 529, 200]


async def test_a_task_over_its_step_budget_stops_with_a_clear_message(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, _bot, owner, room = await started(
        make_bot, owner_client, running, permissions(), agent_extra="max_steps = 3"
    )
    for n in range(5):
        fake_api.reply(tools=[("bash", {"command": f"echo loop {n}"})])
    await owner.send_text(room, "loop forever")
    stopped = await owner.wait_message(room, sender=setup.bot.user_id, contains="step budget")
    assert "3 steps" in stopped["body"]
    assert len(fake_api.requests) == 3


async def test_follow_up_requests_reuse_the_cached_prefix(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    """Six turns with tool use: each follow-up request lies ≥ 80 % in a cached prefix."""
    setup, _bot, owner, room = await started(make_bot, owner_client, running, permissions())
    for turn in range(6):
        fake_api.reply(tools=[("bash", {"command": f"echo turn {turn}"})])
        fake_api.reply(f"Turn {turn} done.")
        await owner.send_text(room, f"turn {turn}: run echo")
        await owner.wait_message(room, sender=setup.bot.user_id, contains=f"Turn {turn} done")
    report = fake_api.cache_report()
    assert len(report) == 12
    shares = [row["share"] for row in report[1:]]
    assert min(shares) >= 0.8, shares
    assert all(row["cache_read_input_tokens"] > 0 for row in report[1:])


async def test_always_allows_exactly_that_command_from_then_on(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running, permissions())
    work = setup.config.folder / "work"
    command = f"touch {work}/again"
    fake_api.reply(tools=[("bash", {"command": command})])
    fake_api.reply("Done once.")
    await owner.send_text(room, "touch it")
    await owner.wait_message(room, sender=setup.bot.user_id, contains="May I?")
    await owner.send_text(room, "always")
    learned = await owner.wait_message(room, sender=setup.bot.user_id, contains="Learned:")
    assert f"Bash({command})" in learned["body"]
    await owner.wait_message(room, sender=setup.bot.user_id, contains="Done once")
    # The same command later runs without a question, also after a restart.
    await bot.stop()
    bot = await setup.process().start()
    running.append(bot)
    (work / "again").unlink()
    fake_api.reply(tools=[("bash", {"command": command})])
    fake_api.reply("Done twice.")
    await owner.send_text(room, "touch it again")
    await owner.wait_message(room, sender=setup.bot.user_id, contains="Done twice")
    assert (work / "again").exists()
    assert len(bot.log_events("approval.asked")) == 1, "asked only the first time"
    decided = bot.log_events("tool.decision")[-1]
    assert decided["verdict"] == "allow" and decided["rule"] == f"Bash({command})"


async def test_an_outage_past_the_retry_budget_keeps_the_task_and_resumes_by_itself(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(
        make_bot,
        owner_client,
        running,
        permissions(),
        max_retries=1,
        agent_extra="outage_retry_s = 1",
    )
    # Two overloaded answers use up the SDK's retry (1); two more keep it away for a while.
    fake_api.fail(529, times=4)
    fake_api.reply("Back in business.")
    sent = await owner.send_text(room, "are you up?")
    notice = await owner.wait_message(room, sender=setup.bot.user_id, contains="unavailable")
    assert notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == sent
    answer = await owner.wait_message(room, sender=setup.bot.user_id, contains="Back in business")
    assert answer["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == sent
    assert [r.status for r in fake_api.requests] == [529, 529, 529, 529, 200]
    assert len(bot.log_events("model.outage")) == 2
    notices = [m for m in await owner.messages(room) if "unavailable" in str(m["content"])]
    assert len(notices) == 1, "told once per outage"


async def test_a_yes_to_an_expired_question_approves_nothing_not_even_the_one_open_now(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running, permissions(8))
    work, bot_id = setup.config.folder / "work", setup.bot.user_id
    fake_api.reply(tools=[("bash", {"command": f"touch {work}/first"})])
    fake_api.reply(tools=[("bash", {"command": f"touch {work}/second [x](https://evil.example)"})])
    fake_api.reply("Neither was approved.")
    await owner.send_text(room, "make two files")
    first = await owner.wait_message(room, sender=bot_id, contains="May I?")
    await owner.wait_message(room, sender=bot_id, contains="No answer in time")
    second = await owner.wait_message(
        room, sender=bot_id, contains="May I?", after_event_id=first["event_id"]
    )
    # Shown whole, as code: the Markdown link is not rendered as a link.
    assert "[x](https://evil.example)" in second["body"]
    assert "<a " not in second["content"].get("formatted_body", "")
    # "yes" as a reply to the expired first question, while the second is open.
    reply = {
        "msgtype": "m.text",
        "body": "yes",
        "m.relates_to": {"m.in_reply_to": {"event_id": first["event_id"]}},
    }
    await owner.call("send_event", room_id=room, type="m.room.message", content=reply)
    await owner.wait_message(room, sender=bot_id, contains="That question is closed")
    await owner.wait_message(room, sender=bot_id, contains="Neither was approved", timeout=30)
    assert not (work / "first").exists() and not list(work.glob("second*"))
    assert [r["by"] for r in bot.log_events("approval.decided")] == ["timeout", "timeout"]
