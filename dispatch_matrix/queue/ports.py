"""What the queue needs from the outside, as interfaces (so it runs without a homeserver)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ..agent.ports import TaskIO
from ..ids import EventID, RoomID
from ..store import Task


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
    ) -> EventID: ...

    async def typing(self, room_id: RoomID, on: bool) -> None: ...

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
        self, room_id: RoomID, event_id: str, emoji: str, *, key: str | None = None
    ) -> EventID: ...

    async def redact(self, room_id: RoomID, event_id: str, *, key: str) -> None: ...

    async def read_receipt(self, room_id: RoomID, event_id: str) -> None: ...

    async def presence(self, status: str, online: bool = True) -> None: ...


class Answerer(Protocol):
    """Who turns a task into an answer: the agent."""

    async def answer(self, task: Task, io: TaskIO) -> str: ...


class VoiceRetry(Protocol):
    """Voice messages that never became tasks (not heard), for `!retry` to try again."""

    def failed_at(self, room_id: RoomID) -> float | None: ...

    async def retry(self, room_id: RoomID) -> str | None: ...
