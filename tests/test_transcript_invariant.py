"""The transcript's invariant under cancel, retry, crash and restart, at worker level
against the strict stand-in: every tool_use has exactly one tool_result, in the next
message, and no tool_result lacks its tool_use."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import pytest
from fake_messages_api import FakeMessagesAPI
from harness.workbench import BOT, FakeRoom, Message
from structlog.testing import capture_logs

from dispatch_matrix.agent import Agent
from dispatch_matrix.agent.transcript import (
    CANCELLED_RESULT,
    FAILED_RESULT,
    INTERRUPTED_RESULT,
    RETRIED_NOTE,
    STOPPED_RESULT,
    error_result,
)
from dispatch_matrix.app.config import AgentSection
from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.permissions.policy import Policy
from dispatch_matrix.queue import mirror, texts
from dispatch_matrix.queue.worker import Worker
from dispatch_matrix.store import Database, TaskState
from dispatch_matrix.toolbox.base import ToolContext
from dispatch_matrix.toolbox.registry import ToolRegistry, default_tools

MODEL = "claude-sonnet-5-5"
ROOM, OWNER = RoomID("!r:x"), UserID("@me:x")


@pytest.fixture(autouse=True)
def status_edits_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every status edit goes out at once: these tests wait for the step a status shows, and
    the 2 s coalescing of edits (for the homeserver's sake) only delayed each wait by up to
    that much (18 of the property test's 32 s); the transcript does not depend on it."""
    monkeypatch.setattr(mirror, "EDIT_INTERVAL_S", 0.0)


async def until(room: FakeRoom, match: Callable[[str], bool], timeout: float = 20) -> str:
    """The first of the bot's messages (or edits) that `match` accepts, once there is one."""

    def found() -> Message | None:
        return next((m for m in room.messages if m.sender == BOT and match(m.body)), None)

    message: Message = await room.wait_for(found, "a matching message", timeout)
    return message.body


def task_began(room: FakeRoom) -> int:
    """How many messages the room held when the running task was taken (its presence)."""
    began = (n for status, n in reversed(room.presences) if status.startswith("working on"))
    return next(began, 0)


def make_agent(tmp_path: Path, db: Database, fake: FakeMessagesAPI, **changes: Any) -> Agent:
    client = anthropic.AsyncAnthropic(base_url=fake.url, api_key="k", max_retries=0)
    policy = Policy(
        allow=["Bash(sleep:*)", "Bash(echo:*)"], ask=[], deny=[], home=tmp_path, workdir=tmp_path
    )
    return Agent(
        db,
        client,
        settings=AgentSection(model=MODEL, max_tokens=1024, **changes),
        system="You are a test.",
        tools=ToolRegistry(default_tools()),
        policy=policy,
        context=ToolContext(workdir=tmp_path, allowed_roots=(tmp_path,), bash_timeout_s=120),
    )


async def test_retry_of_a_task_cancelled_mid_call_keeps_the_conversation(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    room = FakeRoom()
    with FakeMessagesAPI() as fake:
        worker = Worker(
            db, make_agent(tmp_path, db, fake), room, approval_timeout_s=60, outage_first_s=30
        )
        runner = asyncio.create_task(worker.run())
        try:
            fake.reply(tools=[("bash", {"command": "sleep 30"})])
            db.add_task(EventID("$1"), ROOM, OWNER, "run the long thing", 1)
            worker.wake()
            await until(room, lambda p: "sleep 30" in p)
            await worker.cancel_running()
            await until(room, lambda p: p == texts.CANCELLED)
            db.add_task(EventID("$2"), ROOM, OWNER, "anything", 2)
            worker.wake()
            await until(room, lambda p: p.startswith("echo:") and p.endswith("anything"))
            assert db.requeue(1) is not None
            worker.wake()
            fake.reply("done again")
            await until(room, lambda p: p == "done again" or "400" in p or "fail" in p.lower())
            for n in (3, 4, 5):
                db.add_task(EventID(f"${n}"), ROOM, OWNER, f"message {n}", n)
                worker.wake()
                await until(
                    room,
                    lambda p, n=n: (
                        p.startswith("echo:") and p.endswith(f"message {n}") or "400" in p
                    ),
                )
        finally:
            runner.cancel()
        statuses = [r.status for r in fake.requests]
        assert 400 not in statuses, [r.body for r in fake.requests if r.status == 400]
        retried = db.task(1)
        assert retried is not None and retried.state is TaskState.DONE
        # The call was answered once, as cancelled (not as stopped by a restart), and the
        # retry asked the task afresh at the end of the conversation.
        results = [
            block
            for message in db.transcript(db.current_conversation())
            for block in message["content"]
            if block.get("type") == "tool_result"
        ]
        assert [r["content"][0]["text"] for r in results] == [CANCELLED_RESULT]
        retry = fake.requests[2].body["messages"][-1]["content"]
        assert RETRIED_NOTE.format(task="#1") in retry[0]["text"]
        assert retry[-1]["text"].endswith("run the long thing")


class BuggyTool:
    """A tool with a bug: it raises what no tool should (named as one the policy lets run)."""

    name = "schedule"

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "description": "x", "input_schema": {"type": "object"}}

    async def run(self, tool_input: dict[str, Any], ctx: Any) -> Any:
        raise KeyError("a bug")


async def test_a_bug_in_a_tool_answers_its_call_and_the_retry_goes_on(tmp_path: Path) -> None:
    """A call a bug stopped is answered as such in the store (not as a restart), so the
    task's `!retry` and every later request are accepted."""
    db = Database.open(tmp_path / "d.db")
    room = FakeRoom()
    with FakeMessagesAPI() as fake:
        agent = make_agent(tmp_path, db, fake)
        agent._tools.add(BuggyTool())
        worker = Worker(db, agent, room, approval_timeout_s=60, outage_first_s=30)
        runner = asyncio.create_task(worker.run())
        try:
            fake.reply(tools=[("schedule", {}), ("bash", {"command": "echo never"})])
            db.add_task(EventID("$1"), ROOM, OWNER, "use the buggy tool", 1)
            worker.wake()
            await until(room, lambda p: "internal error (KeyError)" in p)
            assert db.requeue(1) is not None
            worker.wake()
            fake.reply("done without it")
            await until(room, lambda p: p == "done without it")
        finally:
            runner.cancel()
        assert [r.status for r in fake.requests] == [200, 200]
        retry = fake.requests[1].body["messages"]
        results = [b for m in retry for b in m["content"] if b.get("type") == "tool_result"]
        assert [r["content"][0]["text"] for r in results] == [FAILED_RESULT, FAILED_RESULT]


async def test_a_conversation_poisoned_by_an_earlier_version_heals_on_the_next_request(
    tmp_path: Path,
) -> None:
    """The rows the old `!retry` wrote: a second result for a call, after a later turn."""
    db = Database.open(tmp_path / "d.db")
    conversation = db.current_conversation()
    first = db.add_task(EventID("$1"), ROOM, OWNER, "run the long thing", 1)
    second = db.add_task(EventID("$2"), ROOM, OWNER, "anything", 2)
    assert first is not None and second is not None
    call = {"type": "tool_use", "id": "toolu_old", "name": "bash", "input": {"command": "sleep 9"}}
    for task_id, role, content in [
        (first.id, "user", [{"type": "text", "text": "run the long thing"}]),
        (first.id, "assistant", [call]),
        (second.id, "user", [{"type": "text", "text": "anything"}]),
        (second.id, "assistant", [{"type": "text", "text": "echo: anything"}]),
        (first.id, "user", [error_result("toolu_old", INTERRUPTED_RESULT)]),
    ]:
        db.append_message(conversation, task_id, role, content)
    for task in (first, second):
        db.set_task_state(task.id, TaskState.DONE)
    room = FakeRoom()
    with FakeMessagesAPI() as fake, capture_logs() as logs:
        worker = Worker(
            db, make_agent(tmp_path, db, fake), room, approval_timeout_s=60, outage_first_s=30
        )
        runner = asyncio.create_task(worker.run())
        try:
            for n in (3, 4):
                task = db.add_task(EventID(f"${n}"), ROOM, OWNER, f"message {n}", n)
                assert task is not None
                worker.wake()
                await until(room, lambda p, n=n: p.endswith(f"message {n}") or "400" in p)
        finally:
            runner.cancel()
        assert [r.status for r in fake.requests] == [200, 200]
        sent = fake.requests[0].body["messages"]
        answers = [b for m in sent for b in m["content"] if b.get("type") == "tool_result"]
        assert [b["tool_use_id"] for b in answers] == ["toolu_old"]
        assert answers[0]["content"][0]["text"] == STOPPED_RESULT
    repaired = [entry for entry in logs if entry["event"] == "agent.transcript_repaired"]
    # Logged once, not at every request of the conversation.
    assert len(repaired) == 1
    assert repaired[0]["answered"] == ["toolu_old"] and repaired[0]["dropped"] == ["toolu_old"]


# ---- the property: random sequences never meet a 400 ------------------------------------------

LONG = "sleep 30"


def responder(body: dict[str, Any]) -> dict[str, Any]:
    """The model of the property test: tool calls by the words of the task, an end once a
    call was answered; a summary when asked for one (a request without tools)."""
    if not body.get("tools"):
        return {"text": "summary of what came before"}
    last = body["messages"][-1]["content"]
    said = " ".join(b.get("text", "") for b in last if b.get("type") == "text")
    calls = {
        "long": [LONG],
        "short": ["echo hi"],
        "pair": ["echo hi", LONG],
        "riap": [LONG, "echo hi"],
    }
    for word, commands in calls.items():
        if word in said.split():
            return {
                "content": [
                    {"type": "tool_use", "name": "bash", "input": {"command": c}} for c in commands
                ]
            }
    return {"text": "plain answer" if said.strip() else "finished"}


class Life:
    """The daemon's queue half over one ledger, which a crash and a restart replace."""

    def __init__(self, tmp_path: Path, fake: FakeMessagesAPI) -> None:
        self.tmp_path, self.fake = tmp_path, fake
        self.db = Database.open(tmp_path / "d.db")
        self.room = FakeRoom()
        self.runner: asyncio.Task[None] | None = None
        self.start()

    def start(self) -> None:
        self.agent = make_agent(self.tmp_path, self.db, self.fake, keep_recent_messages=2)
        self.worker = Worker(
            self.db, self.agent, self.room, approval_timeout_s=60, outage_first_s=30
        )
        self.runner = asyncio.create_task(self.worker.run())

    async def crash(self) -> None:
        """The process dies: nothing more is written; the ledger stays as it was."""
        assert self.runner is not None
        self.runner.cancel()
        await asyncio.gather(self.runner, return_exceptions=True)
        self.db.close()
        self.db = Database.open(self.tmp_path / "d.db")
        self.start()

    async def cancel(self) -> bool:
        """`!cancel` of the running task, if one runs; whether one did."""
        before = self.room.bot_texts().count(texts.CANCELLED)
        if await self.worker.cancel_running() is None:
            return False
        await until(self.room, lambda _: self.room.bot_texts().count(texts.CANCELLED) > before)
        return True

    def busy(self) -> bool:
        return bool(self.db.tasks_in(TaskState.QUEUED, TaskState.RUNNING, TaskState.INTERRUPTED))

    async def settle(self) -> None:
        """Until the queue is empty, or the running task waits in its long command."""

        def settled(_: str) -> bool:
            if not self.busy():
                return True
            current = self.worker.current
            began = task_began(self.room)
            return current is not None and any(
                f"{current.short_id} —" in p and LONG in p for p in self.room.bot_texts()[began:]
            )

        if not settled(""):
            # On a timeout the fake room's failure lists what the room was told.
            await until(self.room, settled, timeout=30)


async def run_sequence(
    tmp_path: Path, fake: FakeMessagesAPI, seed: int, steps: int
) -> tuple[list[str], list[str]]:
    """One random life; the actions it took and what the room was told."""
    import random

    rng = random.Random(seed)
    life = Life(tmp_path, fake)
    done: list[str] = []
    number = 0
    try:
        for _ in range(steps):
            action = rng.choice(
                ["send", "send", "send", "cancel", "retry", "retry", "crash", "compact", "new"]
            )
            if action == "send":
                number += 1
                word = rng.choice(["long", "short", "pair", "riap", "plain"])
                life.db.add_task(
                    EventID(f"${seed}.{number}"), ROOM, OWNER, f"{word} {number}", number
                )
                life.worker.wake()
            elif action == "cancel":
                if not await life.cancel():
                    continue
            elif action == "retry":
                ended = [t for t in life.db.recent_tasks(50) if t.state is not TaskState.DONE]
                if not ended:
                    continue
                life.db.requeue(rng.choice(ended).id)
                life.worker.wake()
            elif action == "crash":
                await life.crash()
            elif action == "compact":
                # As `!compact`: also while a task runs (the compactor's lock orders them).
                await life.agent.compact_now()
            elif action == "new":
                life.db.new_conversation()
            done.append(action)
            await life.settle()
        # The end of every life: three more messages, each answered.
        while life.busy():
            await life.cancel()
            await life.settle()
        for _ in range(3):
            number += 1
            task = life.db.add_task(
                EventID(f"${seed}.{number}"), ROOM, OWNER, f"plain {number}", number
            )
            assert task is not None
            life.worker.wake()
            await life.settle()
            answered = life.db.task(task.id)
            assert answered is not None and answered.state is TaskState.DONE, answered
            assert answered.result == "plain answer"
    finally:
        if life.runner is not None:
            life.runner.cancel()
            await asyncio.gather(life.runner, return_exceptions=True)
        life.db.close()
    return done, life.room.bot_texts()


async def test_random_cancels_retries_crashes_compactions_and_new_never_meet_a_400(
    tmp_path: Path,
) -> None:
    seeds = range(int(__import__("os").environ.get("DM_PROPERTY_SEEDS", "12")))
    ran: list[list[str]] = []
    with FakeMessagesAPI() as fake:
        for seed in seeds:
            fake.reset()
            fake.script([responder] * 400)
            (tmp_path / f"s{seed}").mkdir()
            actions, posts = await run_sequence(tmp_path / f"s{seed}", fake, seed, steps=14)
            ran.append(actions)
            refused = [r for r in fake.requests if r.status == 400]
            assert not refused, (seed, actions, [p for p in posts if "400" in p][:1])
    print(f"{len(ran)} sequences, {sum(map(len, ran))} actions, no 400")
