"""Approvals from the phone: an `ask` becomes a question in the room; the owner answers with
a reaction (✅ / ❌) or a reply (yes / no, !approve / !deny). Silence denies.

An approval is bound to the exact subject it showed (by hash), is used once, expires, and
counts only when the router has already passed its sender through the trust gate.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field

from .. import logs
from ..ids import RoomID
from ..store import Database, Task, TaskState
from ..tools import Decision
from .mirror import Mirror
from .ports import Room

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
    question: str
    fingerprint: str
    expires: float
    always: bool = False
    answer: asyncio.Future[tuple[bool, str]] = field(repr=False, default=None)  # type: ignore[assignment]


class Approvals:
    """Pending questions and their answers."""

    def __init__(self, db: Database, room: Room, mirror: Mirror, timeout_s: float) -> None:
        self._db = db
        self._room = room
        self._mirror = mirror
        self._timeout_s = timeout_s
        self._pending: dict[str, _Pending] = {}
        self.last_always = False

    async def ask(self, task: Task, decision: Decision) -> bool:
        """Post the question and wait for the owner; False on no, silence or expiry."""
        fingerprint = subject_hash(decision.subject)
        minutes = max(1, round(self._timeout_s / 60))
        text = (
            f"❓ **May I?** {decision.subject}\n\n{decision.reason}.\n\n"
            "Reply **yes** or **no** — or **always** to allow exactly this from now on (or "
            "react ✅ / ❌ from an app that encrypts reactions). "
            f"No answer in {minutes} min means no."
        )
        question = await self._room.post(
            RoomID(task.room_id),
            text,
            reply_to=task.event_id,
            task_id=task.id,
            key=f"t{task.id}.ask.{fingerprint}.{self._db.count_step(task.id)}",
        )
        loop = asyncio.get_running_loop()
        pending = _Pending(task, question, fingerprint, time.monotonic() + self._timeout_s)
        pending.answer = loop.create_future()
        self._pending[question] = pending
        self._db.set_task_state(task.id, TaskState.WAITING_APPROVAL)
        await self._mirror.show(task, TaskState.WAITING_APPROVAL)
        log.info("approval.asked", task=task.short_id, subject_hash=fingerprint)
        try:
            approved, who = await asyncio.wait_for(pending.answer, self._timeout_s)
        except TimeoutError:
            approved, who = False, "timeout"
            await self._room.post(
                RoomID(task.room_id),
                f"⌛ No answer: not doing it ({decision.subject}).",
                reply_to=question,
                notice=True,
                key=f"t{task.id}.expired.{question}",
            )
        finally:
            self._pending.pop(question, None)
        # "always": the engine turns the call into a learned allow rule.
        self.last_always = approved and pending.always
        self._db.record_approval(task.id, decision.subject, fingerprint, approved, who)
        self._db.set_task_state(task.id, TaskState.RUNNING)
        await self._mirror.show(task, TaskState.RUNNING)
        log.info("approval.decided", task=task.short_id, approved=approved, by=who)
        return approved

    def answer_reaction(self, question_event: str, key: str, sender: str) -> bool:
        """An owner's (already trusted) reaction; True if it answered a pending question."""
        pending = self._pending.get(question_event)
        verdict = True if key in YES else False if key in NO else None
        if pending is None or verdict is None:
            return False
        return self._settle(pending, verdict, sender)

    def answer_text(self, room_id: str, body: str, sender: str, reply_to: str | None) -> bool:
        """An owner's (already trusted) text reply; True if it answered a pending question."""
        word = body.strip().lower().rstrip(".!")
        always = word in ALWAYS_WORDS
        verdict = True if word in YES_WORDS or always else False if word in NO_WORDS else None
        if verdict is None:
            return False
        candidates = [p for p in self._pending.values() if p.task.room_id == room_id]
        if reply_to is not None:
            candidates = [p for p in candidates if p.question == reply_to] or candidates
        if not candidates:
            return False
        # The oldest open question is the one a bare "yes" answers.
        return self._settle(candidates[0], verdict, sender, always)

    def _settle(self, pending: _Pending, verdict: bool, sender: str, always: bool = False) -> bool:
        if pending.answer.done() or time.monotonic() > pending.expires:
            return False
        pending.always = always
        pending.answer.set_result((verdict, sender))
        return True
