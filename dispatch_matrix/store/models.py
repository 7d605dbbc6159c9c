"""Rows of the ledger as typed values."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from dispatch_matrix.core.ids import EventID, RoomID, UserID


class TaskState(enum.StrEnum):
    """Where a task is in its life; the terminal ones never change again."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting-approval"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        """Whether the task has ended."""
        return self in (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED)


@dataclass(frozen=True)
class Task:
    """One owner message taken as work."""

    id: int
    event_id: EventID
    room_id: RoomID
    sender: UserID
    body: str
    state: TaskState
    origin_ts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    result: str | None
    error: str | None
    steps: int = 0
    # Files the owner sent with the task: {path, mimetype, size, name}.
    attachments: tuple[dict[str, object], ...] = ()
    # What the message replies to, for the model: "(This replies to … #7 …)"; None: no reply.
    reply_note: str | None = None

    @property
    def short_id(self) -> str:
        """A handle a person can type: the row number."""
        return f"#{self.id}"

    def title(self, width: int = 60) -> str:
        """The task's text shortened to one line, as lists and status lines name it."""
        line = self.body.strip().splitlines()[0] if self.body.strip() else ""
        return line if len(line) <= width else line[: width - 1] + "…"


@dataclass(frozen=True)
class Session:
    """The bot's login: one device for the bot's whole life."""

    homeserver: str
    user_id: str
    device_id: str
    access_token: str


@dataclass(frozen=True)
class OutboxItem:
    """A message we decided to send, with the transaction id fixed before the first try."""

    txn_id: str
    room_id: RoomID
    event_type: str
    content: dict[str, object]
    task_id: int | None
    event_id: str | None


@dataclass(frozen=True)
class TranscriptRow:
    """One stored message of the conversation, with the row id that names it."""

    id: int
    task_id: int | None
    role: str
    content: list[dict[str, Any]]

    def message(self) -> dict[str, Any]:
        """The message as a Messages API dict."""
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class Summary:
    """A summary that replaces, in requests, the turns up to `covers_up_to`."""

    id: int
    conversation_id: int
    covers_up_to: int
    text: str
    created_at: float


@dataclass(frozen=True)
class UsageRow:
    """The token counts of one model request."""

    task_id: int | None
    model: str
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    at: float
    # The part of cache_creation_input_tokens written with the 1-hour lifetime.
    cache_write_1h: int = 0
    # How it was paid: None (the API engine: the API), "api" or "plan" (the Claude Code
    # engine, from the credential it used).
    billing: str | None = None
