"""Approvals as encrypted polls, end to end: Synapse, the owner's strict js client (the
phone), the bot process and the scripted Messages API. A vote from the owner's cross-signed
device on the open question's poll runs the command; a vote from a session the owner never
cross-signed, a stranger's, a plaintext one and one on an expired poll run nothing; each
poll is ended with its outcome; a plaintext reaction on a question is told once to tap the
poll or reply."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import pytest
from conftest import BotSetup, Homeserver, started
from fake_messages_api import FakeMessagesAPI
from harness.bot import BotProcess
from harness.jsclient import JsClient

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]

START = "org.matrix.msc3381.poll.start"
END = "org.matrix.msc3381.poll.end"


def permissions(timeout_s: int) -> str:
    return f"""
[permissions]
allow = ["Bash(echo:*)"]
approval_timeout_s = {timeout_s}
"""


async def test_a_vote_from_the_owners_verified_session_runs_the_command_no_other_does(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    homeserver: Homeserver,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running, extra=permissions(90))
    bot_id, work = setup.bot.user_id, setup.config.folder / "work"
    fake_api.reply(tools=[("bash", {"command": f"touch {work}/voted"})])
    fake_api.reply("Done, the file is there.")
    await owner.send_text(room, "make the file")

    question = await owner.wait_message(room, sender=bot_id, contains="May I?", timeout=60)
    poll = await owner.wait_message(room, sender=bot_id, event_type=START, timeout=30)
    assert poll["was_encrypted"], "the poll is encrypted like the question"
    content = poll["content"]
    assert content["m.relates_to"] == {"rel_type": "m.reference", "event_id": question["event_id"]}
    labels = [a["org.matrix.msc1767.text"] for a in content[START]["answers"]]
    assert labels == ["Approve once", f"Always: allow Bash(touch {work}/voted)", "Deny"]

    # The owner's account on a session it never cross-signed (a thief with the password).
    thief = await owner_client(setup.owner, strict=False, cross_sign=False, name="thief")
    stolen = await thief.vote(room, poll["event_id"], "once")
    ignored = await bot.wait_log("vote.ignored", where=lambda r: r["event_id"] == stolen)
    assert ignored[0]["reason"] == "device not cross-signed by its owner"
    notice = await owner.wait_message(room, sender=bot_id, contains="not cross-signed")
    assert notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == stolen

    # A stranger in the room votes: not an owner, nothing runs.
    stranger_account = homeserver.new_user("stranger")
    stranger = await owner_client(stranger_account, name="stranger")
    await owner.call("invite", room_id=room, user_id=stranger_account.user_id)
    await stranger.join(room)
    forged = await stranger.vote(room, poll["event_id"], "once")
    await bot.wait_log("vote.ignored", where=lambda r: r["event_id"] == forged)
    await owner.call("kick", room_id=room, user_id=stranger_account.user_id, reason="bye")
    await owner.wait_message(room, sender=bot_id, contains="private again", timeout=15)
    assert not (work / "voted").exists()
    assert not bot.log_events("approval.decided")

    # The owner taps "Approve once": it runs, and the poll is ended with the outcome.
    await owner.vote(room, poll["event_id"], "once")
    await owner.wait_message(room, sender=bot_id, contains="Done, the file", timeout=60)
    assert (work / "voted").exists()
    ended = await owner.wait_message(room, sender=bot_id, event_type=END, timeout=30)
    assert ended["content"]["m.relates_to"]["event_id"] == poll["event_id"]
    assert ended["content"]["org.matrix.msc1767.text"] == "✅ Approved once."
    decided = bot.log_events("approval.decided")
    assert [(r["answer"], r["by"]) for r in decided] == [("yes", setup.owner.user_id)]
    # What the question cost: itself and one poll, then one poll end.
    kinds = [m["type"] for m in await owner.messages(room) if m["sender"] == bot_id]
    assert kinds.count(START) == 1 and kinds.count(END) == 1


async def test_plaintext_and_late_answers_run_nothing_and_are_told(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running, extra=permissions(12))
    bot_id, work = setup.bot.user_id, setup.config.folder / "work"
    fake_api.reply(tools=[("bash", {"command": f"touch {work}/never"})])
    fake_api.reply("Understood, I did not do it.")
    await owner.send_text(room, "make the file")
    question = await owner.wait_message(room, sender=bot_id, contains="May I?", timeout=60)
    poll = await owner.wait_message(room, sender=bot_id, event_type=START, timeout=30)

    # Element's ✅ goes unencrypted: never obeyed, told once per question.
    await owner.react(room, question["event_id"], "✅")
    told = await owner.wait_message(room, sender=bot_id, contains="unencrypted", timeout=30)
    assert "poll" in told["body"]
    await owner.react(room, question["event_id"], "👍")
    plain = await owner.vote(room, poll["event_id"], "once", encrypted=False)
    ignored = await bot.wait_log("vote.ignored", where=lambda r: r["event_id"] == plain)
    assert "plaintext" in ignored[0]["reason"]

    # No answer in time: the poll ends so, and a vote on it now approves nothing.
    await owner.wait_message(room, sender=bot_id, contains="No answer in time", timeout=60)
    ended = await owner.wait_message(room, sender=bot_id, event_type=END, timeout=30)
    assert ended["content"]["org.matrix.msc1767.text"].startswith("⌛")
    late = await owner.vote(room, poll["event_id"], "once")
    closed = await owner.wait_message(room, sender=bot_id, contains="question is closed")
    assert closed["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == late
    await owner.wait_message(room, sender=bot_id, contains="Understood, I did not", timeout=60)

    assert not (work / "never").exists()
    decided = bot.log_events("approval.decided")
    assert [(r["answer"], r["by"]) for r in decided] == [("no", "timeout")]
    bodies = [str(m["content"].get("body", "")) for m in await owner.messages(room)]
    assert sum("unencrypted" in body for body in bodies) == 1, "one notice per question"


async def test_always_by_a_stable_vote_learns_the_rule_the_poll_showed(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running, extra=permissions(90))
    bot_id, work = setup.bot.user_id, setup.config.folder / "work"
    command = f"touch {work}/always"
    fake_api.reply(tools=[("bash", {"command": command})])
    fake_api.reply("Made it.")
    await owner.send_text(room, "make the file")
    poll = await owner.wait_message(room, sender=bot_id, event_type=START, timeout=60)
    [always] = [a for a in poll["content"][START]["answers"] if a["id"] == "always"]
    shown = always["org.matrix.msc1767.text"].removeprefix("Always: allow ")

    # A client that sends the stable names is heard the same.
    await owner.vote(room, poll["event_id"], "always", stable=True)
    learned = await owner.wait_message(room, sender=bot_id, contains="Learned:", timeout=60)
    assert f"`{shown}`" in learned["body"], "it learned exactly the rule the poll showed"
    await owner.wait_message(room, sender=bot_id, contains="Made it.", timeout=60)
    ended = await owner.wait_message(room, sender=bot_id, event_type=END, timeout=30)
    assert ended["content"]["org.matrix.msc1767.text"] == f"✅ Approved, always: {shown}"

    # The same call again runs without a question.
    (work / "always").unlink()
    fake_api.reply(tools=[("bash", {"command": command})])
    fake_api.reply("Made it again.")
    await owner.send_text(room, "make the file again")
    await owner.wait_message(room, sender=bot_id, contains="Made it again.", timeout=60)
    assert (work / "always").exists()
    assert len(bot.log_events("approval.asked")) == 1


async def test_under_stock_limits_a_question_costs_two_events_and_meets_no_429(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(
        make_bot, owner_client, running, extra=permissions(90), limited=True
    )
    bot_id, work = setup.bot.user_id, setup.config.folder / "work"
    fake_api.reply(tools=[("bash", {"command": f"touch {work}/limited"})])
    fake_api.reply("Done under limits.")
    sent = await owner.send_text(room, "make the file")
    poll = await owner.wait_message(room, sender=bot_id, event_type=START, timeout=60)
    await owner.vote(room, poll["event_id"], "once")
    await owner.wait_message(room, sender=bot_id, contains="Done under limits.", timeout=60)
    await owner.wait_message(room, sender=bot_id, event_type=END, timeout=90)
    await owner.wait_reactions(room, sent, ["✅"], sender=bot_id, timeout=90)
    assert bot.log_events("outbox.rate_limited") == [], "no send met a 429"
    sent_events = [str(r["txn"]) for r in bot.log_events("outbox.sent")]
    mine = [txn for txn in sent_events if re.search(r"-t1\.", txn)]
    asking = [txn for txn in mine if ".ask." in txn]
    assert len(asking) == 2, "the question and its poll"
    assert sum(".end." in txn for txn in mine) == 1
