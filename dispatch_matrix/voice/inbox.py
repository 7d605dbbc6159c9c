"""An owner's voice message on its way to the queue: size checked, fetched and decrypted,
transcribed off the event loop, shown back as `🎙️ "…"`, then queued as if it were typed.

It starts only after the trust gate, so a stranger's or an untrusted device's audio is never
fetched. The router only records a voice message in the ledger; a lane of its own hears the
recorded ones one at a time, in arrival order, so a slow or hanging backend never holds up
the sync loop (commands, approvals, other messages). The price: a text sent while a voice
message is still being transcribed may be queued ahead of it. Audio the homeserver fails
to hand over for now (a 502, no answer) is fetched again on `matrix.fetching`'s schedule
before the message counts as failed. One the backend could not hear stays in the ledger
(with its audio) for `!retry`; one a crash interrupted is heard again at the next start,
without redoing what was done: its audio (saved under a name of its event's) is not fetched
again, its kept words are not transcribed again, and words that reached the queue are not
queued again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.core.ids import RoomID
from dispatch_matrix.matrix.attachments import (
    AttachmentError,
    NotSaved,
    Received,
    file_name,
    human_size,
    receive_file,
)
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.fetching import (
    FetchFailed,
    Next,
    Outcome,
    after_failure,
    failure_outcome,
)
from dispatch_matrix.matrix.inbound import Message
from dispatch_matrix.matrix.outbox import Outbox
from dispatch_matrix.queue.intake import Command, Intake
from dispatch_matrix.store import LedgerQueries, TaskState
from dispatch_matrix.voice import texts
from dispatch_matrix.voice.content import declared_size, echo, heard
from dispatch_matrix.voice.tables import VoiceMessage, VoiceMessages, VoiceState
from dispatch_matrix.voice.transcribe import Transcriber, TranscriptionFailed

log = logs.get(__name__)


class VoiceInbox:
    """Trusted owners' voice messages as recorded in the ledger: received from the router,
    dropped when deleted, sent back to be heard on `!retry`; `Hearing` takes them in turn."""

    def __init__(self, voices: VoiceMessages, ledger: LedgerQueries) -> None:
        self._voices = voices
        # Read only by a bare `!retry`: whether a task failed after the voice message did.
        self._ledger = ledger
        self._wake = asyncio.Event()

    async def receive(self, message: Message) -> None:
        """A trusted owner's voice message: recorded, then heard by `Hearing` (the sync goes
        on)."""
        row = self._voices.add_voice(
            message.event_id,
            message.room_id,
            message.sender,
            message.origin_ts,
            dict(message.content or {}),
        )
        if row.state is not VoiceState.PENDING:
            log.debug("voice.duplicate", event_id=row.event_id, state=str(row.state))
            return
        log.info("voice.received", event_id=row.event_id, declared_size=declared_size(row.content))
        self._wake.set()

    def queued(self, event_id: str) -> bool:
        """Whether a voice message's words reached the queue already (a task, a command or
        an answer): a crash came after that and before it was marked heard."""
        return self._ledger.task_by_event(event_id) is not None or self._ledger.command_ran(
            event_id
        )

    async def next_pending(self) -> VoiceMessage:
        """The oldest voice message still to be heard, once there is one."""
        while True:
            row = self._voices.next_pending_voice()
            if row is not None:
                return row
            self._wake.clear()
            await self._wake.wait()

    async def retry_command(self, command: Command, room_id: RoomID) -> str | None:
        """`!retry`, taken before the queue's: a bare one whose latest failure in the room is
        a voice message not heard (no task failed since) hears it again; returns the line to
        answer with, None to leave the command to the queue (retry the latest task)."""
        if command.task_id is not None:
            return None
        row = self._voices.latest_failed_voice(room_id)
        if row is None:
            return None
        tasks = [t for t in self._ledger.recent_tasks(20) if t.state is not TaskState.DONE]
        if tasks and (tasks[0].finished_at or 0) > row.updated_at:
            return None
        return await self.retry(room_id)

    async def retry(self, room_id: RoomID) -> str | None:
        """`!retry`: the room's latest unheard voice message goes back to be heard; returns
        the line to answer with (None: there is no such message)."""
        row = self._voices.latest_failed_voice(room_id)
        if row is None:
            return None
        log.info("voice.retry", event_id=row.event_id, attempts=row.attempts)
        self._voices.set_voice(row.event_id, VoiceState.PENDING)
        self._wake.set()
        return texts.VOICE_RETRYING

    async def redacted(self, event_id: str) -> None:
        """The owner deleted a voice message: one not yet heard is dropped with its audio."""
        row = self._voices.voice(event_id)
        if row is None or row.state not in (VoiceState.PENDING, VoiceState.FAILED):
            return
        self._voices.set_voice(event_id, VoiceState.DROPPED, error="message deleted")
        _delete_audio(self._voices, row)
        log.info("voice.dropped", event_id=event_id, reason="message deleted")


class Hearing:
    """The voice lane: hears the inbox's messages one at a time, through the configured
    backend, and queues their words as if they were typed."""

    def __init__(
        self,
        inbox: VoiceInbox,
        client: MatrixClient,
        voices: VoiceMessages,
        outbox: Outbox,
        transcriber: Transcriber | None,
        intake: Intake,
        *,
        max_file_bytes: int,
        folder: Path,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Between tries at audio the homeserver failed for now (the clock and the wait are
        # inputs, for tests).
        self._sleep = sleep
        self._clock = clock
        self._inbox = inbox
        self._client = client
        self._voices = voices
        self._outbox = outbox
        # None: voice is off, and each voice message is answered with how to turn it on.
        self._transcriber = transcriber
        # Where transcripts go, as typed messages do.
        self._intake = intake
        self._max_file_bytes = max_file_bytes
        # Decrypted audio waits here (in the private state folder) until it is heard.
        self._folder = folder

    async def run(self) -> None:
        """Hear recorded voice messages one at a time, oldest first, until cancelled."""
        while True:
            row = await self._inbox.next_pending()
            try:
                failure = await self._hear(row)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug met with one voice message fails that message, not the daemon (a
                # crash would restart into the same message and meet it again, forever).
                log.exception("voice.crashed", event_id=row.event_id)
                self._voices.set_voice(row.event_id, VoiceState.FAILED, error="internal error")
                failure = texts.voice_failed("an internal error (details are in the log)")
            if failure is not None:
                await self._outbox.post(
                    row.room_id,
                    failure,
                    reply_to=row.event_id,
                    notice=True,
                    key=f"voice-{row.event_id}-{row.attempts}",
                )

    async def _hear(self, row: VoiceMessage) -> str | None:
        """Fetch, transcribe, show and queue one voice message; the line for the owner when
        that did not work (nothing is queued then)."""
        if self._inbox.queued(row.event_id):
            # Heard and queued before a crash: neither transcribed nor queued a second time.
            log.info("voice.heard_already", event_id=row.event_id)
            self._voices.set_voice(row.event_id, VoiceState.HEARD)
            _delete_audio(self._voices, row)
            (self._folder / audio_name(row)).unlink(missing_ok=True)
            return None
        if self._transcriber is None:
            self._voices.set_voice(row.event_id, VoiceState.FAILED, error="voice off", attempt=True)
            log.info("voice.off", event_id=row.event_id)
            return texts.VOICE_OFF
        if row.transcript is not None:
            # Transcribed before a crash (or a failure after): the words are kept, the
            # backend is not asked again.
            log.info("voice.transcript_kept", event_id=row.event_id)
            await self._queue(row, row.transcript, None)
            return None
        try:
            fetched = await self._audio(row)
        except NotSaved as err:
            # Worth another try once there is room: kept for `!retry`, nothing left on disk.
            self._voices.set_voice(row.event_id, VoiceState.FAILED, error=err.message, attempt=True)
            log.warning("voice.not_saved", event_id=row.event_id, error=err.message)
            return texts.voice_failed(err.message)
        except AttachmentError as err:
            self._voices.set_voice(
                row.event_id, VoiceState.REFUSED, error=err.message, attempt=True
            )
            log.warning("voice.refused", event_id=row.event_id, error=err.message)
            return texts.voice_refused(err.message)
        except HomeserverError as err:
            self._voices.set_voice(row.event_id, VoiceState.FAILED, error=err.message, attempt=True)
            log.warning("voice.fetch_failed", event_id=row.event_id, error=err.message)
            return texts.voice_failed(f"I could not fetch it ({err.message})")
        if fetched is None:
            log.info("voice.not_queued", event_id=row.event_id, reason="deleted meanwhile")
            return None
        audio, mimetype = fetched
        began = time.monotonic()
        try:
            said = await self._transcriber.transcribe(audio, mimetype)
        except TranscriptionFailed as err:
            self._voices.set_voice(row.event_id, VoiceState.FAILED, error=err.message, attempt=True)
            log.warning("voice.transcribe_failed", event_id=row.event_id, error=err.message)
            return texts.voice_failed(err.message)
        text = heard(said)
        log.info(
            "voice.transcribed",
            event_id=row.event_id,
            seconds=round(time.monotonic() - began, 3),
            chars=len(text or ""),
            backend=self._transcriber.describe,
        )
        if text is None:
            self._voices.set_voice(row.event_id, VoiceState.FAILED, error="no words", attempt=True)
            return texts.VOICE_EMPTY
        # Kept before anything is shown or queued: a crash from here on re-hears the words,
        # not the audio.
        self._voices.set_voice(row.event_id, VoiceState.PENDING, transcript=text)
        await self._queue(row, text, audio)
        return None

    async def _queue(self, row: VoiceMessage, text: str, audio: Path | None) -> None:
        """Show the words back and queue them as if typed; the voice message is heard."""
        now = self._voices.voice(row.event_id)
        if now is None or now.state is not VoiceState.PENDING:
            # Deleted by the owner while it was being transcribed.
            log.info("voice.not_queued", event_id=row.event_id, reason="deleted meanwhile")
            return
        await self._outbox.post(
            row.room_id, echo(text), reply_to=row.event_id, notice=True, key=f"voice-{row.event_id}"
        )
        # Queued before it is marked heard: a crash in between re-hears it, and the queue's
        # event-id de-duplication makes that harmless.
        await self._intake.message(row.event_id, row.room_id, row.sender, text, row.origin_ts)
        self._voices.set_voice(row.event_id, VoiceState.HEARD, transcript=text, attempt=True)
        _delete_audio(self._voices, row, audio)

    async def _audio(self, row: VoiceMessage) -> tuple[Path, str] | None:
        """The decrypted audio: kept from an earlier attempt, or fetched now (its declared
        size checked before a byte moves); None when the owner deleted the message while
        its fetch waited."""
        info = row.content.get("info")
        mimetype = str((info or {}).get("mimetype") or "audio/ogg")
        if row.audio_path and Path(row.audio_path).is_file():
            return Path(row.audio_path), mimetype
        target = self._folder / audio_name(row)
        if target.is_file():
            # Saved whole (it is renamed into place only then) before a crash lost its note.
            self._voices.keep_voice_audio(row.event_id, str(target))
            return target, mimetype
        size = declared_size(row.content)
        if size is not None and size > self._max_file_bytes:
            raise AttachmentError(
                f"it is {human_size(size)}, over my {human_size(self._max_file_bytes)} limit"
            )
        log.info("voice.fetching", event_id=row.event_id, declared_size=size)
        received = await self._fetch(row, target)
        if received is None:
            return None
        self._voices.keep_voice_audio(row.event_id, str(received.path))
        return received.path, received.mimetype or mimetype

    async def _fetch(self, row: VoiceMessage, target: Path) -> Received | None:
        """Fetch the audio, trying again on `fetching`'s schedule while the homeserver fails
        it for now (a 502, no answer): the owner told once when it takes long; raises what
        no retry mends, and the last failure once it is given up on. None when the owner
        deleted the message meanwhile. The lane waits (later voice messages behind it, as
        they wait behind one being transcribed); the sync loop does not."""
        since, tries, told = self._clock(), 0, False
        while True:
            try:
                return await receive_file(
                    self._client, row.content, target, self._max_file_bytes, below=self._folder
                )
            except HomeserverError as err:
                if failure_outcome(err) is Outcome.REFUSE:
                    raise
                tries += 1
                retry_after = err.retry_after_s if isinstance(err, FetchFailed) else None
                decision = after_failure(tries, self._clock() - since, told, retry_after)
                if decision.next is Next.GIVE_UP:
                    raise
                if decision.next is Next.WAIT_AND_TELL:
                    told = True
                    await self._outbox.post(
                        row.room_id,
                        texts.voice_still_fetching(err.message),
                        reply_to=row.event_id,
                        notice=True,
                        key=f"voice-wait-{row.event_id}",
                    )
                log.info(
                    "voice.fetch_retry",
                    event_id=row.event_id,
                    tries=tries,
                    wait_s=decision.wait_s,
                    error=err.message,
                )
                await self._sleep(decision.wait_s)
            now = self._voices.voice(row.event_id)
            if now is None or now.state is not VoiceState.PENDING:
                return None


def audio_name(row: VoiceMessage) -> str:
    """The file a voice message's audio is saved as: one per event, so a message fetched
    again after a crash replaces its own file rather than adding a copy."""
    digest = hashlib.sha256(row.event_id.encode()).hexdigest()[:24]
    return digest + Path(file_name(row.content)).suffix


def _delete_audio(voices: VoiceMessages, row: VoiceMessage, audio: Path | None = None) -> None:
    path = audio or (Path(row.audio_path) if row.audio_path else None)
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    voices.forget_voice_audio(row.event_id)


__all__ = ["Hearing", "VoiceInbox"]
