"""The bot's only way into a room: every text, file, reaction, receipt and presence change.

A message the bot decided to send is written to the outbox table before the first attempt.
A retry (after a timeout, an outage or a crash) reuses its transaction id, so the homeserver
de-duplicates it and the phone never shows a doubled answer. Every text passes the secrets
redactor here, and one too long for an event goes as an attached file.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .. import logs
from ..backoff import Backoff
from ..errors import HomeserverError
from ..ids import EventID, RoomID
from ..logs import REDACTOR
from ..store import Database
from ..store.models import OutboxItem
from .attachments import upload_file
from .client import MatrixClient
from .failures import CannotSend, RequestRefused, TokenRejected
from .formatting import edit_of, text_content
from .formatting import reply_to as as_reply

log = logs.get(__name__)

_MAX_BACKOFF = 60.0
_MAX_REFUSALS = 6
# Matrix events are capped at 64 KiB, encrypted and with HTML; longer texts go as a file.
LONG_TEXT_CHARS = 16_000


class Outbox:
    """The bot's only way to post into a room."""

    def __init__(
        self,
        client: MatrixClient,
        db: Database,
        *,
        before_send: Callable[[RoomID], Awaitable[None]] | None,
        max_file_bytes: int,
        long_texts: Path,
    ) -> None:
        self._max_file_bytes = max_file_bytes
        # Where texts too long for one event are written before they are attached.
        self._long_texts = long_texts
        self._client = client
        self._db = db
        self._lock = asyncio.Lock()
        # Decides, right before encrypting, which devices may get the room key.
        self._before_send = before_send

    async def post(
        self,
        room_id: RoomID,
        markdown: str,
        *,
        reply_to: str | None = None,
        task_id: int | None = None,
        notice: bool = False,
        key: str | None = None,
    ) -> EventID:
        """Post Markdown text (as a reply when `reply_to` is given); returns its event id.

        Posts with the same `key` are one message: the second call sends nothing new. The
        text passes the secrets redactor first: a key the model saw in a file or an output
        never reaches the room. A text too long for one event goes whole as an attached
        file, and the message keeps its start.
        """
        markdown = REDACTOR.text(markdown)
        if len(markdown) > LONG_TEXT_CHARS:
            markdown = await self._attach_long(room_id, markdown, reply_to, task_id, key)
        content = text_content(markdown, notice=notice)
        if reply_to is not None:
            content = as_reply(content, reply_to)
        return await self.send_event(room_id, "m.room.message", content, task_id=task_id, key=key)

    async def send_event(
        self,
        room_id: RoomID,
        event_type: str,
        content: dict[str, Any],
        *,
        task_id: int | None = None,
        key: str | None = None,
    ) -> EventID:
        """Record an event in the outbox, then deliver it (unless that key was sent)."""
        item = self._db.enqueue_outgoing(room_id, event_type, content, task_id, key)
        if item.event_id is not None:
            return EventID(item.event_id)
        return await self._deliver(item)

    async def flush(self) -> None:
        """Deliver whatever a previous run recorded but did not confirm."""
        for item in self._db.unsent():
            log.info("outbox.resend", txn=item.txn_id, room=item.room_id)
            await self._deliver(item)

    async def _deliver(self, item: OutboxItem) -> EventID:
        backoff = Backoff(1.0, _MAX_BACKOFF)
        refusals = 0
        while True:
            try:
                # One send at a time keeps the room's order the order we decided.
                async with self._lock:
                    if self._before_send is not None:
                        await self._before_send(item.room_id)
                    event_id = await self._client.send(
                        item.room_id, item.event_type, dict(item.content), item.txn_id
                    )
            except TokenRejected:
                raise
            except (RequestRefused, CannotSend) as err:
                if isinstance(err, RequestRefused) and err.code == "M_DUPLICATE_ANNOTATION":
                    # An earlier attempt (perhaps from a device since replaced) got through.
                    self._db.mark_sent(item.txn_id, "")
                    return EventID("")
                # Refusals do not heal by waiting as outages do (a room nio does not know
                # yet appears with the next sync; one we were removed from never does), so
                # they are retried a few times only, then dropped with an error in the log.
                refusals += 1
                if refusals > _MAX_REFUSALS:
                    log.error(
                        "outbox.dropped", txn=item.txn_id, room=item.room_id, error=err.message
                    )
                    self._db.mark_sent(item.txn_id, "")
                    return EventID("")
                wait = backoff.next()
                log.warning("outbox.refused", txn=item.txn_id, error=err.message, retry_in=wait)
            except HomeserverError as err:
                wait = backoff.next()
                log.warning("outbox.retry", txn=item.txn_id, error=err.message, retry_in=wait)
            else:
                self._db.mark_sent(item.txn_id, event_id)
                log.info("outbox.sent", txn=item.txn_id, room=item.room_id, event_id=event_id)
                return event_id
            await asyncio.sleep(wait)

    async def _attach_long(
        self,
        room_id: RoomID,
        text: str,
        reply_to: str | None,
        task_id: int | None,
        key: str | None,
    ) -> str:
        """Send an (already redacted) long text as a Markdown file; returns the message that
        goes with it."""
        name = f"answer-{task_id}.md" if task_id is not None else "message.md"
        self._long_texts.mkdir(parents=True, exist_ok=True)
        path = self._long_texts / f"{key or uuid.uuid4().hex}.md"
        await asyncio.to_thread(path.write_text, text)
        content = await upload_file(self._client, path, self._max_file_bytes, name=name)
        if reply_to is not None:
            content = as_reply(content, reply_to)
        await self.send_event(
            room_id, "m.room.message", content, task_id=task_id, key=f"{key}.file" if key else None
        )
        head = text[: LONG_TEXT_CHARS // 4].rsplit("\n", 1)[0]
        return f"{head}\n\n… the full text ({len(text):,} characters) is in the attached file."

    async def send_file(
        self,
        room_id: RoomID,
        path: Path,
        caption: str | None = None,
        *,
        reply_to: str | None = None,
        task_id: int | None = None,
    ) -> EventID:
        """Upload a file (encrypted) and post it; a failure is an AttachmentError. The
        caption passes the secrets redactor like every text."""
        if caption is not None:
            caption = REDACTOR.text(caption)
        content = await upload_file(self._client, path, self._max_file_bytes, caption)
        if reply_to is not None:
            content = as_reply(content, reply_to)
        return await self.send_event(room_id, "m.room.message", content, task_id=task_id)

    async def edit(
        self, room_id: RoomID, event_id: str, markdown: str, *, notice: bool = False
    ) -> EventID:
        """Replace the text of one of our messages (m.replace)."""
        content = edit_of(text_content(REDACTOR.text(markdown), notice=notice), event_id)
        return await self.send_event(room_id, "m.room.message", content)

    async def react(
        self, room_id: RoomID, event_id: str, emoji: str, *, key: str | None = None
    ) -> EventID:
        """Annotate an event with an emoji (sent encrypted in encrypted rooms)."""
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": emoji}}
        return await self.send_event(room_id, "m.reaction", content, key=key)

    async def redact(self, room_id: RoomID, event_id: str, *, key: str) -> None:
        """Remove one of our events; cosmetic, so a failure is only logged."""
        try:
            await self._client.redact(room_id, event_id, f"dm-{self._db.instance_id()}-{key}")
        except HomeserverError as err:
            log.info("outbox.redact_failed", room=room_id, event_id=event_id, error=err.message)

    async def read_receipt(self, room_id: RoomID, event_id: str) -> None:
        """Show the owner that the bot has taken their message; cosmetic."""
        try:
            await self._client.read_receipt(room_id, event_id)
        except HomeserverError as err:
            log.info("outbox.receipt_failed", room=room_id, error=err.message)

    async def presence(self, status: str, online: bool = True) -> None:
        """Presence and its status message (idle, working on …, paused); cosmetic."""
        try:
            await self._client.set_presence("online" if online else "offline", status)
        except HomeserverError as err:
            log.info("outbox.presence_failed", error=err.message)

    async def typing(self, room_id: RoomID, on: bool) -> None:
        """Show or clear typing; a failure here is only logged."""
        try:
            await self._client.typing(room_id, on)
        except HomeserverError as err:
            log.info("outbox.typing_failed", room=room_id, error=err.message)
