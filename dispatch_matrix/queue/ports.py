"""What the queue needs from the outside, as interfaces (so it runs without a homeserver).

`Room.post` and the other awaited sends return once the event is in the room (answers go
first); `Room.answer` returns once the answer is recorded, its delivery a future; reactions
and redactions are decorations the room may hold back, replace or drop; receipts, typing
and presence are wishes, never waited for."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from dispatch_matrix.agent.ports import TaskIO
from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.store import Task


class Room(Protocol):
    """Where the queue reports: the Matrix room, or a fake in unit tests."""

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
        """Post a message; it passes the secrets redactor unless `redact` is False, which
        only an approval question uses (it shows exactly what would run)."""
        ...

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
        """Record a task's answer in the same transaction as `record` and queue it behind
        earlier answers; the returned delivery need not be waited for (a recorded answer
        goes out, once, even across a restart)."""
        ...

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
        """Post an event of another type than a message (a poll's start or end): an answer
        unless `decoration`, then "" when it did not go out."""
        ...

    async def post_status(
        self,
        room_id: RoomID,
        markdown: str,
        *,
        reply_to: str | None = None,
        task_id: int | None = None,
        key: str | None = None,
    ) -> EventID:
        """A status message (a decoration: "" when it did not go out)."""
        ...

    async def mention(
        self, room_id: RoomID, markdown: str, user_id: UserID, *, key: str
    ) -> EventID:
        """Post a message that mentions `user_id`, so their phone notifies (a reminder that
        fired); posts with the same key are one message."""
        ...

    async def send_file(
        self,
        room_id: RoomID,
        path: Path,
        caption: str | None = None,
        *,
        reply_to: str | None = None,
        task_id: int | None = None,
    ) -> EventID: ...

    async def edit(
        self, room_id: RoomID, event_id: str, markdown: str, *, notice: bool = False
    ) -> EventID: ...

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
        """A decoration: "" when it was superseded or withdrawn before it went out."""
        ...

    async def redact(self, room_id: RoomID, event_id: str, *, key: str) -> bool:
        """A decoration: False when it did not happen."""
        ...

    # Not room events: never waited for.
    def read_receipt(self, room_id: RoomID, event_id: str) -> None: ...

    def typing(self, room_id: RoomID, on: bool) -> None: ...

    def presence(self, status: str) -> None: ...


class Answerer(Protocol):
    """Who turns a task into an answer: the agent."""

    async def answer(self, task: Task, io: TaskIO) -> str: ...
