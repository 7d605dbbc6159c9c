"""The agent with its tools where the room shows it: a tool call's progress as edits of one
status message, a plaintext "yes" from the owner's account turned away, a learned rule that
holds across a restart of the bot process, and a reply to an expired question, shown whole —
Synapse, a strict js client, the bot process, and the scripted Messages API. The policy's and
the agent's own decisions (denied and refused calls, "yes" / "no" / silence, budgets,
outages, caching) are in the worker tier: tests/test_agent_worker.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from conftest import BotSetup, Homeserver, started
from fake_messages_api import FakeMessagesAPI
from harness import http
from harness.bot import BotProcess
from harness.jsclient import JsClient
from harness.toolcalls import permissions, result_text, tool_results

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]


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


async def test_a_yes_to_an_expired_question_approves_nothing_not_even_the_one_open_now(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    # Each question waits 4 s (was 8): long enough for the owner's "yes" to the first to be
    # judged while the second is open, which the log shows below.
    setup, bot, owner, room = await started(make_bot, owner_client, running, permissions(4))
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
    decided = bot.log_events("approval.decided")
    assert [r["by"] for r in decided] == ["timeout", "timeout"]
    [late] = bot.log_events("approval.late_answer")
    assert late["timestamp"] < decided[1]["timestamp"], "the yes came after the second closed"
