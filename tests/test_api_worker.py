"""The real Messages API's bad days, as the queue and the agent take them: a stream that
breaks midway (an `overloaded_error` event, a cut connection), answers cut at max_tokens, a
refusal, a 413, a refused key or spent credit — and the commands that go with them
(`!retry`, `!new`, `!cancel #n`, `!model`). The worker tier: the real queue, agent, tools and
store in this process, the strict stand-in on loopback, a fake room (no homeserver; what
Matrix shows of these stays in tests/test_api_e2e.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fake_messages_api import FakeMessagesAPI
from harness.workbench import Bench

pytestmark = [pytest.mark.worker]

MakeBench = Callable[..., Bench]


# ---- streams that break midway ---------------------------------------------------------------


async def test_an_overloaded_error_mid_stream_waits_then_answers_once(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    """The stream starts with HTTP 200, then carries an `overloaded_error` event, twice: past
    the retry budget (1), so the task waits as for a 529, and then answers, once."""
    bench = make_bench(max_retries=1, agent_extra="outage_retry_s = 1")
    for _ in range(2):
        fake_api.fail_midstream(
            text="PARTIAL-OVERLOADED words that never reach the room", after_events=6
        )
    fake_api.reply("Answer after the overload.")
    sent = await bench.send("are you there?")
    notice = await bench.room.wait_message("unavailable")
    assert "overloaded_error" in notice.body
    answer = await bench.room.wait_message("Answer after the overload")
    assert answer.reply_to == sent.event_id
    await bench.room.final_state("done")
    texts = bench.room.bot_texts()
    assert sum("Answer after the overload" in t for t in texts) == 1
    assert not any("PARTIAL" in t for t in texts)
    assert [r.status for r in fake_api.requests] == [200, 200, 200]
    assert len(bench.log_events("model.stream_broken")) == 1
    assert len(bench.log_events("model.outage")) == 1


async def test_a_cut_stream_is_answered_once_and_its_partial_text_never_posted(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    bench = make_bench()
    fake_api.fail_midstream(
        mode="disconnect", text="PARTIAL-CUT words of a broken answer", after_events=6
    )
    fake_api.reply("The whole answer.")
    await bench.send("tell me everything")
    await bench.room.wait_message("The whole answer")
    await bench.room.final_state("done")
    texts = bench.room.bot_texts()
    assert sum("The whole answer" in t for t in texts) == 1
    assert not any("PARTIAL" in t or "unavailable" in t for t in texts)
    assert [r.status for r in fake_api.requests] == [200, 200]
    (broken,) = bench.log_events("model.stream_broken")
    assert "broke mid-answer" in broken["error"]


# ---- stop reasons ---------------------------------------------------------------------------


async def test_an_answer_cut_at_max_tokens_is_continued_into_one_message(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    bench = make_bench()
    fake_api.stop_with("max_tokens", "The first half of a long answer, ")
    fake_api.reply("and its second half.")
    await bench.send("write a long answer")
    answer = await bench.room.wait_message("second half")
    assert answer.body == "The first half of a long answer, and its second half."
    await bench.room.final_state("done")
    assert "cut off at the output limit" in str(fake_api.requests[1].body["messages"][-1])


async def test_an_answer_still_cut_is_shown_as_cut_not_done(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    bench = make_bench(agent_extra="max_continuations = 1")
    fake_api.stop_with("max_tokens", "Only a beginning, ")
    fake_api.stop_with("max_tokens", "and a middle")
    await bench.send("write a very long answer")
    cut = await bench.room.wait_message("cut off")
    assert "output limit" in cut.body and "max_tokens" in cut.body
    assert "Only a beginning, and a middle" in cut.body
    await bench.room.final_state("failed")


async def test_a_refusal_tells_the_owner_and_the_task_gets_no_tick(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    bench = make_bench()
    fake_api.stop_with("refusal", "PARTIAL-REFUSED text")
    await bench.send("do something it will not")
    declined = await bench.room.wait_message("declined")
    assert "refusal" in declined.body
    await bench.room.final_state("failed")
    # !retry runs it again: this time it is answered, and ticked.
    fake_api.reply("Done on the second try.")
    await bench.send("!retry")
    await bench.room.wait_message("queued again")
    await bench.room.wait_message("Done on the second try")
    await bench.room.final_state("done")
    assert not any("PARTIAL" in t for t in bench.room.bot_texts())


async def test_a_413_is_answered_after_one_lean_retry(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    bench = make_bench()
    fake_api.fail(413)
    fake_api.reply("Answered despite the size.")
    await bench.send("a big request")
    await bench.room.wait_message("Answered despite the size")
    await bench.room.final_state("done")
    assert [r.status for r in fake_api.requests] == [413, 200]
    (refused,) = bench.log_events("agent.context_too_long")
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
    make_bench: MakeBench, fake_api: FakeMessagesAPI, status: int, message: str
) -> None:
    bench = make_bench()
    fake_api.fail(status, message=message)
    await bench.send("first task")
    refused = await bench.room.wait_message("refused me")
    assert message in refused.body and "!resume" in refused.body
    status_asked = await bench.send("!status")
    paused = await bench.room.wait_message("Queue:", after=status_asked.event_id)
    assert "paused" in paused.body
    assert len(fake_api.requests) == 1, "nothing more is asked while paused"
    fake_api.reply("Back with a good key.")
    await bench.send("!resume")
    await bench.room.wait_message("Back with a good key")
    await bench.room.final_state("done")
    assert [r.status for r in fake_api.requests] == [status, 200]


# ---- the commands that go with them ------------------------------------------------------------


async def test_new_starts_a_conversation_the_model_sees_fresh(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    bench = make_bench()
    await bench.send("remember the word PINEAPPLE")
    await bench.room.wait_message("PINEAPPLE")
    await bench.send("!new")
    await bench.room.wait_message("fresh conversation")
    await bench.send("what was the word?")
    await bench.room.wait_message("what was the word")
    first, second = (r.body for r in fake_api.requests)
    assert "PINEAPPLE" in str(first["messages"])
    assert "PINEAPPLE" not in str(second["messages"])
    assert len(second["messages"]) == 1


async def test_cancel_of_a_queued_task_by_number_drops_only_that_one(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    bench = make_bench()
    await bench.send("!pause")
    await bench.room.wait_message("Paused")
    await bench.send("keep this one")
    await bench.send("drop this one")
    await bench.send("!queue")
    listing = await bench.room.wait_message("2 in the queue")
    line = next(x for x in listing.body.splitlines() if "drop this one" in x)
    number = line.split()[1]
    assert number.startswith("#")
    await bench.send(f"!cancel {number}")
    await bench.room.wait_message(f"Dropped {number}")
    await bench.send("!resume")
    await bench.room.wait_message("echo:")
    await bench.room.final_state("done")
    await bench.send("!queue")
    await bench.room.wait_message("The queue is empty")
    asked = [str(r.body["messages"]) for r in fake_api.requests]
    assert len(asked) == 1 and "keep this one" in asked[0] and "drop this one" not in asked[0]


async def test_model_lists_what_the_models_api_offers(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    bench = make_bench()
    await bench.send("!model")
    shown = await bench.room.wait_message("Offered by the API")
    assert "`claude-sonnet-5-5` — Claude Sonnet 5.5" in shown.body
    assert "`claude-sonnet-4-6` — Claude Sonnet 4.6 (in use)" in shown.body
    assert "claude-opus-4-1" not in shown.body  # retired
    assert any(r.path == "/v1/models" for r in fake_api.model_requests)
