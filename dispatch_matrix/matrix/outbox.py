"""The bot's only way into a room: every text, file, reaction, receipt and presence change.

A message the bot decided to send is written to the outbox table before the first attempt.
A retry (after a timeout, an outage or a crash) reuses its transaction id, so the homeserver
de-duplicates it and the phone never shows a doubled answer. Every text passes the secrets
redactor here, and one too long for an event goes as an attached file.

What goes first is the sender's (`sender.py`): answers before decorations, decorations
within the homeserver's budget. Typing, read receipts and presence are not room events:
they go beside everything (`sender.py`'s best-effort lane) and are never waited for.

The shape of what it says is the outbox's too (the functions at the end, pure): Markdown as
a plain `body` beside the room's HTML (`formatted_body`), a reply (in the owner's thread
when they wrote in one), an edit, a message that mentions someone so their phone notifies.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.core.logs import REDACTOR
from dispatch_matrix.matrix.attachments import upload_file
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.sender import Budget, Ephemeral, Job, Sender, Urgency
from dispatch_matrix.matrix.texts import exemption_hint
from dispatch_matrix.store import Database
from dispatch_matrix.store.matrix_tables import OutboxItem

log = logs.get(__name__)

# Matrix events are capped at 64 KiB, encrypted and with HTML; longer texts go as a file.
LONG_TEXT_CHARS = 16_000

# An answer the homeserver refused for good, and why.
Undelivered = tuple[OutboxItem, HomeserverError]


class Outbox:
    """Records, orders and sends what the bot says in rooms."""

    def __init__(
        self,
        client: MatrixClient,
        db: Database,
        *,
        before_send: Callable[[RoomID], Awaitable[None]] | None,
        max_file_bytes: int,
        long_texts: Path,
        budget: Budget,
        presence_every_s: float,
        hold: Callable[[], float] | None = None,
        undelivered: asyncio.Queue[Undelivered] | None = None,
    ) -> None:
        self._client = client
        self._db = db
        # Decides, right before encrypting, which devices may get the room key.
        self._before_send = before_send
        self._max_file_bytes = max_file_bytes
        # Where texts too long for one event are written before they are attached.
        self._long_texts = long_texts
        # `hold`: seconds for which an answer is expected; decorations wait meanwhile.
        self.sender = Sender(budget, on_rate_limited=self._rate_limited, hold=hold)
        self._ephemeral = Ephemeral(client, presence_every_s)
        # Answers the homeserver refused for good (the bot was removed from their room) go
        # here, for whoever knows the owners' rooms to tell them elsewhere (`undelivered.py`).
        self._undelivered = undelivered

    async def run(self) -> None:
        """Send until cancelled: first what a previous run recorded and never confirmed."""
        async with asyncio.TaskGroup() as group:
            for item in self._unsent_answers():
                group.create_task(self._deliver(item, Urgency.ANSWER), name="outbox-resend")
            group.create_task(self.sender.run(), name="outbox-sender")
            group.create_task(self._ephemeral.run(), name="outbox-ephemeral")

    def retry_now(self) -> None:
        """The homeserver is back: send what an outage held back now."""
        self.sender.retry_now()

    # -- room events -----------------------------------------------------------------------

    async def post(
        self,
        room_id: RoomID,
        markdown: str,
        *,
        reply_to: str | None = None,
        task_id: int | None = None,
        notice: bool = False,
        key: str | None = None,
        kind: Urgency = Urgency.ANSWER,
        redact: bool = True,
    ) -> EventID:
        """Post Markdown text (as a reply when `reply_to` is given); returns its event id.

        Posts with the same `key` are one message: the second call sends nothing new. The
        text passes the secrets redactor first: a key the model saw in a file or an output
        never reaches the room. A text too long for one event goes whole as an attached
        file, and the message keeps its start.

        `redact=False` is for one case only: an approval question, which must show the
        owner exactly what would run, secret or not (the command is the model's, the
        secret the owner's, the room end-to-end encrypted). Its text is never logged.
        """
        if redact:
            markdown = REDACTOR.text(markdown)
        if len(markdown) > LONG_TEXT_CHARS:
            markdown = await self._attach_long(room_id, markdown, reply_to, task_id, key)
        content = text_content(markdown, notice=notice)
        if reply_to is not None:
            content = self._as_reply(content, reply_to)
        return await self.send_event(
            room_id, "m.room.message", content, task_id=task_id, key=key, kind=kind
        )

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
        """Record a task's answer, in one transaction with `record` (the task's own state),
        and queue it behind the answers before it; returns its delivery without waiting.

        Nobody need wait for the delivery: once recorded, an answer goes out even across a
        crash (the next start re-sends it under the same transaction id, which the
        homeserver de-duplicates), so the worker can take the next task meanwhile.
        """
        markdown = REDACTOR.text(markdown)
        if len(markdown) > LONG_TEXT_CHARS:
            markdown = await self._attach_long(room_id, markdown, reply_to, task_id, key)
        content = self._as_reply(text_content(markdown, notice=notice), reply_to)
        with self._db.tx():
            item = self._db.enqueue_outgoing(room_id, "m.room.message", content, task_id, key)
            if record is not None:
                record()
        if item.event_id is not None:
            done: asyncio.Future[EventID] = asyncio.get_running_loop().create_future()
            done.set_result(EventID(item.event_id))
            return done
        return self.sender.enqueue(self._job(item, Urgency.ANSWER))

    async def post_status(
        self,
        room_id: RoomID,
        markdown: str,
        *,
        reply_to: str | None = None,
        task_id: int | None = None,
        key: str | None = None,
    ) -> EventID:
        """A task's status message: a notice sent within the budget, after the answers."""
        return await self.post(
            room_id,
            markdown,
            reply_to=reply_to,
            task_id=task_id,
            notice=True,
            key=key,
            kind=Urgency.PROGRESS,
        )

    async def edit(
        self, room_id: RoomID, event_id: str, markdown: str, *, notice: bool = False
    ) -> EventID:
        """Replace the text of one of our messages (m.replace); a newer edit of the same
        message replaces one not yet sent."""
        content = edit_of(text_content(REDACTOR.text(markdown), notice=notice), event_id)
        return await self.send_event(
            room_id, "m.room.message", content, kind=Urgency.PROGRESS, slot=f"edit:{event_id}"
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
        """Annotate an event with an emoji (sent encrypted in encrypted rooms); a decoration:
        "" when it was superseded or withdrawn before it went out."""
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": emoji}}
        return await self.send_event(
            room_id,
            "m.reaction",
            content,
            task_id=task_id,
            key=key,
            kind=Urgency.DECORATION,
            slot=slot,
        )

    async def redact(self, room_id: RoomID, event_id: str, *, key: str) -> bool:
        """Remove one of our events; a decoration: False when it did not happen (withdrawn,
        or refused past the retries, which is only logged)."""
        txn_id = f"dm-{self._db.instance_id()}-{key}"

        async def perform() -> EventID:
            await self._client.redact(room_id, event_id, txn_id)
            return EventID(event_id)

        loop = asyncio.get_running_loop()
        job = Job(
            Urgency.DECORATION, perform, loop.create_future(), f"redact {event_id}", room=room_id
        )
        return bool(await self.sender.submit(job))

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
            content = self._as_reply(content, reply_to)
        return await self.send_event(room_id, "m.room.message", content, task_id=task_id)

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
        kind = Urgency.DECORATION if decoration else Urgency.ANSWER
        return await self.send_event(
            room_id, event_type, content, task_id=task_id, key=key, kind=kind
        )

    async def mention(
        self, room_id: RoomID, markdown: str, user_id: UserID, *, key: str
    ) -> EventID:
        """Post `markdown` as a message that mentions `user_id`, so their phone notifies (a
        fired reminder); posts with the same key are one message."""
        content = mention_content(REDACTOR.text(markdown), user_id)
        return await self.send_event(room_id, "m.room.message", content, key=key)

    async def send_event(
        self,
        room_id: RoomID,
        event_type: str,
        content: dict[str, Any],
        *,
        task_id: int | None = None,
        key: str | None = None,
        kind: Urgency = Urgency.ANSWER,
        slot: str | None = None,
    ) -> EventID:
        """Record an event in the outbox, then deliver it (unless that key was sent).

        An answer is recorded at once; a decoration only when its turn to go comes: one
        superseded or withdrawn before then (most ⏳ of a backlog) costs the ledger nothing.
        """
        if kind is Urgency.ANSWER:
            item = self._db.enqueue_outgoing(room_id, event_type, content, task_id, key)
            if item.event_id is not None:
                return EventID(item.event_id)
            return await self._deliver(item, kind, slot)
        recorded: list[OutboxItem] = []

        async def perform() -> EventID:
            item = self._db.enqueue_outgoing(room_id, event_type, content, task_id, key)
            recorded[:] = [item]
            if item.event_id is not None:
                return EventID(item.event_id)
            return await self._perform(item, kind)

        def dropped() -> None:
            if recorded:
                self._db.mark_sent(recorded[0].txn_id, "")

        loop = asyncio.get_running_loop()
        job = Job(
            kind,
            perform,
            loop.create_future(),
            event_type,
            slot=slot,
            on_dropped=dropped,
            room=room_id,
        )
        return await self.sender.submit(job)

    async def _deliver(self, item: OutboxItem, kind: Urgency, slot: str | None = None) -> EventID:
        return await self.sender.submit(self._job(item, kind, slot))

    async def _perform(self, item: OutboxItem, kind: Urgency) -> EventID:
        if self._before_send is not None:
            await self._before_send(item.room_id)
        event_id = await self._client.send(
            item.room_id, item.event_type, dict(item.content), item.txn_id
        )
        self._db.mark_sent(item.txn_id, event_id)
        log.info("outbox.sent", txn=item.txn_id, room=item.room_id, kind=kind.name.lower())
        return event_id

    def _job(self, item: OutboxItem, kind: Urgency, slot: str | None = None) -> Job:
        async def perform() -> EventID:
            return await self._perform(item, kind)

        def dropped() -> None:
            # Never sent, never to be: the next start must not send it either.
            self._db.mark_sent(item.txn_id, "")

        def undeliverable(err: HomeserverError) -> None:
            if kind is Urgency.ANSWER and self._undelivered is not None:
                # Not awaited here: telling the owner is itself a send, behind this one.
                self._undelivered.put_nowait((item, err))

        loop = asyncio.get_running_loop()
        label = f"{item.event_type} {item.txn_id}"
        return Job(
            kind,
            perform,
            loop.create_future(),
            label,
            slot=slot,
            on_dropped=dropped,
            room=item.room_id,
            on_undeliverable=undeliverable,
        )

    def _unsent_answers(self) -> list[OutboxItem]:
        """What a previous run recorded but never confirmed: its answers go again, first;
        its decorations are stale by now (the mirror shows the current state anew)."""
        answers = []
        for item in self._db.unsent():
            if _is_decoration(item):
                self._db.mark_sent(item.txn_id, "")
            else:
                log.info("outbox.resend", txn=item.txn_id, room=item.room_id)
                answers.append(item)
        return answers

    def _as_reply(self, content: dict[str, Any], reply_to: str) -> dict[str, Any]:
        """The content as a reply to `reply_to`, in the thread the owner wrote it in."""
        return as_reply(content, reply_to, self._db.thread_of(reply_to))

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
            content = self._as_reply(content, reply_to)
        await self.send_event(
            room_id, "m.room.message", content, task_id=task_id, key=f"{key}.file" if key else None
        )
        head = preview(text, LONG_TEXT_CHARS // 4)
        return f"{head}\n\n… the full text ({len(text):,} characters) is in the attached file."

    def _rate_limited(self, count: int) -> None:
        """Count the homeserver's 429s where `doctor` reads them; say once per run how an
        admin exempts the bot."""
        total = int(self._db.get_meta("rate_limited_count") or "0") + 1
        self._db.set_meta("rate_limited_count", str(total))
        self._db.set_meta("rate_limited_last", time.strftime("%Y-%m-%d %H:%M:%S %Z"))
        if count == 1:
            log.warning(
                "matrix.rate_limited",
                detail="the homeserver limits the bot's events; answers wait behind its limit",
                fix=exemption_hint(self._client.homeserver, self._client.user_id),
            )

    # -- beside the room events: never waited for ------------------------------------------

    def read_receipt(self, room_id: RoomID, event_id: str) -> None:
        """Show the owner that the bot has taken their message (not a room event)."""
        self._ephemeral.read_receipt(room_id, event_id, self._db.thread_of(event_id) or "main")

    def typing(self, room_id: RoomID, on: bool) -> None:
        """Show or clear typing (not a room event)."""
        self._ephemeral.typing(room_id, on)

    def presence(self, status: str) -> None:
        """Presence's status message (idle, working on …, paused), coalesced to what the
        homeserver allows; a refused update is skipped."""
        self._ephemeral.presence(status)


def preview(text: str, chars: int) -> str:
    """The start of a long text, at most `chars` long (pure): cut at a line break in the
    latter half of that window, else at a space there, else where the window ends (the
    last line break alone could leave one short line of a 20,000-character text)."""
    if len(text) <= chars:
        return text
    window = text[:chars]
    cut = window.rfind("\n")
    if cut < chars // 2:
        cut = window.rfind(" ")
    if cut < chars // 2:
        cut = chars
    return window[:cut].rstrip()


def _is_decoration(item: OutboxItem) -> bool:
    relation = item.content.get("m.relates_to")
    rel_type = relation.get("rel_type") if isinstance(relation, dict) else None
    return (
        item.event_type == "m.reaction"
        or rel_type == "m.replace"
        or item.event_type.endswith("poll.end")
    )


# -- the shape of a message (pure) --------------------------------------------------------


@cache
def _renderer() -> MarkdownIt:
    # html=False: raw HTML from the model is shown as text, never injected into a client.
    return MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": True}).enable(
        ["table", "strikethrough"]
    )


def render(markdown: str) -> str:
    """The HTML for a Markdown text."""
    rendered: str = _renderer().render(markdown)
    return rendered.strip()


def text_content(markdown: str, *, notice: bool = False) -> dict[str, Any]:
    """An m.room.message content for Markdown text: plain body plus HTML."""
    content: dict[str, Any] = {"msgtype": "m.notice" if notice else "m.text", "body": markdown}
    rendered = render(markdown)
    # Plain text renders as one <p>; only send HTML when it adds something.
    if rendered != f"<p>{_escape(markdown)}</p>":
        content["format"] = "org.matrix.custom.html"
        content["formatted_body"] = rendered
    return content


def as_reply(
    content: dict[str, Any], event_id: str, thread_root: str | None = None
) -> dict[str, Any]:
    """The content as a reply to `event_id` (rich reply relation, no fallback quote).

    With `thread_root` (the owner wrote `event_id` in a thread) the reply goes to that
    thread, and keeps the reply as the spec's fallback (`is_falling_back`), so a client
    without threads still shows it as a reply to the owner's message.
    """
    if thread_root is None:
        return {**content, "m.relates_to": {"m.in_reply_to": {"event_id": event_id}}}
    relation = {
        "rel_type": "m.thread",
        "event_id": thread_root,
        "is_falling_back": True,
        "m.in_reply_to": {"event_id": event_id},
    }
    return {**content, "m.relates_to": relation}


def _escape(text: str) -> str:
    """Text as the renderer escapes it (`&`, `<`, `>`, `"`; not `'`, which `html.escape`
    would write as `&#x27;`): what to look for in, or add to, the HTML it made."""
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def edit_of(content: dict[str, Any], event_id: str) -> dict[str, Any]:
    """An edit (m.replace) of `event_id` whose new content is `content`."""
    return {
        **{k: v for k, v in content.items() if k in ("msgtype", "format")},
        "body": "* " + content["body"],
        **(
            {"formatted_body": "* " + content["formatted_body"]}
            if "formatted_body" in content
            else {}
        ),
        "m.new_content": content,
        "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
    }


def mention_content(markdown: str, user_id: UserID) -> dict[str, Any]:
    """An m.text content for `markdown` that mentions `user_id` (whose id it contains), so
    their phone notifies (a fired reminder; `Outbox.mention` posts it).

    The mention is intentional (`m.mentions.user_ids`, the spec's way since v1.7) and also
    shown: the user's id in the plain body and a pill (a matrix.to link) in the HTML. Such a
    message is an `m.text`, never an `m.notice`: the default push rules suppress notices
    before they look at mentions.
    """
    content = text_content(markdown)
    rendered = content.get("formatted_body") or render(markdown)
    # Escaped as the renderer escaped the text, or an id it writes differently (`'`) is
    # never found to become a pill.
    shown = _escape(user_id)
    pill = f'<a href="https://matrix.to/#/{shown}">{shown}</a>'
    content["format"] = "org.matrix.custom.html"
    content["formatted_body"] = rendered.replace(shown, pill, 1)
    content["m.mentions"] = {"user_ids": [user_id]}
    return content
