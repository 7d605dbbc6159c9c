"""The worker tier's bench: the real queue, agent, tools, policy and store, built from a test
bot's config as the daemon builds them, in this process, against the in-process Messages API
stand-in — and one fake room in place of Matrix.

What a homeserver would show (encryption, trust, the room's events, order under rate limits,
restarts of the bot process) belongs to the e2e tier; what the queue and the agent decide
(stop reasons, retries, caching, transcript shape, tool results, compaction, commands) is
tested here, in a fraction of the time.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from dispatch_matrix.app.agent_kit import AgentKit, build_agent
from dispatch_matrix.app.config import Config, load_config
from dispatch_matrix.core.clock import SystemClock
from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.queue.control import Control
from dispatch_matrix.queue.intake import Intake
from dispatch_matrix.queue.worker import Worker
from dispatch_matrix.schedule.tables import ScheduleTables
from dispatch_matrix.schedule.zones import owner_zone
from dispatch_matrix.store import Database

ROOM = RoomID("!dm:bench")
OWNER = UserID("@owner:bench")
BOT = UserID("@bot:bench")


@dataclass(frozen=True)
class Message:
    """One event in the fake room, as a phone would read it."""

    event_id: EventID
    sender: UserID
    body: str
    reply_to: str | None = None
    # The event this one edits (an `m.replace`): progress updates of a status message.
    replaces: str | None = None
    notice: bool = False
    key: str | None = None
    task_id: int | None = None
    # False only for what must show exactly what runs (an approval question).
    redact: bool = True


@dataclass(frozen=True)
class PostedEvent:
    """An event of another type than a message (a poll's start or end)."""

    event_id: EventID
    event_type: str
    content: dict[str, Any]
    key: str | None = None
    task_id: int | None = None
    decoration: bool = False


@dataclass(frozen=True)
class SentFile:
    """A file the bot sent, with its bytes as they were when sent (a sender may remove the
    file afterwards, as approval questions do with their attachments)."""

    path: Path
    caption: str | None
    data: bytes
    # The message that carried it.
    event_id: EventID


@dataclass
class FakeRoom:
    """The queue's `Room` port in memory: every send lands at once, in order; waiters are
    woken by each new event (no polling)."""

    messages: list[Message] = field(default_factory=list)
    # (event, user) for each post that mentioned someone (a reminder that fired).
    mentioned: list[tuple[EventID, UserID]] = field(default_factory=list)
    # (reacted-to event, emoji, key) in the order sent.
    reactions: list[tuple[str, str, str]] = field(default_factory=list)
    files: list[SentFile] = field(default_factory=list)
    events: list[PostedEvent] = field(default_factory=list)
    # Each presence the bot set, with how many messages the room held then.
    presences: list[tuple[str, int]] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def _next_id(self, prefix: str) -> EventID:
        return EventID(f"${prefix}{next(self._ids)}")

    async def _add(self, message: Message) -> EventID:
        async with self._changed:
            self.messages.append(message)
            self._changed.notify_all()
        return message.event_id

    async def owner_says(self, body: str, reply_to: str | None = None) -> Message:
        """Record the owner's message (the intake is told by the bench)."""
        message = Message(self._next_id("o"), OWNER, body, reply_to=reply_to)
        await self._add(message)
        return message

    # -- the Room port ---------------------------------------------------------------------

    async def post(
        self,
        room_id: RoomID,
        markdown: str,
        *,
        reply_to: str | None = None,
        task_id: int | None = None,
        notice: bool = False,
        key: str | None = None,
        redact: bool = True,
    ) -> EventID:
        message = Message(
            self._next_id("b"), BOT, markdown, reply_to, None, notice, key, task_id, redact
        )  # fmt: skip
        return await self._add(message)

    async def mention(
        self, room_id: RoomID, markdown: str, user_id: UserID, *, key: str
    ) -> EventID:
        """A post that mentions `user_id`; recorded in `mentioned` beside the message."""
        message = Message(self._next_id("b"), BOT, markdown, None, None, False, key, None, True)
        event_id = await self._add(message)
        self.mentioned.append((event_id, user_id))
        return event_id

    async def answer(
        self,
        room_id: RoomID,
        markdown: str,
        *,
        reply_to: str,
        task_id: int,
        key: str,
        notice: bool = False,
        record: Callable[[], None] | None = None,
    ) -> asyncio.Future[EventID]:
        if record is not None:
            record()
        delivered: asyncio.Future[EventID] = asyncio.get_running_loop().create_future()
        delivered.set_result(
            await self.post(
                room_id, markdown, reply_to=reply_to, task_id=task_id, notice=notice, key=key
            )
        )
        return delivered

    async def post_event(
        self,
        room_id: RoomID,
        event_type: str,
        content: dict[str, Any],
        *,
        task_id: int | None = None,
        key: str | None = None,
        decoration: bool = False,
    ) -> EventID:
        event = PostedEvent(
            self._next_id("e"), event_type, content, key, task_id, decoration
        )  # fmt: skip
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()
        return event.event_id

    async def post_status(
        self,
        room_id: RoomID,
        markdown: str,
        *,
        reply_to: str | None = None,
        task_id: int | None = None,
        key: str | None = None,
    ) -> EventID:
        return await self.post(
            room_id, markdown, reply_to=reply_to, task_id=task_id, notice=True, key=key
        )

    async def send_file(
        self,
        room_id: RoomID,
        path: Path,
        caption: str | None = None,
        *,
        reply_to: str | None = None,
        task_id: int | None = None,
    ) -> EventID:
        data = await asyncio.to_thread(path.read_bytes)
        event_id = await self.post(
            room_id, caption or path.name, reply_to=reply_to, task_id=task_id
        )
        self.files.append(SentFile(path, caption, data, event_id))
        return event_id

    async def edit(
        self, room_id: RoomID, event_id: str, markdown: str, *, notice: bool = False
    ) -> EventID:
        return await self._add(
            Message(self._next_id("b"), BOT, markdown, replaces=event_id, notice=notice)
        )

    async def react(
        self,
        room_id: RoomID,
        event_id: str,
        emoji: str,
        *,
        key: str,
        task_id: int | None = None,
        slot: str | None = None,
    ) -> EventID:
        async with self._changed:
            self.reactions.append((event_id, emoji, key))
            self._changed.notify_all()
        return self._next_id("r")

    async def redact(self, room_id: RoomID, event_id: str, *, key: str) -> bool:
        return True

    def read_receipt(self, room_id: RoomID, event_id: str) -> None:
        pass

    def typing(self, room_id: RoomID, on: bool) -> None:
        pass

    def presence(self, status: str) -> None:
        self.presences.append((status, len(self.messages)))

    # -- what a test waits for -------------------------------------------------------------

    def bot_texts(self) -> list[str]:
        """The bodies of the bot's messages and edits, in order."""
        return [m.body for m in self.messages if m.sender == BOT]

    def edits(self) -> list[Message]:
        """The bot's edits (`m.replace`) of earlier messages, in order."""
        return [m for m in self.messages if m.replaces is not None]

    async def wait_for(self, found: Callable[[], Any], what: str, timeout: float) -> Any:
        """Wait until `found()` returns something truthy; fails naming `what`."""

        async def wait() -> Any:
            async with self._changed:
                while not (result := found()):
                    await self._changed.wait()
                return result

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            shown = "\n".join(f"  {m.sender}: {m.body[:200]}" for m in self.messages)
            raise AssertionError(f"no {what} within {timeout}s; the room:\n{shown}") from None

    async def wait_message(
        self, contains: str, *, after: str | None = None, timeout: float = 30
    ) -> Message:
        """The first message (or edit) of the bot holding `contains`, after the event
        `after` when given."""

        def found() -> Message | None:
            start = 0
            if after is not None:
                ids = [m.event_id for m in self.messages]
                assert after in ids, f"{after} is not in the room"
                start = ids.index(after) + 1
            return next(
                (m for m in self.messages[start:] if m.sender == BOT and contains in m.body),
                None,
            )

        found_message: Message = await self.wait_for(
            found, f"bot message with {contains!r}", timeout
        )
        return found_message

    def states_shown(self) -> list[str]:
        """The task states the status reactions showed (keys end `.react.<n>.<state>`)."""
        return [key.rsplit(".", 1)[-1] for _, _, key in self.reactions if ".react." in key]

    async def final_state(self, state: str, timeout: float = 30) -> None:
        """Wait until a status reaction showed `state`; none showed "done" unless `state` is
        done."""
        await self.wait_for(lambda: state in self.states_shown(), f"{state} reaction", timeout)
        if state != "done":
            assert "done" not in self.states_shown(), "no ✅"


@dataclass
class Bench:
    """One bot's queue, agent and tools, running in this process, and its fake room."""

    config: Config
    db: Database
    parts: AgentKit
    worker: Worker
    control: Control
    intake: Intake
    room: FakeRoom
    logged: list[dict[str, Any]]
    _runner: asyncio.Task[None] | None = None

    @property
    def workdir(self) -> Path:
        return self.config.agent.workdir

    @property
    def state(self) -> Path:
        return self.config.state_dir

    def start(self) -> None:
        """The worker, once the connectors settled (as the daemon starts it)."""
        self._runner = asyncio.create_task(self._work(), name="bench-worker")

    async def _work(self) -> None:
        await self.parts.connectors.settled()
        await self.worker.run()

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        self.db.close()

    async def send(self, body: str, *, reply_to: str | None = None) -> Message:
        """The owner sends `body` (a reply to `reply_to` when given); the intake takes it as
        the router would hand it a trusted message."""
        message = await self.room.owner_says(body, reply_to)
        await self.intake.message(
            message.event_id,
            ROOM,
            OWNER,
            body,
            int(time.time() * 1000),
            reply_to=EventID(reply_to) if reply_to else None,
        )
        return message

    def log_events(self, name: str) -> list[dict[str, Any]]:
        """The structlog records of this event name, logged since the bench was built."""
        return [r for r in self.logged if r.get("event") == name]

    async def wait_log(
        self, name: str, *, count: int = 1, timeout: float = 30
    ) -> list[dict[str, Any]]:
        """Wait until `count` records of `name` were logged. The log is a list nothing
        signals on, so this yields to the loop between looks (no fixed sleep: 1 ms)."""
        deadline = time.monotonic() + timeout
        while len(found := self.log_events(name)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count}× {name} logged within {timeout}s")
            await asyncio.sleep(0.001)
        return found


def build_bench(config_path: Path, logged: list[dict[str, Any]]) -> Bench:
    """The daemon's parts below the Matrix half, from a bot config file."""
    config = load_config(config_path)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    db = Database.open(config.state_dir / "dispatch.db")
    zone = owner_zone(config.schedule.timezone)
    parts = build_agent(config, db, ScheduleTables(db), None, SystemClock(), zone, lambda: None)
    room = FakeRoom()
    worker = Worker(
        db,
        parts.agent,
        room,
        approval_timeout_s=config.permissions.approval_timeout_s,
        outage_first_s=config.agent.outage_retry_s,
        probe_every_s=config.agent.outage_probe_s,
        probe=parts.agent.reachable,
    )
    worker.resume_after_restart()
    control = Control(db, worker, room, parts.agent)
    intake = Intake(db, worker, room, control, config.agent.max_task_chars)
    return Bench(config, db, parts, worker, control, intake, room, logged)


@contextmanager
def logs_captured() -> Iterator[list[dict[str, Any]]]:
    """structlog's records while the block runs (the bench's `log_events`)."""
    with capture_logs() as logged:
        yield logged
