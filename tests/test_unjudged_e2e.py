"""The homeserver fails only the owner's key query (`/keys/query` answers 502, everything
else works): what the owner sends meanwhile is not lost and not obeyed unjudged; it waits,
and once the keys can be fetched it is judged and handled once, in the room's order. Synapse,
a strict js client, the bot process behind a relay that fails that one path."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest
from conftest import BotSetup, Homeserver
from fake_messages_api import FakeMessagesAPI
from harness.bot import BotProcess
from harness.http_relay import FailingPathRelay
from harness.jsclient import JsClient
from harness.toolcalls import permissions
from test_ops_e2e import answers_to, join, last_user_text

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]


async def behind_keys_relay(
    homeserver: Homeserver,
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    running: list[BotProcess],
    extra: str = "",
) -> tuple[FailingPathRelay, BotSetup, BotProcess, JsClient, str]:
    """A bot that reaches Synapse through a relay able to fail /keys/query, its owner's
    strict client, and their DM; the relay still passes everything."""
    synapse = homeserver.synapse
    relay = await FailingPathRelay(synapse.host, synapse.port, "/keys/query").start()
    setup = make_bot(extra=extra)
    setup.config.homeserver = relay.url
    setup.config.write()
    bot, owner, room = await join(setup, owner_client, running)
    # The bot has sent nothing (no welcome): the trust gate has not fetched the owner's
    # keys yet, so the owner's first message needs /keys/query.
    assert relay.passed() >= 1, "the bot's start checked its own keys through the relay"
    return relay, setup, bot, owner, room


async def test_a_message_sent_while_keys_cannot_be_fetched_is_answered_once_in_order(
    homeserver: Homeserver,
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    began = time.monotonic()
    relay, setup, bot, owner, room = await behind_keys_relay(
        homeserver, make_bot, owner_client, running
    )
    bot_id = setup.bot.user_id
    for answer in ("one answered", "two answered", "three answered"):
        fake_api.reply(answer)
    # From here nio's own key queries fail too, as they would with that endpoint down: the
    # sync loop then backs off (1, 2, 4 s) between syncs.
    relay.failing = True
    try:
        one = await owner.send_text(room, "one, while the keys cannot be fetched")
        [kept] = await bot.wait_log("message.unjudged", timeout=30)
        assert kept["event_id"] == one and "502" in kept["why"], kept
        # A later message waits behind it, not judged first (at its sync the first is
        # judged again, and still cannot be).
        two = await owner.send_text(room, "two, behind it")
        behind = await bot.wait_log("message.unjudged", timeout=30, count=2)
        assert behind[1]["event_id"] == two and behind[1]["why"] == "behind"
        await bot.wait_log("message.still_unjudged", timeout=30)
        assert fake_api.requests == [] and not bot.log_events("task.queued"), "none obeyed"
    finally:
        relay.failing = False
    held_syncs = len(bot.log_events("message.still_unjudged"))
    # The next sync (this message brings it) judges the two first, in order.
    three = await owner.send_text(room, "three, after the heal")
    await owner.wait_message(room, sender=bot_id, contains="three answered", timeout=30)
    took = time.monotonic() - began
    print(f"held {held_syncs} syncs; the test took {took:.1f}s")
    queued = [r["event_id"] for r in bot.log_events("task.queued")]
    assert queued == [one, two, three], "in the room's order, each once"
    asked = [last_user_text(request) for request in fake_api.requests]
    assert len(asked) == 3, "the model was asked once for each"
    for words, text in zip(("one, while", "two, behind", "three, after"), asked, strict=True):
        assert words in text, (words, text)
    messages = await owner.messages(room)
    for sent, answer in ((one, "one answered"), (two, "two answered"), (three, "three")):
        found = answers_to(messages, bot_id, sent)
        assert len(found) == 1 and answer in found[0], (sent, found)
    judged = bot.log_events("message.judged_late")
    assert [(r["event_id"], r["admitted"]) for r in judged] == [(one, True), (two, True)]
    assert sum(1 for _path, failed in relay.seen if failed) >= held_syncs + 1
    await relay.cut()


async def test_an_approval_tapped_while_keys_cannot_be_fetched_approves_once_they_can(
    homeserver: Homeserver,
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    began = time.monotonic()
    relay, setup, bot, owner, room = await behind_keys_relay(
        homeserver, make_bot, owner_client, running, permissions(60)
    )
    bot_id, work = setup.bot.user_id, setup.config.folder / "work"
    fake_api.reply(tools=[("bash", {"command": f"touch {work}/approved"})])
    fake_api.reply("Made it.")
    await owner.send_text(room, "make the approved file")
    question = await owner.wait_message(room, sender=bot_id, contains="May I?")
    # A second session of the owner's signs in: their device list changes, and the bot
    # drops the keys it had (the next judgement must fetch them again). nio asks for the
    # new device at once: that failed query shows the bot's sync carried the change.
    relay.failing = True
    try:
        await owner_client(setup.owner, cross_sign=False, name="owner-laptop")
        await relay.wait_seen(1, failed=True)
        await owner.react_encrypted(room, question["event_id"], "✅")
        [kept] = await bot.wait_log("reaction.unjudged", timeout=30)
        assert "502" in kept["why"], kept
        assert not bot.log_events("approval.decided"), "not obeyed unjudged"
    finally:
        relay.failing = False
    healed = time.monotonic()
    # The next sync judges it: soon, as nio's own failed query put the sync loop in its
    # backoff (quick syncs); at worst when the long poll (30 s) ends.
    await owner.wait_message(room, sender=bot_id, contains="Made it", timeout=45)
    print(
        f"approved and done {time.monotonic() - healed:.1f}s after the heal;"
        f" the approval test took {time.monotonic() - began:.1f}s"
    )
    assert (work / "approved").exists()
    assert [r["by"] for r in bot.log_events("approval.decided")] == [setup.owner.user_id]
    [late] = bot.log_events("reaction.judged_late")
    assert late["admitted"] is True and not bot.log_events("message.judged_late")
    await relay.cut()
