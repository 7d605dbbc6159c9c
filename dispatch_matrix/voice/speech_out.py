"""Speech out (off by default): the answer to a task that began as a voice message also
goes back as one — an encrypted `m.audio` with the voice flag and its duration — beside the
text answer, never instead of it.

It starts once the text answer is posted and runs beside the queue: the worker never waits
for it, and a TTS server that fails costs a line in the log, not the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.core.logs import REDACTOR
from dispatch_matrix.matrix.attachments import AttachmentError, upload_file
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.outbox import Outbox
from dispatch_matrix.store import Task
from dispatch_matrix.voice import ogg
from dispatch_matrix.voice.config import VoiceSection
from dispatch_matrix.voice.content import sniff, spoken, voice_content
from dispatch_matrix.voice.speech import SpeechClient, SpeechFailed
from dispatch_matrix.voice.tables import VoiceMessages, VoiceState

log = logs.get(__name__)

VOICE_ANSWER_BODY = "Voice answer"


class SpeechOut:
    """Speaks the answers of voice tasks through a TTS server."""

    def __init__(
        self,
        client: MatrixClient,
        voices: VoiceMessages,
        outbox: Outbox,
        speech: SpeechClient,
        *,
        max_chars: int,
        max_file_bytes: int,
        folder: Path,
    ) -> None:
        self._client = client
        self._voices = voices
        self._outbox = outbox
        self._speech = speech
        self._max_chars = max_chars
        self._max_file_bytes = max_file_bytes
        self._folder = folder
        self._jobs: set[asyncio.Task[None]] = set()

    def answered(self, task: Task, text: str) -> None:
        """The worker posted a task's answer: speak it too if the task began as voice."""
        voice = self._voices.voice(task.event_id)
        if voice is None or voice.state is not VoiceState.HEARD:
            return
        job = asyncio.create_task(self._speak(task, text), name=f"speak-{task.id}")
        self._jobs.add(job)
        job.add_done_callback(self._done)

    def _done(self, job: asyncio.Task[None]) -> None:
        self._jobs.discard(job)
        if not job.cancelled() and job.exception() is not None:
            log.error("voice.speech_crashed", error=repr(job.exception()))

    async def _speak(self, task: Task, text: str) -> None:
        # The TTS server is outside: it hears only what the room may read.
        words = spoken(REDACTOR.text(text), self._max_chars)
        if not words:
            return
        try:
            audio = await self._speech.speak(words)
        except SpeechFailed as err:
            log.warning("voice.speech_failed", task=task.short_id, error=err.message)
            return
        mimetype, ext = sniff(audio)
        duration = ogg.duration_ms(audio)
        self._folder.mkdir(parents=True, exist_ok=True)
        path = self._folder / f"answer-{task.id}.{ext}"
        await asyncio.to_thread(path.write_bytes, audio)
        try:
            uploaded = await upload_file(
                self._client, path, self._max_file_bytes, VOICE_ANSWER_BODY, name=path.name
            )
        except (AttachmentError, HomeserverError) as err:
            log.warning("voice.speech_not_sent", task=task.short_id, error=err.message)
            return
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if duration is None:
            # Not a clip a phone can draw as a voice message: send it as plain audio.
            log.warning("voice.speech_unmeasured", task=task.short_id, mimetype=mimetype)
            content = dict(uploaded)
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": task.event_id}}
        else:
            content = voice_content(
                uploaded,
                duration_ms=duration,
                waveform=ogg.waveform(audio),
                body=VOICE_ANSWER_BODY,
                reply_to=task.event_id,
            )
        await self._outbox.send_event(
            task.room_id, "m.room.message", content, task_id=task.id, key=f"t{task.id}.voice"
        )
        log.info(
            "voice.spoken",
            task=task.short_id,
            duration_ms=duration,
            size=len(audio),
            mimetype=mimetype,
            chars=len(words),
        )


def build_speech_out(
    section: VoiceSection,
    client: MatrixClient,
    voices: VoiceMessages,
    outbox: Outbox,
    *,
    max_file_bytes: int,
    folder: Path,
) -> SpeechOut | None:
    """Speech out as [voice] configures it; None when it is off."""
    if not section.speech or section.tts_endpoint is None:
        return None
    speech = SpeechClient(
        section.tts_endpoint,
        section.speech_model,
        section.speech_voice,
        api_key=section.secret_api_key(),
        timeout_s=section.timeout_s,
    )
    return SpeechOut(
        client,
        voices,
        outbox,
        speech,
        max_chars=section.speech_max_chars,
        max_file_bytes=max_file_bytes,
        folder=folder,
    )
