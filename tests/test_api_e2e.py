"""The real Messages API's bad days, through the room: a stream that breaks midway (an
`overloaded_error` event, a cut connection), answers cut at max_tokens, a refusal, a 413, a
refused key or spent credit — and the commands that go with them (`!retry`, `!new`,
`!cancel #n`, `!model`). Synapse, a strict js client, the bot process, the strict stand-in."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import BotSetup
from fake_messages_api import FakeMessagesAPI
from harness.bot import BotProcess
from harness.jsclient import JsClient

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]


async def started(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    running: list[BotProcess],
    agent_keys: str = "",
    model: str | None = None,
) -> tuple[BotSetup, BotProcess, JsClient, str]:
    """A bot with `agent_keys` added to its [agent] section, and the owner in a DM with it."""
    setup = make_bot()
    if model:
        setup.config.model = model
        setup.config.write()
    if agent_keys:
        text = setup.config.path.read_text()
        setup.config.path.write_text(text.replace("max_retries = 3", agent_keys))
    bot = await setup.process().start()
    running.append(bot)
    owner = await owner_client(setup.owner)
    room = await owner.create_dm(setup.bot.user_id)
    await owner.wait_join(room, setup.bot.user_id)
    return setup, bot, owner, room


def bot_texts(messages: list[dict[str, Any]], bot: str) -> list[str]:
    return [
        str(m["content"].get("body", ""))
        for m in messages
        if m["sender"] == bot and m["type"] == "m.room.message"
    ]


async def final_state(bot: BotProcess, state: str) -> None:
    """Wait until the task's status reaction for `state` went out; no ✅ may have gone out
    unless `state` is done."""
    await bot.wait_log("outbox.sent", where=lambda r: reaction_state(r) == state)
    if state != "done":
        ticks = [r for r in bot.log_events("outbox.sent") if reaction_state(r) == "done"]
        assert ticks == [], "no ✅"


def reaction_state(record: dict[str, Any]) -> str | None:
    """The task state a sent status reaction showed (keys end `.react.<n>.<state>`)."""
    found = re.search(r"\.react\.\d+\.([a-z-]+)$", str(record.get("txn", "")))
    return found.group(1) if found else None


# ---- streams that break midway ---------------------------------------------------------------


async def test_an_overloaded_error_mid_stream_waits_then_answers_once(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    """The stream starts with HTTP 200, then carries an `overloaded_error` event, twice: past
    the retry budget (1), so the task waits as for a 529, and then answers, once."""
    setup, bot, owner, room = await started(
        make_bot, owner_client, running, "max_retries = 1\noutage_retry_s = 1"
    )
    bot_id = setup.bot.user_id
    for _ in range(2):
        fake_api.fail_midstream(
            text="PARTIAL-OVERLOADED words that never reach the room", after_events=6
        )
    fake_api.reply("Answer after the overload.")
    sent = await owner.send_text(room, "are you there?")
    notice = await owner.wait_message(room, sender=bot_id, contains="unavailable")
    assert "overloaded_error" in notice["body"]
    answer = await owner.wait_message(room, sender=bot_id, contains="Answer after the overload")
    assert answer["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == sent
    await final_state(bot, "done")
    texts = bot_texts(await owner.messages(room), bot_id)
    assert sum("Answer after the overload" in t for t in texts) == 1
    assert not any("PARTIAL" in t for t in texts)
    assert [r.status for r in fake_api.requests] == [200, 200, 200]
    assert len(bot.log_events("model.stream_broken")) == 1
    assert len(bot.log_events("model.outage")) == 1


async def test_a_cut_stream_is_answered_once_and_its_partial_text_never_posted(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running)
    bot_id = setup.bot.user_id
    fake_api.fail_midstream(
        mode="disconnect", text="PARTIAL-CUT words of a broken answer", after_events=6
    )
    fake_api.reply("The whole answer.")
    await owner.send_text(room, "tell me everything")
    await owner.wait_message(room, sender=bot_id, contains="The whole answer")
    await final_state(bot, "done")
    texts = bot_texts(await owner.messages(room), bot_id)
    assert sum("The whole answer" in t for t in texts) == 1
    assert not any("PARTIAL" in t or "unavailable" in t for t in texts)
    assert [r.status for r in fake_api.requests] == [200, 200]
    (broken,) = bot.log_events("model.stream_broken")
    assert "broke mid-answer" in broken["error"]


# ---- stop reasons ---------------------------------------------------------------------------


async def test_an_answer_cut_at_max_tokens_is_continued_into_one_message(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running)
    bot_id = setup.bot.user_id
    fake_api.stop_with("max_tokens", "The first half of a long answer, ")
    fake_api.reply("and its second half.")
    await owner.send_text(room, "write a long answer")
    answer = await owner.wait_message(room, sender=bot_id, contains="second half")
    assert answer["body"] == "The first half of a long answer, and its second half."
    await final_state(bot, "done")
    assert "cut off at the output limit" in str(fake_api.requests[1].body["messages"][-1])


async def test_an_answer_still_cut_is_shown_as_cut_not_done(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(
        make_bot, owner_client, running, "max_retries = 3\nmax_continuations = 1"
    )
    bot_id = setup.bot.user_id
    fake_api.stop_with("max_tokens", "Only a beginning, ")
    fake_api.stop_with("max_tokens", "and a middle")
    await owner.send_text(room, "write a very long answer")
    cut = await owner.wait_message(room, sender=bot_id, contains="cut off")
    assert "output limit" in cut["body"] and "max_tokens" in cut["body"]
    assert "Only a beginning, and a middle" in cut["body"]
    await final_state(bot, "failed")


async def test_a_refusal_tells_the_owner_and_the_task_gets_no_tick(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running)
    bot_id = setup.bot.user_id
    fake_api.stop_with("refusal", "PARTIAL-REFUSED text")
    await owner.send_text(room, "do something it will not")
    declined = await owner.wait_message(room, sender=bot_id, contains="declined")
    assert "refusal" in declined["body"]
    await final_state(bot, "failed")
    # !retry runs it again: this time it is answered, and ticked.
    fake_api.reply("Done on the second try.")
    await owner.send_text(room, "!retry")
    await owner.wait_message(room, sender=bot_id, contains="queued again")
    await owner.wait_message(room, sender=bot_id, contains="Done on the second try")
    await final_state(bot, "done")
    texts = bot_texts(await owner.messages(room), bot_id)
    assert not any("PARTIAL" in t for t in texts)


async def test_a_413_is_answered_after_one_lean_retry(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running)
    bot_id = setup.bot.user_id
    fake_api.fail(413)
    fake_api.reply("Answered despite the size.")
    await owner.send_text(room, "a big request")
    await owner.wait_message(room, sender=bot_id, contains="Answered despite the size")
    await final_state(bot, "done")
    assert [r.status for r in fake_api.requests] == [413, 200]
    (refused,) = bot.log_events("agent.context_too_long")
    assert refused["too_large"] is True


# ---- refused key and spent credit --------------------------------------------------------------


@pytest.mark.parametrize(
    "status, message",
    [
        (401, "invalid x-api-key"),
        (400, "Your credit balance is too low to access the Anthropic API."),
    ],
)
async def test_a_refused_key_or_spent_credit_pauses_the_queue_until_resume(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
    status: int,
    message: str,
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running)
    bot_id = setup.bot.user_id
    fake_api.fail(status, message=message)
    await owner.send_text(room, "first task")
    refused = await owner.wait_message(room, sender=bot_id, contains="refused me")
    assert message in refused["body"] and "!resume" in refused["body"]
    await owner.send_text(room, "!status")
    paused = await owner.wait_message(room, sender=bot_id, contains="Queue:")
    assert "paused" in paused["body"]
    assert len(fake_api.requests) == 1, "nothing more is asked while paused"
    fake_api.reply("Back with a good key.")
    await owner.send_text(room, "!resume")
    await owner.wait_message(room, sender=bot_id, contains="Back with a good key")
    await final_state(bot, "done")
    assert [r.status for r in fake_api.requests] == [status, 200]


# ---- the commands that go with them ------------------------------------------------------------


async def test_new_starts_a_conversation_the_model_sees_fresh(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, _bot, owner, room = await started(make_bot, owner_client, running)
    bot_id = setup.bot.user_id
    await owner.send_text(room, "remember the word PINEAPPLE")
    await owner.wait_message(room, sender=bot_id, contains="PINEAPPLE")
    await owner.send_text(room, "!new")
    await owner.wait_message(room, sender=bot_id, contains="fresh conversation")
    await owner.send_text(room, "what was the word?")
    await owner.wait_message(room, sender=bot_id, contains="what was the word")
    first, second = (r.body for r in fake_api.requests)
    assert "PINEAPPLE" in str(first["messages"])
    assert "PINEAPPLE" not in str(second["messages"])
    assert len(second["messages"]) == 1


async def test_cancel_of_a_queued_task_by_number_drops_only_that_one(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running)
    bot_id = setup.bot.user_id
    await owner.send_text(room, "!pause")
    await owner.wait_message(room, sender=bot_id, contains="Paused")
    await owner.send_text(room, "keep this one")
    await owner.send_text(room, "drop this one")
    await owner.send_text(room, "!queue")
    listing = await owner.wait_message(room, sender=bot_id, contains="2 in the queue")
    line = next(x for x in listing["body"].splitlines() if "drop this one" in x)
    number = line.split()[1]
    assert number.startswith("#")
    await owner.send_text(room, f"!cancel {number}")
    await owner.wait_message(room, sender=bot_id, contains=f"Dropped {number}")
    await owner.send_text(room, "!resume")
    await owner.wait_message(room, sender=bot_id, contains="echo:")
    await final_state(bot, "done")
    await owner.send_text(room, "!queue")
    await owner.wait_message(room, sender=bot_id, contains="The queue is empty")
    asked = [str(r.body["messages"]) for r in fake_api.requests]
    assert len(asked) == 1 and "keep this one" in asked[0] and "drop this one" not in asked[0]


async def test_model_lists_what_the_models_api_offers(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, _bot, owner, room = await started(make_bot, owner_client, running)
    await owner.send_text(room, "!model")
    shown = await owner.wait_message(room, sender=setup.bot.user_id, contains="Offered by the API")
    assert "`claude-sonnet-5-5` — Claude Sonnet 5.5" in shown["body"]
    assert "`claude-sonnet-4-6` — Claude Sonnet 4.6 (in use)" in shown["body"]
    assert "claude-opus-4-1" not in shown["body"]  # retired
    assert any(r.path == "/v1/models" for r in fake_api.model_requests)


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
