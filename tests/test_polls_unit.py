"""Approval polls without a homeserver: what a vote says, which vote counts, how a poll ends,
and that "always" can learn an MCP tool."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from harness.workbench import FakeRoom
from nio import Event
from test_approvals_unit import OWNER, ROOM, asked, decision, task

from dispatch_matrix.agent.ports import Approval
from dispatch_matrix.core.ids import EventID, RoomID
from dispatch_matrix.matrix import polls
from dispatch_matrix.matrix.inbound import Vote, from_event
from dispatch_matrix.permissions.policy import Decision, Policy
from dispatch_matrix.queue import approval_texts as texts
from dispatch_matrix.queue.approvals import Approvals
from dispatch_matrix.queue.polls import approval_of
from dispatch_matrix.store import Database

REF = {"rel_type": "m.reference", "event_id": "$poll"}


@pytest.mark.parametrize(
    ("event_type", "content", "expected"),
    [
        (
            polls.UNSTABLE_RESPONSE,
            {"m.relates_to": REF, polls.UNSTABLE_RESPONSE: {"answers": ["once"]}},
            polls.Ballot(EventID("$poll"), ("once",)),
        ),
        (
            polls.STABLE_RESPONSE,
            {"m.relates_to": REF, "m.selections": ["deny"]},
            polls.Ballot(EventID("$poll"), ("deny",)),
        ),
        # A retracted vote: no answers.
        (
            polls.UNSTABLE_RESPONSE,
            {"m.relates_to": REF, polls.UNSTABLE_RESPONSE: {"answers": []}},
            polls.Ballot(EventID("$poll"), ()),
        ),
        # Not a reference to a poll, no relation, answers that are not strings, not a vote.
        (
            polls.UNSTABLE_RESPONSE,
            {
                "m.relates_to": {"rel_type": "m.annotation", "event_id": "$poll"},
                polls.UNSTABLE_RESPONSE: {"answers": ["once"]},
            },
            None,
        ),
        (polls.UNSTABLE_RESPONSE, {polls.UNSTABLE_RESPONSE: {"answers": ["once"]}}, None),
        (polls.STABLE_RESPONSE, {"m.relates_to": REF, "m.selections": [1]}, None),
        (polls.STABLE_RESPONSE, {"m.relates_to": REF, "m.selections": "once"}, None),
        ("m.reaction", {"m.relates_to": REF, "m.selections": ["once"]}, None),
    ],
)
def test_a_vote_is_read_from_either_namespace_or_not_at_all(
    event_type: str, content: dict[str, Any], expected: polls.Ballot | None
) -> None:
    assert polls.read_ballot(event_type, content) == expected


WITH_ALWAYS = texts.poll_choices("Bash(make)")
WITHOUT_ALWAYS = texts.poll_choices(None)


@pytest.mark.parametrize(
    ("answers", "offered", "expected"),
    [
        (("once",), WITH_ALWAYS, Approval.YES),
        (("always",), WITH_ALWAYS, Approval.ALWAYS),
        (("deny",), WITH_ALWAYS, Approval.NO),
        (("deny",), WITHOUT_ALWAYS, Approval.NO),
        # "Always" when no rule could cover the call was never offered: it says nothing.
        (("always",), WITHOUT_ALWAYS, None),
        ((), WITH_ALWAYS, None),
        (("once", "deny"), WITH_ALWAYS, None),
        (("yes",), WITH_ALWAYS, None),
    ],
)
def test_the_outcome_of_a_vote(
    answers: tuple[str, ...], offered: tuple[polls.Choice, ...], expected: Approval | None
) -> None:
    assert approval_of(answers, offered) is expected


def test_the_always_answer_shows_the_literal_rule_and_the_fallback_lists_every_answer() -> None:
    assert [c.label for c in WITH_ALWAYS] == [
        "Approve once",
        "Always: allow Bash(make)",
        "Deny",
    ]
    content = polls.start_content(EventID("$q"), "May I?", WITH_ALWAYS)
    assert content["m.relates_to"] == {"rel_type": "m.reference", "event_id": "$q"}
    start = content[polls.POLL_START]
    assert start["max_selections"] == 1
    assert [a["id"] for a in start["answers"]] == ["once", "always", "deny"]
    fallback = content["org.matrix.msc1767.text"]
    assert fallback.startswith("May I?") and "2. Always: allow Bash(make)" in fallback
    end = polls.end_content(EventID("$p"), "❌ Denied.")
    assert end["m.relates_to"]["event_id"] == "$p" and polls.POLL_END in end


@pytest.mark.parametrize(
    ("outcome", "rule", "text"),
    [
        ("yes", None, "✅ Approved once."),
        ("always", "Bash(make)", "✅ Approved, always: Bash(make)"),
        # "always" typed where no rule can cover the call: it ran once only.
        ("always", None, "✅ Approved once."),
        ("no", None, "❌ Denied."),
        ("timeout", None, "⌛ No answer in time: not done."),
        ("withdrawn", None, "Withdrawn: the task stopped before an answer."),
    ],
)
def test_how_a_poll_ends(outcome: str, rule: str | None, text: str) -> None:
    assert texts.poll_ended(outcome, rule) == text


def test_a_poll_vote_arrives_from_the_sync_as_a_vote() -> None:
    wire = {
        "type": polls.UNSTABLE_RESPONSE,
        "event_id": "$v",
        "sender": OWNER,
        "origin_server_ts": 1,
        "content": {"m.relates_to": REF, polls.UNSTABLE_RESPONSE: {"answers": ["once"]}},
    }
    event = Event.parse_event(wire)
    item = from_event(ROOM, event)
    assert isinstance(item, Vote)
    assert item.ballot == polls.Ballot(EventID("$poll"), ("once",))
    assert not item.was_encrypted, "came in plaintext"
    other = Event.parse_event({**wire, "type": "org.example.thing"})
    assert from_event(ROOM, other) is None


async def poll_of(room: FakeRoom) -> tuple[EventID, dict[str, Any]]:
    """The poll start posted for the last question."""
    await room.wait_for(lambda: room.events, "poll start", 5)
    start = room.events[-1]
    assert start.event_type == polls.POLL_START and ".ask." in (start.key or "")
    return start.event_id, start.content


async def ended(room: FakeRoom, count: int) -> list[str]:
    """The texts of the poll ends posted once `count` are there."""

    def ends() -> list[str]:
        return [
            e.content["org.matrix.msc1767.text"]
            for e in room.events
            if e.event_type == polls.POLL_END
        ]

    await room.wait_for(lambda: len(ends()) >= count, f"{count} poll ends", 5)
    return ends()


async def test_a_vote_answers_the_open_question_and_the_poll_ends_with_the_outcome(
    tmp_path: Path,
) -> None:
    db, room = Database.open(tmp_path / "d.db"), FakeRoom()
    approvals = Approvals(db, room, timeout_s=5)
    learns = Decision("ask", "no rule allows it", "make", learns="Bash(make)")
    pending = asyncio.create_task(approvals.ask(task(db), learns))
    question = await asked(room)
    poll, content = await poll_of(room)
    assert "poll just below" in question.body, "the question points to the poll"
    refers_to = content["m.relates_to"]["event_id"]
    assert refers_to == question.event_id, "the poll refers to its question"
    ballot = polls.Ballot(poll, ("always",))
    # A vote in another room, or on another event, answers nothing.
    assert not await approvals.answer_vote(RoomID("!else:x"), ballot, OWNER, EventID("$v0"))
    assert not await approvals.answer_vote(
        ROOM, polls.Ballot(EventID("$other"), ("once",)), OWNER, EventID("$v1")
    )
    assert not pending.done()
    assert await approvals.answer_vote(ROOM, ballot, OWNER, EventID("$v2"))
    assert await pending is Approval.ALWAYS
    assert await ended(room, 1) == ["✅ Approved, always: Bash(make)"]


async def test_a_vote_on_an_expired_poll_approves_nothing_and_says_so(tmp_path: Path) -> None:
    db, room = Database.open(tmp_path / "d.db"), FakeRoom()
    approvals = Approvals(db, room, timeout_s=0.3)
    waiting = asyncio.create_task(approvals.ask(task(db), decision("touch x")))
    poll, _content = await poll_of(room)
    assert await waiting is Approval.NO
    assert await ended(room, 1) == [texts.POLL_OUTCOMES["timeout"]]
    # The ledger knows the poll was a question's (its key holds .ask.).
    db.enqueue_outgoing(ROOM, polls.POLL_START, {}, 1, "t1.ask.x.1.poll")
    db.mark_sent(f"dm-{db.instance_id()}-t1.ask.x.1.poll", poll)
    before = len(room.messages)
    took = await approvals.answer_vote(ROOM, polls.Ballot(poll, ("once",)), OWNER, EventID("$v"))
    assert took and room.messages[-1].body == texts.QUESTION_CLOSED
    assert len(room.messages) == before + 1, "one line"


async def test_a_second_vote_after_the_answer_approves_nothing(tmp_path: Path) -> None:
    db, room = Database.open(tmp_path / "d.db"), FakeRoom()
    approvals = Approvals(db, room, timeout_s=5)
    waiting = asyncio.create_task(approvals.ask(task(db), decision("touch x")))
    poll, _content = await poll_of(room)
    assert await approvals.answer_vote(ROOM, polls.Ballot(poll, ("deny",)), OWNER, EventID("$a"))
    # Settled but not yet collected by the asking task: still closed to a second vote.
    assert await approvals.answer_vote(ROOM, polls.Ballot(poll, ("once",)), OWNER, EventID("$b"))
    assert room.messages[-1].body == texts.QUESTION_CLOSED
    assert await waiting is Approval.NO
    assert await ended(room, 1) == ["❌ Denied."]


async def test_a_withdrawn_question_ends_its_poll(tmp_path: Path) -> None:
    db, room = Database.open(tmp_path / "d.db"), FakeRoom()
    approvals = Approvals(db, room, timeout_s=5)
    waiting = asyncio.create_task(approvals.ask(task(db), decision("touch x")))
    await poll_of(room)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await ended(room, 1) == [texts.POLL_OUTCOMES["withdrawn"]]


async def test_a_plaintext_answer_is_told_once_per_question_and_never_obeyed(
    tmp_path: Path,
) -> None:
    db, room = Database.open(tmp_path / "d.db"), FakeRoom()
    approvals = Approvals(db, room, timeout_s=5)
    waiting = asyncio.create_task(approvals.ask(task(db), decision("touch x")))
    question = (await asked(room)).event_id
    poll, _content = await poll_of(room)
    await approvals.plaintext_answer(ROOM, question, EventID("$r1"))
    await approvals.plaintext_answer(ROOM, poll, EventID("$r2"))
    await approvals.plaintext_answer(ROOM, question, EventID("$r3"))
    told = [m for m in room.messages if m.body == texts.PLAINTEXT_REACTION]
    assert len(told) == 1 and told[0].reply_to == "$r1"
    # On something that is no question: nothing said.
    await approvals.plaintext_answer(ROOM, EventID("$elsewhere"), EventID("$r4"))
    assert len([m for m in room.messages if m.body == texts.PLAINTEXT_REACTION]) == 1
    assert not waiting.done()
    waiting.cancel()


def mcp_policy(ask: list[str] | None = None, deny: list[str] | None = None) -> Policy:
    return Policy([], ask or [], deny or [], Path("/home/u"), Path("/home/u/w"))


def test_always_learns_an_mcp_tool_by_its_full_name() -> None:
    policy = mcp_policy()
    call = ("mcp__notes__add_note", {"text": "hi"})
    assert policy.decide(*call).verdict == "ask"
    assert policy.learnable(*call) == "mcp__notes__add_note"
    assert policy.decide(*call).verdict == "ask", "learnable learns nothing"
    assert policy.learn(*call) == "mcp__notes__add_note"
    assert policy.decide(*call).verdict == "allow"
    assert policy.decide("mcp__notes__delete_note", {}).verdict == "ask", "that tool only"
    assert "every call of this tool" in texts.rule_learned("mcp__notes__add_note")


@pytest.mark.parametrize(
    "policy",
    [mcp_policy(ask=["mcp__notes__add_note"]), mcp_policy(deny=["mcp__notes"])],
)
def test_no_mcp_rule_is_learned_where_an_ask_or_deny_rule_names_the_tool(policy: Policy) -> None:
    assert policy.learnable("mcp__notes__add_note", {}) is None
    assert policy.learnable("mcp__notes", {}) is None, "a server alone is no tool"
