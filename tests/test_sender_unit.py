"""The sender's order without a homeserver: answers first, decorations within the budget,
superseded ones dropped, a 429 holding back only what it refused."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.core.ids import EventID
from dispatch_matrix.matrix.failures import (
    CannotSend,
    RateLimited,
    RequestRefused,
    Unreachable,
    is_final,
)
from dispatch_matrix.matrix.sender import (
    DECORATION_STALE_S,
    MIN_RESERVE,
    Budget,
    Job,
    Sender,
    Urgency,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_budget_refills_at_its_rate_up_to_the_burst() -> None:
    clock = Clock()
    budget = Budget(0.2, 10, clock)
    for _ in range(10):
        budget.spend()
    assert budget.available() == pytest.approx(0.0)
    clock.now += 5
    assert budget.available() == pytest.approx(1.0)
    clock.now += 1000
    assert budget.available() == pytest.approx(10.0)
    assert budget.seconds_until(10) == 0


def test_a_429_empties_the_budget_until_retry_after() -> None:
    clock = Clock()
    budget = Budget(0.2, 10, clock)
    budget.refused(3.0)
    assert budget.available() == 0
    assert budget.seconds_until(1) == pytest.approx(3.0 + 5.0)
    clock.now += 3.0
    assert budget.available() == pytest.approx(0.0)


def test_no_limit_means_always_room() -> None:
    budget = Budget(0, 10)
    for _ in range(100):
        budget.spend()
    assert budget.available() == float("inf")


class Recorder:
    """Performs that record their label, optionally refusing with a 429 first."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.refuse: dict[str, int] = {}

    def job(self, kind: Urgency, label: str, slot: str | None = None) -> Job:
        async def perform() -> EventID:
            if self.refuse.get(label, 0) > 0:
                self.refuse[label] -= 1
                raise RateLimited("429", 0.05)
            self.sent.append(label)
            return EventID(f"${label}")

        return Job(kind, perform, asyncio.get_running_loop().create_future(), label, slot=slot)


async def run_until(sender: Sender, done: Callable[[], bool], timeout: float = 5) -> None:
    """Run the sender until `done()`: a unit test polls its own in-memory state."""
    task = asyncio.create_task(sender.run())
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not done():
            assert asyncio.get_running_loop().time() < deadline, "sender did not finish"
            await asyncio.sleep(0.01)
    finally:
        task.cancel()


def submit(sender: Sender, job: Job) -> Awaitable[EventID]:
    return asyncio.ensure_future(sender.submit(job))


async def test_answers_go_before_decorations_queued_earlier() -> None:
    rec, sender = Recorder(), Sender(Budget(0, 10))
    futures = [
        submit(sender, rec.job(Urgency.DECORATION, "react")),
        submit(sender, rec.job(Urgency.PROGRESS, "edit")),
        submit(sender, rec.job(Urgency.ANSWER, "answer 1")),
        submit(sender, rec.job(Urgency.ANSWER, "answer 2")),
    ]
    await asyncio.sleep(0)
    await run_until(sender, lambda: len(rec.sent) == 4)
    assert rec.sent == ["answer 1", "answer 2", "edit", "react"]
    assert [f.result() for f in futures] == ["$react", "$edit", "$answer 1", "$answer 2"]


async def test_decorations_keep_a_reserve_for_answers() -> None:
    clock = Clock()
    rec, sender = Recorder(), Sender(Budget(0.2, int(MIN_RESERVE) + 2, clock), clock)
    decorations = [submit(sender, rec.job(Urgency.DECORATION, f"d{n}")) for n in range(3)]
    await asyncio.sleep(0)
    task = asyncio.create_task(sender.run())
    for _ in range(50):
        await asyncio.sleep(0.01)
    # Four tokens, a reserve of two: two decorations went, the third waits for the budget.
    assert rec.sent == ["d0", "d1"]
    answer = submit(sender, rec.job(Urgency.ANSWER, "answer"))
    await asyncio.wait_for(answer, 5)
    assert rec.sent == ["d0", "d1", "answer"]
    task.cancel()
    assert not decorations[2].done()


async def test_a_newer_decoration_in_the_same_slot_supersedes_an_unsent_one() -> None:
    rec, sender = Recorder(), Sender(Budget(0, 10))
    old = submit(sender, rec.job(Urgency.DECORATION, "⏳", slot="t1"))
    new = submit(sender, rec.job(Urgency.DECORATION, "✅", slot="t1"))
    await asyncio.sleep(0)
    await run_until(sender, lambda: len(rec.sent) == 1)
    assert rec.sent == ["✅"]
    assert await old == "" and await new == "$✅"


async def test_a_withdrawn_decoration_is_never_sent_but_an_answer_stays_recorded() -> None:
    rec, sender = Recorder(), Sender(Budget(0, 10))
    dropped: list[str] = []
    decoration = rec.job(Urgency.DECORATION, "react")
    decoration.on_dropped = lambda: dropped.append("react")
    waiting = submit(sender, decoration)
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.sleep(0)
    assert dropped == ["react"] and sender.pending() == 0


async def test_a_429_holds_back_only_the_refused_event_and_it_goes_after_retry_after() -> None:
    rec, sender = Recorder(), Sender(Budget(0, 10))
    rec.refuse["react"] = 1
    decoration = submit(sender, rec.job(Urgency.DECORATION, "react"))
    await asyncio.sleep(0)
    task = asyncio.create_task(sender.run())
    for _ in range(3):
        await asyncio.sleep(0)
    answer = submit(sender, rec.job(Urgency.ANSWER, "answer"))
    await asyncio.wait_for(answer, 5)
    await asyncio.wait_for(decoration, 5)
    task.cancel()
    assert rec.sent == ["answer", "react"] and sender.rate_limited == 1


async def test_a_send_held_back_by_an_outage_goes_at_once_when_the_homeserver_is_back() -> None:
    clock = Clock()
    sender = Sender(Budget(0, 10), clock)
    loop = asyncio.get_running_loop()
    attempts: list[str] = []

    def job(label: str, failure: Exception) -> Job:
        async def perform() -> EventID:
            attempts.append(label)
            if attempts.count(label) == 1:
                raise failure
            return EventID(f"${label}")

        return Job(Urgency.ANSWER, perform, loop.create_future(), label)

    # The clock never moves: only `retry_now` can let the first answer go again.
    answer = submit(sender, job("answer", Unreachable("cannot reach")))
    runner = asyncio.create_task(sender.run())
    while attempts != ["answer"]:
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not answer.done(), "it waits out its backoff"
    sender.retry_now()
    assert await asyncio.wait_for(answer, 5) == "$answer"
    # A 429's retry_after is the homeserver's own word: retry_now does not cut it short.
    limited = submit(sender, job("limited", RateLimited("429", 3600)))
    while attempts[-1] != "limited":
        await asyncio.sleep(0)
    sender.retry_now()
    for _ in range(5):
        await asyncio.sleep(0)
    runner.cancel()
    assert not limited.done() and attempts == ["answer", "answer", "limited"]


async def test_decorations_kept_waiting_by_answers_past_their_bound_go_unsent() -> None:
    clock = Clock()
    recorder = Recorder()
    sender = Sender(Budget(0, 10), clock=clock)
    dropped: list[str] = []
    old = recorder.job(Urgency.DECORATION, "old ✅")
    old.on_dropped = lambda: dropped.append("old ✅")
    held = recorder.job(Urgency.DECORATION, "held by an outage")
    sender.enqueue(old)
    sender.enqueue(held)
    clock.now += DECORATION_STALE_S + 1
    held.unreachable, held.not_before = True, clock.now + 600
    fresh = recorder.job(Urgency.DECORATION, "fresh ✅")
    sender.enqueue(fresh)
    sender.enqueue(recorder.job(Urgency.ANSWER, "answer"))
    await run_until(sender, lambda: "fresh ✅" in recorder.sent)
    # The stale one is dropped (its future says so, its record is closed), the rest go.
    assert await old.done == EventID("") and dropped == ["old ✅"]
    assert recorder.sent == ["answer", "fresh ✅"]
    assert sender.pending() == 1  # the one an outage holds waits for the homeserver


async def test_decorations_wait_as_long_as_they_must_when_no_answer_is_due() -> None:
    clock = Clock()
    recorder = Recorder()
    sender = Sender(Budget(0, 10), clock=clock)
    late = recorder.job(Urgency.DECORATION, "late ✅")
    sender.enqueue(late)
    clock.now += DECORATION_STALE_S * 3
    await run_until(sender, lambda: recorder.sent == ["late ✅"])


async def test_an_answer_retried_in_one_room_never_holds_back_another_rooms() -> None:
    clock = Clock()
    sender = Sender(Budget(0, 10), clock)
    loop = asyncio.get_running_loop()
    sent: list[str] = []

    def job(label: str, room: str, refuse: bool = False) -> Job:
        async def perform() -> EventID:
            if refuse:
                raise RequestRefused("send failed: M_UNKNOWN a hiccup", "M_UNKNOWN")
            sent.append(label)
            return EventID(f"${label}")

        return Job(Urgency.ANSWER, perform, loop.create_future(), label, room=room)

    stuck = sender.enqueue(job("stuck", "!b", refuse=True))
    behind = sender.enqueue(job("behind it", "!b"))
    other = sender.enqueue(job("other room", "!a"))
    # The clock never moves: the refused answer waits out its backoff for as long as the
    # test runs, and only its own room waits with it.
    await run_until(sender, lambda: sent == ["other room"])
    assert await other == "$other room"
    assert not stuck.done() and not behind.done()


@pytest.mark.parametrize(
    "failure, final",
    [
        (RequestRefused("send failed: M_FORBIDDEN User not in room", "M_FORBIDDEN"), True),
        (RequestRefused("send failed: M_UNKNOWN_ROOM", "M_UNKNOWN_ROOM"), True),
        (RequestRefused("send failed: M_NOT_FOUND", "M_NOT_FOUND"), True),
        (RequestRefused("send failed: M_UNKNOWN", "M_UNKNOWN"), False),
        (CannotSend("send to !b: not a room the bot is in (yet)"), False),
        (Unreachable("cannot reach"), False),
        (RateLimited("429", 1.0), False),
    ],
)
def test_only_a_refusal_no_retry_can_fix_is_final(failure: HomeserverError, final: bool) -> None:
    assert is_final(failure) is final


async def test_a_final_refusal_ends_the_send_at_once_and_says_why() -> None:
    sender = Sender(Budget(0, 10))
    loop = asyncio.get_running_loop()
    attempts: list[str] = []
    told: list[str] = []
    dropped: list[str] = []

    async def kicked() -> EventID:
        attempts.append("kicked")
        raise RequestRefused("send failed: M_FORBIDDEN User not in room", "M_FORBIDDEN")

    refused = Job(
        Urgency.ANSWER,
        kicked,
        loop.create_future(),
        "answer",
        room="!b",
        on_dropped=lambda: dropped.append("answer"),
        on_undeliverable=lambda err: told.append(err.message),
    )
    future = sender.enqueue(refused)
    await run_until(sender, future.done)
    assert await future == "" and attempts == ["kicked"], "one attempt, no retries"
    assert dropped == ["answer"] and sender.pending() == 0
    assert told == ["send failed: M_FORBIDDEN User not in room"]


async def test_while_an_answer_is_due_a_steps_status_goes_and_reactions_wait_for_it() -> None:
    loop = asyncio.get_running_loop()
    due_until = loop.time() + 0.2
    sent_at: dict[str, float] = {}
    rec = Recorder()
    sender = Sender(Budget(0, 10), hold=lambda: max(0.0, due_until - loop.time()))
    react = submit(sender, rec.job(Urgency.DECORATION, "react"))
    edit = submit(sender, rec.job(Urgency.PROGRESS, "edit"))
    for label, future in (("react", react), ("edit", edit)):
        future.add_done_callback(lambda _f, label=label: sent_at.setdefault(label, loop.time()))
    await asyncio.sleep(0)
    await run_until(sender, lambda: len(rec.sent) == 2)
    assert rec.sent == ["edit", "react"]
    assert sent_at["edit"] < due_until <= sent_at["react"]
