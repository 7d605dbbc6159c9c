"""Intake: what an owner's trusted message means, and what it does to the queue.

Work (text, or a file with its caption) becomes a task row, acknowledged with ⏳ only once
it is on disk; a `!command` is answered at once; a "yes" / "no" answers an open approval
question; an edit of a queued message changes its task; a redaction drops it.

The control commands' grammar is here, parsed by a pure function (`parse`), so that one
module says what owner text means: `!help`, `!status`, `!queue`, `!cancel [id]`, `!pause`,
`!resume`, `!retry [id]`, `!new`, `!history [n]`, `!compact`, `!memory`, `!usage`,
`!model [name]`, `!tools`, `!reminders`, `!cancel-reminder ID`, `!digest`. Anything else
starting with `!` gets the help text, never the model. Their effects are `control.py`'s
(answered without the model, even mid-task); the parsed `Command` is what it, the
reminders and voice take.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from dispatch_matrix.core import logs
from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.matrix.polls import Ballot
from dispatch_matrix.queue import texts
from dispatch_matrix.queue.ports import Room
from dispatch_matrix.queue.worker import Worker
from dispatch_matrix.store import Database, TaskState

log = logs.get(__name__)

NAMES = (
    "help",
    "status",
    "queue",
    "cancel",
    "pause",
    "resume",
    "retry",
    "new",
    "history",
    "compact",
    "memory",
    "usage",
    "model",
    "reminders",
    "cancel-reminder",
    "digest",
    "tools",
)


@dataclass(frozen=True)
class Command:
    """A parsed control command."""

    name: str
    arg: str = ""

    @property
    def task_id(self) -> int | None:
        """The task number the argument names (`#3`, `3`), if any."""
        text = self.arg.strip().lstrip("#")
        return int(text) if text.isdigit() else None


def parse(body: str) -> Command | None:
    """The command in a message, or None if the message is ordinary work."""
    text = body.strip()
    if not text.startswith("!") or text.startswith("!!"):
        return None
    word, _, rest = text[1:].partition(" ")
    name = word.lower()
    if name not in NAMES:
        return Command("unknown", word)
    return Command(name, rest.strip())


class Commands(Protocol):
    """What intake hands a parsed command to (`control.Control`, which imports `Command`
    from here: a protocol, so the two modules do not need each other)."""

    async def run(self, command: Command, room_id: RoomID, event_id: str) -> None:
        """Do what the command says and reply to it, once."""


# The commands that act on what runs now or only show: sent while a file of the room waits
# for its download, each is run at once, not after that file (router: `!cancel` stops what
# the owner sees running, not the file's task minutes later once it is fetched).
AHEAD_OF_WAITING_FILES = frozenset({"cancel", "pause", "resume", "status", "queue", "help"})


class Intake:
    """Turns trusted owner messages into queue changes."""

    def __init__(
        self,
        db: Database,
        worker: Worker,
        room: Room,
        control: Commands,
        max_chars: int,
        on_reaction: Callable[[EventID, str, UserID], Awaitable[bool]] | None = None,
    ) -> None:
        # Reactions that are not approval answers go here (a ❌ on a `!reminders` entry).
        self._on_reaction = on_reaction
        self._db = db
        self._worker = worker
        self._room = room
        self._control = control
        self._max_chars = max_chars

    async def message(
        self,
        event_id: EventID,
        room_id: RoomID,
        sender: UserID,
        body: str,
        origin_ts: int,
        reply_to: EventID | None = None,
        attachments: list[dict[str, object]] | None = None,
    ) -> None:
        """A new text message from an owner."""
        if self._db.command_ran(event_id):
            # Its sync is read again: the command ran, or the answer was given, already.
            log.info("message.duplicate", event_id=event_id)
            return
        # While a question is open, "yes" / "no" answer it instead of becoming work; a reply
        # may answer (or name as closed) the question it replies to. Any other text is work,
        # so the approvals are not asked about it.
        approvals = self._worker.approvals
        if (
            not attachments
            and (reply_to is not None or approvals.open_questions)
            and await approvals.answer_text(room_id, body, sender, reply_to, event_id)
        ):
            log.info("approval.answered", event_id=event_id, by=sender)
            # After the answer (only then is it known to be one): read again, a bare "yes"
            # would answer the next question, or become a task once none is open.
            self._db.record_command(event_id, "answer")
            return
        if not attachments and not body.strip():
            # Nothing to do (a slip of the thumb, or a reply that was only a quote): a task
            # would send the model an empty request and the owner an answer to nothing.
            log.info("message.empty_ignored", event_id=event_id)
            return
        command = None if attachments else parse(body)
        if command is not None:
            log.info("command.received", command=command.name, event_id=event_id)
            await self._control.run(command, room_id, event_id)
            return
        if len(body) > self._max_chars:
            log.warning("message.too_long", event_id=event_id, chars=len(body))
            text = texts.TOO_LONG.format(size=len(body), limit=self._max_chars)
            await self._room.post(
                room_id, text, reply_to=event_id, notice=True, key=f"long-{event_id}"
            )
            return
        note = self._referent(reply_to) if reply_to is not None else None
        task = self._db.add_task(
            event_id, room_id, sender, body, origin_ts, attachments, reply_note=note
        )
        if task is None:
            log.debug("message.duplicate", event_id=event_id)
            return
        log.info("task.queued", task=task.short_id, room=task.room_id, event_id=task.event_id)
        self._worker.mirror.queued(task)
        self._worker.wake()

    def goes_ahead(self, room_id: RoomID, body: str, reply_to: EventID | None) -> bool:
        """Whether an owner's text acts on what runs now instead of queueing work: a stop
        or show command (`AHEAD_OF_WAITING_FILES`), or an answer to an approval question
        open in the room. The router does not hold such a text behind a file of its room
        that waits for its download."""
        command = parse(body)
        if command is not None:
            return command.name in AHEAD_OF_WAITING_FILES
        return self._worker.approvals.would_answer(room_id, body, reply_to)

    def _referent(self, reply_to: EventID) -> str:
        """What a reply refers to, for the model: the ledger knows the bot's events (an
        answer names its task) and the owner's messages that became tasks."""
        sent = self._db.sent_event(reply_to)
        if sent is not None:
            task = self._db.task(sent.task_id) if sent.task_id is not None else None
            # A task's answer is recorded under the key t<id>.done (worker.py).
            whose = "answer" if sent.txn_id.endswith(".done") else "message"
            body = sent.content.get("body")
            return texts.reply_note(
                whose, task.short_id if task else None, str(body) if body else None
            )
        task = self._db.task_by_event(reply_to)
        if task is not None:
            return texts.reply_note("owner", task.short_id, task.body)
        return texts.reply_note("unknown", None, None)

    async def reaction(self, target_event_id: EventID, key: str, sender: UserID) -> None:
        """An owner's trusted reaction: it may answer an approval question, or cancel a
        schedule from its `!reminders` entry."""
        if self._worker.approvals.answer_reaction(target_event_id, key, sender):
            log.info("approval.answered", question=target_event_id, by=sender, key=key)
        elif self._on_reaction is not None:
            await self._on_reaction(target_event_id, key, sender)

    async def vote(
        self, room_id: RoomID, ballot: Ballot, sender: UserID, event_id: EventID
    ) -> None:
        """An owner's trusted poll vote: it may answer an approval question."""
        if not await self._worker.approvals.answer_vote(room_id, ballot, sender, event_id):
            log.info("vote.ignored", event_id=event_id, reason="not on an approval poll")

    async def plaintext_answer(self, room_id: RoomID, target: EventID, event_id: EventID) -> None:
        """An owner's unencrypted reaction or vote: obeyed never; on a question, said once."""
        await self._worker.approvals.plaintext_answer(room_id, target, event_id)

    async def edit(self, target_event_id: EventID, body: str, edit_event_id: EventID) -> None:
        """The owner edited a message: a queued task takes the new text; a task that has
        started (or ended) keeps its own, and the owner is told so in one line."""
        task = self._db.edit_queued(target_event_id, body)
        if task is not None:
            log.info("task.edited", task=task.short_id)
            return
        task = self._db.task_by_event(target_event_id)
        if task is None:
            log.info("message.edit_ignored", target=target_event_id, reason="not a task")
            return
        log.info("message.edit_ignored", target=target_event_id, task=task.short_id)
        await self._room.post(
            task.room_id,
            texts.edit_not_taken(task),
            reply_to=target_event_id,
            notice=True,
            key=f"edit-{edit_event_id}",
        )

    async def redacted(self, target_event_id: EventID) -> None:
        """The owner deleted a message: a queued task is dropped."""
        task = self._db.task_by_event(target_event_id)
        if task is None or task.state is not TaskState.QUEUED:
            return
        self._db.set_task_state(task.id, TaskState.CANCELLED, error="message deleted")
        log.info("task.dropped", task=task.short_id, reason="message deleted")

    async def malformed(self, event_id: EventID, room_id: RoomID) -> None:
        """A message that is not valid Matrix: say so rather than drop it silently."""
        await self._room.post(
            room_id, texts.MALFORMED, reply_to=event_id, notice=True, key=f"bad-{event_id}"
        )

    async def not_text(self, event_id: EventID, room_id: RoomID) -> None:
        """A message kind the bot cannot take as work (a location, a poll, a sticker…)."""
        await self._room.post(
            room_id, texts.NOT_TEXT, reply_to=event_id, notice=True, key=f"nt-{event_id}"
        )
