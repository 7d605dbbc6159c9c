"""Approvals from the phone: an `ask` becomes a question in the room and a poll just
below it (MSC3381: Approve once / Always / Deny); the owner answers with a vote, a reply
(yes / no, !approve / !deny) or an encrypted reaction (✅ / ❌). Silence denies. When it is
answered, expires or is withdrawn, the poll is ended with the outcome (a decoration: it
never holds up the answer or the next question).

The question shows exactly what will run: the whole command in a code block (never
redacted, never rendered), every part no rule covers, and for a file change its diff. A
part too long for one message goes whole as an attached (encrypted) file just before the
question, which says so; if the file cannot be sent, nothing is asked and the answer is no. An
approval is bound to the exact subject it showed (by hash), is used once, expires, answers
only its own question, and counts only when the router has already passed its sender
through the trust gate.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from dispatch_matrix.agent.ports import Approval
from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import DispatchError, HomeserverError
from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.matrix import polls
from dispatch_matrix.queue import approval_texts as texts
from dispatch_matrix.queue.polls import approval_of
from dispatch_matrix.queue.ports import Room
from dispatch_matrix.store import Database, Task, TaskState

if TYPE_CHECKING:
    from dispatch_matrix.permissions.policy import Decision

log = logs.get(__name__)

YES = {"✅", "👍", "✔️", "☑️"}
NO = {"❌", "👎", "✖️", "🚫"}
YES_WORDS = {"yes", "y", "ok", "approve", "!approve", "allow", "go", "go ahead"}
ALWAYS_WORDS = {"always", "always allow", "!always", "yes always", "always allow this"}
NO_WORDS = {"no", "n", "deny", "!deny", "stop", "don't", "dont"}


def subject_hash(subject: str) -> str:
    """The fingerprint an approval is bound to."""
    return hashlib.sha256(subject.encode()).hexdigest()[:16]


@dataclass
class _Pending:
    task: Task
    question: EventID
    fingerprint: str
    expires: float
    answer: asyncio.Future[tuple[Approval, str]] = field(repr=False)
    choices: tuple[polls.Choice, ...] = ()


class Approvals:
    """Pending questions and their answers."""

    def __init__(self, db: Database, room: Room, timeout_s: float) -> None:
        self._db = db
        self._room = room
        self._timeout_s = timeout_s
        self._pending: dict[EventID, _Pending] = {}
        # The open questions, read-only and live: the intake tells from it, without a call,
        # whether a bare "yes" can answer anything (almost never: every other message is work).
        self.open_questions: Mapping[EventID, object] = MappingProxyType(self._pending)
        # The open questions' polls: poll event -> question event.
        self._polls: dict[EventID, EventID] = {}
        # Poll ends on their way (decorations, never awaited by the question).
        self._ending: set[asyncio.Task[None]] = set()

    async def ask(self, task: Task, decision: Decision, change: str | None = None) -> Approval:
        """Post the question and wait for the owner; NO on no, silence or expiry."""
        fingerprint = subject_hash(decision.subject + (change or ""))
        minutes = max(1, round(self._timeout_s / 60))
        step = self._db.count_step(task.id)
        asking = texts.approval_question(task, decision, change, minutes, f"{step}")
        failed = await self._attach_all(task, asking.attachments)
        if failed is not None:
            log.warning("approval.attachment_failed", task=task.short_id, error=failed)
            await self._room.post(
                task.room_id,
                texts.attachment_failed(failed),
                reply_to=task.event_id,
                task_id=task.id,
                notice=True,
            )
            self._db.record_approval(task.id, decision.subject, fingerprint, False, "unsent")
            return Approval.NO
        # Shown exactly as it will run: neither redacted nor rendered (a code block).
        question = await self._room.post(
            task.room_id,
            asking.text,
            reply_to=task.event_id,
            task_id=task.id,
            key=f"t{task.id}.ask.{fingerprint}.{step}",
            redact=False,
        )
        answer: asyncio.Future[tuple[Approval, str]] = asyncio.get_running_loop().create_future()
        choices = texts.poll_choices(decision.learns)
        pending = _Pending(
            task, question, fingerprint, time.monotonic() + self._timeout_s, answer, choices
        )
        self._pending[question] = pending
        self._db.set_task_state(task.id, TaskState.WAITING_APPROVAL)
        log.info("approval.asked", task=task.short_id, subject_hash=fingerprint)
        outcome = "withdrawn"
        poll: EventID | None = None
        try:
            poll = await self._start_poll(
                task, question, change is not None, choices, f"t{task.id}.ask.{fingerprint}.{step}"
            )
            approval, who = await asyncio.wait_for(answer, self._timeout_s)
            outcome = approval.value
        except TimeoutError:
            approval, who, outcome = Approval.NO, "timeout", "timeout"
            await self._room.post(
                task.room_id,
                texts.APPROVAL_EXPIRED,
                reply_to=question,
                notice=True,
                key=f"t{task.id}.expired.{question}",
            )
        finally:
            self._pending.pop(question, None)
            if poll:
                self._polls.pop(poll, None)
                self._end_poll(task, poll, texts.poll_ended(outcome, decision.learns))
        self._db.record_approval(task.id, decision.subject, fingerprint, approval.approved, who)
        self._db.set_task_state(task.id, TaskState.RUNNING)
        log.info("approval.decided", task=task.short_id, answer=approval.value, by=who)
        return approval

    async def _start_poll(
        self,
        task: Task,
        question: EventID,
        change: bool,
        choices: tuple[polls.Choice, ...],
        asked_key: str,
    ) -> EventID | None:
        """The poll that answers `question` with a tap, one more event referring to it; the
        question stands without it (a reply still answers), so a failure is only logged.
        Its key holds `.ask.`: the ledger then knows a vote on it after it closed."""
        content = polls.start_content(question, texts.poll_question(task, change), choices)
        try:
            poll = await self._room.post_event(
                task.room_id,
                polls.POLL_START,
                content,
                task_id=task.id,
                key=f"{asked_key}.poll",
            )
        except HomeserverError as err:
            log.warning("approval.poll_failed", task=task.short_id, error=err.message)
            return None
        self._polls[poll] = question
        return poll

    def _end_poll(self, task: Task, poll: EventID, text: str) -> None:
        """End the poll with the outcome, in the background: a decoration."""

        async def end() -> None:
            try:
                await self._room.post_event(
                    task.room_id,
                    polls.POLL_END,
                    polls.end_content(poll, text),
                    task_id=task.id,
                    key=f"t{task.id}.end.{poll}",
                    decoration=True,
                )
            except HomeserverError as err:
                log.info("approval.poll_end_failed", task=task.short_id, error=err.message)

        ending = asyncio.create_task(end(), name="poll-end")
        self._ending.add(ending)
        ending.add_done_callback(self._ending.discard)

    async def answer_vote(
        self, room_id: RoomID, ballot: polls.Ballot, sender: UserID, event_id: EventID
    ) -> bool:
        """An owner's (already trusted) vote; True if it was on one of our polls. A vote on
        the open question's poll answers it; on a closed or expired one it approves nothing,
        and says so in one line."""
        question = self._polls.get(ballot.poll)
        pending = self._pending.get(question) if question is not None else None
        if pending is not None and pending.task.room_id == room_id:
            verdict = approval_of(ballot.answers, pending.choices)
            if verdict is None:
                log.info("approval.vote_ignored", poll=ballot.poll, answers=len(ballot.answers))
                return True
            if self._settle(pending, verdict, sender):
                log.info("approval.answered", question=pending.question, by=sender, vote=True)
                return True
        elif not self._db.was_question(ballot.poll):
            return False
        log.info("approval.late_vote", poll=ballot.poll, by=sender)
        await self._say(room_id, event_id, texts.QUESTION_CLOSED)
        return True

    async def plaintext_answer(self, room_id: RoomID, target: EventID, event_id: EventID) -> None:
        """An owner's unencrypted reaction or vote on a question or its poll: never obeyed;
        said once per question (tap the poll, or reply)."""
        question = self._polls.get(target, target)
        if question not in self._pending and not self._db.was_question(target):
            return
        if self._db.first_notice(f"plaintext-answer:{question}"):
            await self._say(room_id, event_id, texts.PLAINTEXT_REACTION)

    async def _attach_all(
        self, task: Task, attachments: tuple[texts.Attachment, ...]
    ) -> str | None:
        """Send the parts too long for the question, each whole as an encrypted file:
        exactly what would run, unredacted like the question. None when all went; else
        which did not and why. A file is on disk only while it uploads, in a folder only
        the daemon's user may open (and the sandbox has its own /tmp)."""
        for attachment in attachments:
            try:
                with tempfile.TemporaryDirectory(prefix="dispatch-question-") as folder:
                    path = Path(folder) / attachment.name
                    await asyncio.to_thread(path.write_text, attachment.text, encoding="utf-8")
                    await self._room.send_file(
                        task.room_id, path, reply_to=task.event_id, task_id=task.id
                    )
            except DispatchError as err:
                return f"{attachment.name}: {err.message}"
        return None

    async def learned(self, task: Task, rule: str | None) -> None:
        """Say which rule an "always" became."""
        await self._room.post(
            task.room_id, texts.rule_learned(rule), reply_to=task.event_id, notice=True
        )

    def answer_reaction(self, question_event: EventID, key: str, sender: UserID) -> bool:
        """An owner's (already trusted) reaction; True if it answered a pending question.
        A reaction answers only the question it is on."""
        pending = self._pending.get(question_event)
        verdict = Approval.YES if key in YES else Approval.NO if key in NO else None
        if pending is None or verdict is None:
            return False
        return self._settle(pending, verdict, sender)

    def would_answer(self, room_id: RoomID, body: str, reply_to: EventID | None) -> bool:
        """Whether `answer_text` would take this text as an answer (a yes / no replying to
        an open question of the room, or bare while one is open there); asks nothing."""
        if _verdict(body) is None:
            return False
        if reply_to is not None:
            pending = self._pending.get(reply_to)
            return pending is not None and pending.task.room_id == room_id
        return any(p.task.room_id == room_id for p in self._pending.values())

    async def answer_text(
        self,
        room_id: RoomID,
        body: str,
        sender: UserID,
        reply_to: EventID | None,
        event_id: EventID,
    ) -> bool:
        """An owner's (already trusted) text; True if it was an answer (then it is no task).

        A reply answers the question it replies to and no other; a reply to a question
        that is closed says so and approves nothing. A bare yes / no answers the one open
        question of the room, and when several are open, asks which.
        """
        verdict = _verdict(body)
        if verdict is None:
            return False
        if reply_to is not None:
            pending = self._pending.get(reply_to)
            if pending is not None and pending.task.room_id == room_id:
                if self._settle(pending, verdict, sender):
                    return True
                await self._say(room_id, event_id, texts.QUESTION_CLOSED)
                return True
            if self._db.was_question(reply_to):
                log.info("approval.late_answer", question=reply_to, by=sender)
                await self._say(room_id, event_id, texts.QUESTION_CLOSED)
                return True
            return False
        open_here = [p for p in self._pending.values() if p.task.room_id == room_id]
        if not open_here:
            return False
        if len(open_here) > 1:
            await self._say(room_id, event_id, texts.which_question(len(open_here)))
            return True
        if not self._settle(open_here[0], verdict, sender):
            await self._say(room_id, event_id, texts.QUESTION_CLOSED)
        return True

    async def _say(self, room_id: RoomID, event_id: EventID, text: str) -> None:
        await self._room.post(room_id, text, reply_to=event_id, notice=True, key=f"ans-{event_id}")

    def _settle(self, pending: _Pending, verdict: Approval, sender: UserID) -> bool:
        if pending.answer.done() or time.monotonic() > pending.expires:
            return False
        pending.answer.set_result((verdict, sender))
        return True


def _verdict(body: str) -> Approval | None:
    """What a text reply says, if it is an answer at all."""
    word = body.strip().lower().rstrip(".!")
    if word in ALWAYS_WORDS:
        return Approval.ALWAYS
    if word in YES_WORDS:
        return Approval.YES
    if word in NO_WORDS:
        return Approval.NO
    return None
