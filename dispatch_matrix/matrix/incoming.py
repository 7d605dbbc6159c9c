"""An owner's file, from its event to a task: saved into the inbox once per event, also
across a crash, then given to the intake with the file attached; the owner told when it
cannot be saved, when its download takes long, or when it was given up on.

The event id is the key, kept in the ledger (`files_taken`). Before a byte is fetched the
event claims the path its file will have (a dated folder, a free name), committed; the file
is written under a temporary name beside it and renamed onto that path only when whole, and
its size recorded then. An event read again (a crash came before its sync token was saved)
finds what the first reading left: an event that is a task already is left alone; a file
saved whole is used as it is (no second download, no second copy); one a crash cut short is
fetched again onto the same path, its temporary part overwritten.

A download the homeserver failed for now (`fetching.py` sorts the failures) raises
`FileNotFetched`: the message then waits in its room's order (`unjudged.py`), which calls
`fetch` again when the next try is due and `tell` when the owner should hear of it.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.matrix import texts
from dispatch_matrix.matrix.attachments import (
    AttachmentError,
    NotSaved,
    Received,
    described,
    file_name,
    link_of,
    receive_file,
)
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.fetching import (
    GIVE_UP_AFTER_S,
    FileNotFetched,
    Next,
    Outcome,
    failure_outcome,
)
from dispatch_matrix.matrix.handlers import Tasks
from dispatch_matrix.matrix.inbound import Message
from dispatch_matrix.matrix.outbox import Outbox
from dispatch_matrix.matrix.unjudged import FileWait
from dispatch_matrix.store import Database

log = logs.get(__name__)


class FileStep(Enum):
    """What taking an owner's file has left to do."""

    # The event became a task already: nothing (no download, no file, no second task).
    DONE = "done"
    # Its file is saved whole: the task is made from it, nothing is fetched.
    KEEP = "keep"
    # Fetch it (again) onto the claimed path.
    FETCH = "fetch"


def next_step(task_known: bool, saved: int | None, on_disk: int | None) -> FileStep:
    """What is left to do for an event's file (pure): `task_known`, the event is a task;
    `saved`, the size recorded once its file was whole (None: not recorded); `on_disk`, the
    size of the file at the claimed path now (None: no file there)."""
    if task_known:
        return FileStep.DONE
    if saved is not None and on_disk == saved:
        return FileStep.KEEP
    # Never saved, or what is there is not what was saved (changed or removed since).
    return FileStep.FETCH


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


class IncomingFiles:
    """Takes owners' attachments into `inbox/DATE/`, once per event id, and makes each a
    task (`intake`); what the owner is told goes through `outbox`."""

    def __init__(
        self,
        client: MatrixClient,
        ledger: Database,
        inbox: Path,
        max_bytes: int,
        today: Callable[[], str] = _today,
        *,
        outbox: Outbox,
        intake: Tasks,
    ) -> None:
        self._client = client
        self._ledger = ledger
        self._inbox = inbox
        self._max_bytes = max_bytes
        # The dated folder a new file goes to (the clock is an input, for tests).
        self._today = today
        self._outbox = outbox
        self._intake = intake

    async def fetch(self, message: Message) -> None:
        """An owner's image or file: saved, decrypted, into the inbox, once per event (read
        again after a crash, it is neither fetched nor saved twice); then it is a task.
        Raises `FileNotFetched` when the homeserver failed the download for now (the
        message then waits, `unjudged.py`); what no retry mends is refused with a notice.
        Every try runs beside the sync's handling (`Unjudged.first_try`, `retry`)."""
        content = message.content or {}
        try:
            received = await self.take(message.event_id, content)
        except (AttachmentError, HomeserverError) as err:
            if isinstance(err, HomeserverError) and failure_outcome(err) is Outcome.RETRY:
                log.info("attachment.fetch_failed", event_id=message.event_id, error=err.message)
                raise FileNotFetched(err) from err
            log.warning("attachment.refused", event_id=message.event_id, error=err.message)
            await self._outbox.post(
                message.room_id,
                texts.file_refused(err.message, disk_full=isinstance(err, NotSaved) and err.full),
                reply_to=message.event_id,
                notice=True,
                # Read again after a crash, the event is refused in the same one message.
                key=f"file-{message.event_id}",
            )
            return
        if received is None:
            return
        log.info(
            "attachment.received",
            event_id=message.event_id,
            path=str(received.path),
            size=received.size,
            mimetype=received.mimetype,
        )
        caption = content.get("body", "")
        body = (
            "" if caption == received.name or caption == content.get("filename") else str(caption)
        )
        await self._intake.message(
            message.event_id,
            message.room_id,
            message.sender,
            body or f"(sent {received.name})",
            message.origin_ts,
            attachments=[
                {
                    "path": str(received.path),
                    "mimetype": received.mimetype,
                    "size": received.size,
                    "name": received.name,
                }
            ],
        )

    async def tell(self, wait: FileWait, news: Next, err: HomeserverError) -> None:
        """Tell the owner a file of theirs is still being fetched (once), or was given up
        on (by name, in the one message a refusal of it would have been)."""
        message = wait.message
        name = file_name(message.content or {})
        if news is Next.GIVE_UP:
            hours = round(GIVE_UP_AFTER_S / 3600)
            text, key = texts.file_given_up(name, hours, err.message), f"file-{message.event_id}"
        else:
            text, key = (
                texts.file_still_fetching(name, err.message),
                f"file-wait-{message.event_id}",
            )
        await self._outbox.post(
            message.room_id, text, reply_to=message.event_id, notice=True, key=key
        )

    async def take(self, event_id: str, content: dict[str, Any]) -> Received | None:
        """The saved file of an owner's attachment event, fetched only if no earlier
        reading saved it whole; None when the event is a task already. Raises
        `AttachmentError` (`NotSaved` for a write that failed) or `HomeserverError`. Runs
        beside the sync's handling (`unjudged.py`): a hang here holds no other room."""
        known = self._ledger.task_by_event(event_id) is not None
        claim = None if known else self._ledger.file_claim(event_id)
        on_disk = _size(claim.path) if claim is not None else None
        step = next_step(known, claim.size if claim is not None else None, on_disk)
        if step is FileStep.DONE:
            log.info("attachment.taken_already", event_id=event_id)
            return None
        if claim is not None and not claim.path.is_relative_to(self._inbox):
            # The workdir (so the inbox) changed between the claim and now (a crash, a new
            # config, a restart): the file goes to the current inbox, fetched again. Not
            # kept where it was (the agent may no longer reach the old workdir), nor copied
            # from it (the old workdir was the agent's to write: reading through it would
            # follow whatever links it left there).
            log.info("attachment.inbox_moved", event_id=event_id, was=str(claim.path))
            claim = self._ledger.claim_file(
                event_id, self._inbox / self._today(), file_name(content), anew=True
            )
            step = FileStep.FETCH
        if step is FileStep.KEEP and claim is not None and on_disk is not None:
            log.info("attachment.kept", event_id=event_id, path=str(claim.path), size=on_disk)
            return described(content, claim.path, on_disk)
        if claim is None:
            # One refused anyway (too big, no link) claims no name.
            link_of(content, self._max_bytes)
            claim = self._ledger.claim_file(
                event_id, self._inbox / self._today(), file_name(content)
            )
        # The inbox lies in the agent's workdir, where the sandboxed agent may write: from
        # the workdir down, no link it planted is followed.
        received = await receive_file(
            self._client, content, claim.path, self._max_bytes, below=self._inbox.parent
        )
        self._ledger.file_saved(event_id, received.size)
        return received


def _size(path: Path) -> int | None:
    """The size of the regular file at `path`; None for nothing there, or anything else (a
    link the agent put in its place is not the owner's file, whatever its size)."""
    try:
        found = path.lstat()
    except OSError:
        return None
    return found.st_size if stat.S_ISREG(found.st_mode) else None
