"""Transcription backends: an OpenAI-style server (`endpoint`) or a model on this computer
(`local`). Both run off the event loop and within a timeout; every failure is one
`TranscriptionFailed` whose message a person can act on (it never holds the key).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import aiohttp
from pydantic import SecretStr

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import DispatchError
from dispatch_matrix.voice.config import VoiceSection

log = logs.get(__name__)

TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
INSTALL_FASTER_WHISPER = "pip install 'dispatch-matrix[voice-local]'"
INSTALL_WHISPERCPP = "pip install 'dispatch-matrix[voice-whispercpp]' (and ffmpeg on PATH)"


class TranscriptionFailed(DispatchError):
    """No transcript came back: the backend is down, refused, timed out or is missing."""


class Transcriber(Protocol):
    """Turns a saved audio file into the words spoken in it."""

    @property
    def describe(self) -> str:
        """What does the listening, for logs and `doctor`."""
        ...

    async def transcribe(self, audio: Path, mimetype: str) -> str: ...


def parse_transcription(body: bytes, content_type: str) -> str:
    """The text of a transcription response: JSON `{"text": …}` or, for
    `response_format=text` servers, the body itself."""
    raw = body.decode("utf-8", errors="replace")
    if "json" not in content_type and not raw.lstrip().startswith("{"):
        return raw
    try:
        parsed = json.loads(raw)
    except ValueError as err:
        raise TranscriptionFailed("the transcription server sent a reply I cannot read") from err
    if isinstance(parsed, dict) and isinstance(parsed.get("text"), str):
        return str(parsed["text"])
    raise TranscriptionFailed("the transcription server's reply has no text in it")


def error_reason(status: int, body: bytes) -> str:
    """A short reason from an error reply: its `error.message` if it has one."""
    try:
        parsed = json.loads(body)
        error = parsed.get("error") if isinstance(parsed, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
        detail = str(message or parsed.get("detail") or "")
    except (ValueError, AttributeError):
        detail = body.decode("utf-8", errors="replace")
    detail = " ".join(detail.split())[:160]
    return f"HTTP {status}" + (f": {detail}" if detail else "")


def why(err: aiohttp.ClientError) -> str:
    """A connection failure in a few words."""
    if isinstance(err, aiohttp.ClientConnectorError):
        if isinstance(err.os_error, ConnectionRefusedError):
            return "connection refused"
        return err.os_error.strerror or err.os_error.__class__.__name__
    return err.__class__.__name__


class EndpointTranscriber:
    """An OpenAI-style `POST ENDPOINT/v1/audio/transcriptions` (multipart `file`, `model`,
    optional `language`), as faster-whisper and whisper.cpp servers and hosted APIs speak."""

    def __init__(
        self,
        endpoint: str,
        model: str,
        *,
        language: str | None,
        api_key: SecretStr | None,
        timeout_s: float,
    ) -> None:
        self._url = endpoint + TRANSCRIPTIONS_PATH
        self._endpoint = endpoint
        self._model = model
        self._language = language
        self._key = api_key
        self._timeout_s = timeout_s

    @property
    def describe(self) -> str:
        return f"the transcription server at {self._endpoint}"

    async def transcribe(self, audio: Path, mimetype: str) -> str:
        data = await asyncio.to_thread(audio.read_bytes)
        form = aiohttp.FormData()
        form.add_field(
            "file", data, filename=audio.name, content_type=mimetype or "application/octet-stream"
        )
        form.add_field("model", self._model)
        if self._language:
            form.add_field("language", self._language)
        form.add_field("response_format", "json")
        headers = {"Authorization": f"Bearer {self._key.get_secret_value()}"} if self._key else {}
        timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(self._url, data=form, headers=headers) as response,
            ):
                body = await response.read()
                if response.status != 200:
                    raise TranscriptionFailed(
                        f"{self.describe} refused it ({error_reason(response.status, body)})"
                    )
                return parse_transcription(body, response.content_type)
        except TimeoutError:
            raise TranscriptionFailed(
                f"{self.describe} did not answer within {self._timeout_s:g} s"
            ) from None
        except aiohttp.ClientError as err:
            raise TranscriptionFailed(f"{self.describe} is unreachable ({why(err)})") from err


def local_howto(engine: str) -> str:
    """How to get the local engine and its model, once."""
    if engine == "whispercpp":
        return (
            f"{INSTALL_WHISPERCPP}; download a ggml model once with whisper.cpp's "
            "`models/download-ggml-model.sh base.en` and set [voice] local_model to the "
            "ggml-base.en.bin it writes"
        )
    return (
        f'{INSTALL_FASTER_WHISPER}; download a model once with `python -c "from '
        "faster_whisper import download_model; print(download_model('small', "
        "output_dir='whisper-small'))\"` and set [voice] local_model to that folder"
    )


Run = Callable[[Path, str | None], str]


def load_local(engine: str, model: Path) -> Run:
    """Load the local model (seconds; call it off the event loop); returns a function that
    transcribes one file. Raises TranscriptionFailed saying what is missing."""
    if not model.exists():
        raise TranscriptionFailed(
            f"the local model {model} does not exist", fix=local_howto(engine)
        )
    try:
        if engine == "whispercpp":
            return _load_whispercpp(model)
        return _load_faster_whisper(model)
    except ImportError as err:
        raise TranscriptionFailed(
            f"{engine} is not installed ({err.name or err})", fix=local_howto(engine)
        ) from err
    except (RuntimeError, ValueError, OSError) as err:
        # What the engines raise for a model they cannot read (wrong format, truncated).
        raise TranscriptionFailed(
            f"the local model {model} could not be loaded ({err.__class__.__name__}: {err})",
            fix=local_howto(engine),
        ) from err


def _load_faster_whisper(model: Path) -> Run:
    from faster_whisper import WhisperModel

    whisper = WhisperModel(str(model), device="cpu", compute_type="int8")

    def run(audio: Path, language: str | None) -> str:
        segments, _info = whisper.transcribe(str(audio), language=language, vad_filter=True)
        return "".join(segment.text for segment in segments)

    return run


def _load_whispercpp(model: Path) -> Run:
    from pywhispercpp.model import Model

    whisper = Model(str(model), redirect_whispercpp_logs_to=None)

    def run(audio: Path, language: str | None) -> str:
        segments = whisper.transcribe(str(audio), language=language or "auto")
        return "".join(segment.text for segment in segments)

    return run


class LocalTranscriber:
    """A Whisper model on this computer, through an optional extra; loaded on first use."""

    def __init__(self, engine: str, model: Path, *, language: str | None, timeout_s: float):
        self._engine = engine
        self._model = model
        self._language = language
        self._timeout_s = timeout_s
        self._run: Run | None = None
        # One transcription at a time: the model is not shared across threads safely.
        self._lock = threading.Lock()

    @property
    def describe(self) -> str:
        return f"the local {self._engine} model {self._model}"

    def _load(self) -> Run:
        with self._lock:
            if self._run is None:
                self._run = load_local(self._engine, self._model)
                log.info("voice.local_model_loaded", engine=self._engine, model=str(self._model))
            return self._run

    def _transcribe_now(self, run: Run, audio: Path) -> str:
        with self._lock:
            return run(audio, self._language)

    async def transcribe(self, audio: Path, mimetype: str) -> str:
        # Loading (once, seconds from disk) is not counted against the timeout; a
        # transcription is. Its thread cannot be stopped: on a timeout it finishes in the
        # background and its result is dropped, while the owner hears about it at once.
        run = await asyncio.to_thread(self._load)
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._transcribe_now, run, audio), self._timeout_s
            )
        except TimeoutError:
            raise TranscriptionFailed(
                f"{self.describe} took longer than {self._timeout_s:g} s"
            ) from None


def build_transcriber(section: VoiceSection) -> Transcriber | None:
    """The configured backend; None when voice is off."""
    if section.backend == "endpoint" and section.endpoint:
        return EndpointTranscriber(
            section.endpoint,
            section.model,
            language=section.language,
            api_key=section.secret_api_key(),
            timeout_s=section.timeout_s,
        )
    if section.backend == "local" and section.local_model is not None:
        return LocalTranscriber(
            section.local_engine,
            section.local_model.expanduser(),
            language=section.language,
            timeout_s=section.timeout_s,
        )
    return None
