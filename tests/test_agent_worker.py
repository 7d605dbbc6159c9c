"""The agent with its tools as the queue runs them: tool calls past the permission policy,
approvals answered by "yes" / "no" / silence, errors by kind, budgets, caching. The worker
tier: the real queue, agent, tools (the shell in its sandbox), policy and store in this
process, the scripted stand-in on loopback, a fake room (no homeserver; what Matrix shows —
progress edits, a plaintext "yes", a reply to an expired question, a learned rule across a
restart — stays in tests/test_agent_e2e.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fake_messages_api import FakeMessagesAPI
from harness.toolcalls import permissions, result_text, tool_results
from harness.workbench import OWNER, Bench

pytestmark = [pytest.mark.worker]

MakeBench = Callable[..., Bench]


async def test_a_denied_command_never_runs_and_the_model_is_told(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    bench = make_bench(permissions())
    victim = bench.workdir / "keep.txt"
    victim.write_text("precious")
    fake_api.reply(tools=[("bash", {"command": f"rm {victim}"})])
    fake_api.reply("I was not allowed to delete it.")
    await bench.send("delete keep.txt")
    await bench.room.wait_message("not allowed")
    result = tool_results(fake_api.requests[1])[0]
    assert result["is_error"] and "Not allowed" in result_text(result)
    assert victim.read_text() == "precious"


async def test_ask_rule_yes_runs_no_does_not_silence_denies(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    bench = make_bench(permissions(4))
    work = bench.workdir

    # 1. An unmatched command asks; "yes" runs it.
    fake_api.reply(tools=[("bash", {"command": f"touch {work}/approved"})])
    fake_api.reply("Created it.")
    await bench.send("create the approved file")
    question = await bench.room.wait_message("May I?")
    assert f"touch {work}/approved" in question.body
    assert not (work / "approved").exists()
    await bench.send("yes")
    await bench.room.wait_message("Created it")
    assert (work / "approved").exists()

    # 2. "no" refuses, and the model hears it.
    fake_api.reply(tools=[("bash", {"command": f"touch {work}/refused"})])
    fake_api.reply("Understood, I did not.")
    await bench.send("create the refused file")
    second = await bench.room.wait_message("May I?", after=question.event_id)
    await bench.send("no")
    await bench.room.wait_message("Understood")
    assert not (work / "refused").exists()
    assert "did not approve" in result_text(tool_results(fake_api.requests[-1])[0])

    # 3. Silence is a no.
    fake_api.reply(tools=[("bash", {"command": f"touch {work}/ignored"})])
    fake_api.reply("Nobody answered, so I left it.")
    await bench.send("create the ignored file")
    await bench.room.wait_message("May I?", after=second.event_id)
    await bench.room.wait_message("No answer")
    await bench.room.wait_message("Nobody answered")
    assert not (work / "ignored").exists()
    decided = [r["by"] for r in bench.log_events("approval.decided")]
    assert decided == [OWNER, OWNER, "timeout"]


async def test_a_read_outside_the_allowed_roots_is_refused_also_through_a_symlink(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    bench = make_bench(permissions())
    outside = bench.workdir.parent / "outside.txt"
    outside.write_text("secret outside the roots")
    link = bench.workdir / "link.txt"
    link.symlink_to(outside)
    fake_api.reply(
        tools=[("read", {"file_path": str(outside)}), ("read", {"file_path": str(link)})]
    )
    fake_api.reply("Both were refused.")
    await bench.send("read those files")
    await bench.room.wait_message("Both were refused")
    results = tool_results(fake_api.requests[1])
    assert len(results) == 2
    for result in results:
        assert result["is_error"]
        assert "outside the allowed roots" in result_text(result)
        assert "secret outside" not in result_text(result)


async def test_overloaded_twice_then_success_still_answers(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    bench = make_bench(permissions())
    fake_api.fail(529, times=2)
    fake_api.reply("Made it through the overload.")
    await bench.send("are you there?")
    await bench.room.wait_message("Made it through")
    assert [r.status for r in fake_api.requests] == [529, 529, 200]


async def test_a_task_over_its_step_budget_stops_with_a_clear_message(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    bench = make_bench(permissions(), agent_extra="max_steps = 3")
    for n in range(5):
        fake_api.reply(tools=[("bash", {"command": f"echo loop {n}"})])
    await bench.send("loop forever")
    stopped = await bench.room.wait_message("step budget")
    assert "3 steps" in stopped.body
    assert len(fake_api.requests) == 3


async def test_follow_up_requests_reuse_the_cached_prefix(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    """Six turns with tool use: each follow-up request lies ≥ 80 % in a cached prefix."""
    bench = make_bench(permissions())
    for turn in range(6):
        fake_api.reply(tools=[("bash", {"command": f"echo turn {turn}"})])
        fake_api.reply(f"Turn {turn} done.")
        await bench.send(f"turn {turn}: run echo")
        await bench.room.wait_message(f"Turn {turn} done")
    report = fake_api.cache_report()
    assert len(report) == 12
    shares = [row["share"] for row in report[1:]]
    assert min(shares) >= 0.8, shares
    assert all(row["cache_read_input_tokens"] > 0 for row in report[1:])


async def test_an_outage_past_the_retry_budget_keeps_the_task_and_resumes_by_itself(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    bench = make_bench(permissions(), max_retries=1, agent_extra="outage_retry_s = 1")
    # Two overloaded answers use up the SDK's retry (1); two more keep it away for a while.
    fake_api.fail(529, times=4)
    fake_api.reply("Back in business.")
    sent = await bench.send("are you up?")
    notice = await bench.room.wait_message("unavailable")
    assert notice.reply_to == sent.event_id
    answer = await bench.room.wait_message("Back in business")
    assert answer.reply_to == sent.event_id
    assert [r.status for r in fake_api.requests] == [529, 529, 529, 529, 200]
    assert len(bench.log_events("model.outage")) == 2
    notices = [t for t in bench.room.bot_texts() if "unavailable" in t]
    assert len(notices) == 1, "told once per outage"
