"""The voice path's edges without a homeserver: its ledger, the endpoint backends against a
stand-in server on loopback, the local backend and what `doctor` says about each."""

from __future__ import annotations

import importlib.machinery
import sqlite3
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_voice_api import FakeVoiceAPI
from pydantic import SecretStr

from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.store import Database
from dispatch_matrix.store.db import _MIGRATIONS
from dispatch_matrix.voice.config import VoiceSection
from dispatch_matrix.voice.doctor import voice_checks
from dispatch_matrix.voice.speech import SpeechClient, SpeechFailed
from dispatch_matrix.voice.tables import VoiceMessages, VoiceState
from dispatch_matrix.voice.transcribe import (
    EndpointTranscriber,
    LocalTranscriber,
    TranscriptionFailed,
    error_reason,
    load_local,
    parse_transcription,
)

DATA = Path(__file__).parent / "data"
VOICE = DATA / "voice.ogg"

# -- the ledger ----------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database.open(tmp_path / "ledger.db")
    yield database
    database.close()


@pytest.fixture
def voices(db: Database) -> VoiceMessages:
    return VoiceMessages(db)


def test_a_voice_message_is_recorded_once_and_moves_on(voices: VoiceMessages) -> None:
    room, event = RoomID("!r:x"), EventID("$v1")
    content = {"msgtype": "m.audio", "file": {"url": "mxc://x/y"}}
    first = voices.add_voice(event, room, UserID("@me:x"), 1000, content)
    assert first.state is VoiceState.PENDING and first.content == content
    again = voices.add_voice(event, room, UserID("@me:x"), 1000, {"other": 1})
    assert again.content == content
    voices.set_voice(event, VoiceState.PENDING, audio_path="/s/voice/a.ogg")
    voices.set_voice(event, VoiceState.FAILED, error="down", attempt=True)
    row = voices.voice(event)
    assert row is not None and row.audio_path == "/s/voice/a.ogg" and row.attempts == 1
    assert (
        voices.latest_failed_voice(room) == row
        and voices.latest_failed_voice(RoomID("!o:x")) is None
    )
    voices.set_voice(event, VoiceState.HEARD, transcript="hi", attempt=True)
    voices.forget_voice_audio(event)
    row = voices.voice(event)
    assert row is not None and row.state is VoiceState.HEARD and row.transcript == "hi"
    assert row.audio_path is None and row.error is None and voices.latest_failed_voice(room) is None


def test_the_newest_failure_is_retried_first(voices: VoiceMessages) -> None:
    room = RoomID("!r:x")
    for name in ("$a", "$b"):
        voices.add_voice(EventID(name), room, UserID("@me:x"), 1, {})
        voices.set_voice(name, VoiceState.FAILED, error="down")
    latest = voices.latest_failed_voice(room)
    assert latest is not None and latest.event_id == "$b"


def test_a_deleted_voice_message_stays_deleted_and_pending_ones_come_oldest_first(
    voices: VoiceMessages,
) -> None:
    room = RoomID("!r:x")
    for name in ("$one", "$two", "$three"):
        voices.add_voice(EventID(name), room, UserID("@me:x"), 1, {})
    voices.set_voice("$one", VoiceState.DROPPED, error="message deleted")
    voices.set_voice("$one", VoiceState.FAILED, error="down", attempt=True)
    row = voices.voice("$one")
    assert row is not None and row.state is VoiceState.DROPPED and row.attempts == 0
    first = voices.next_pending_voice()
    assert first is not None and first.event_id == "$two"
    voices.set_voice("$two", VoiceState.HEARD, transcript="hi")
    second = voices.next_pending_voice()
    assert second is not None and second.event_id == "$three"


def test_the_voice_table_is_a_new_migration_step(tmp_path: Path) -> None:
    Database.open(tmp_path / "l.db").close()
    conn = sqlite3.connect(tmp_path / "l.db")
    # Every step ran (the voice table is step 8 of them), and the table is there, empty.
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(_MIGRATIONS) >= 8
    assert "CREATE TABLE voice_messages" in _MIGRATIONS[7]
    assert conn.execute("SELECT COUNT(*) FROM voice_messages").fetchone()[0] == 0


# -- the endpoint backends, against a stand-in server --------------------------------------


@pytest.fixture
def server() -> Iterator[FakeVoiceAPI]:
    with FakeVoiceAPI(require_key="unit-key-123") as fake:
        yield fake


def endpoint(
    server: FakeVoiceAPI, key: str | None = "unit-key-123", timeout: float = 5
) -> EndpointTranscriber:
    return EndpointTranscriber(
        server.url,
        "whisper-1",
        language="de",
        api_key=SecretStr(key) if key else None,
        timeout_s=timeout,
    )


async def test_the_endpoint_posts_an_openai_style_multipart_request(server: FakeVoiceAPI) -> None:
    server.transcript("Hallo Welt")
    assert await endpoint(server).transcribe(VOICE, "audio/ogg") == "Hallo Welt"
    (request,) = server.transcriptions
    assert request.file == VOICE.read_bytes() and request.filename == "voice.ogg"
    assert request.content_type == "audio/ogg" and request.model == "whisper-1"
    assert request.language == "de" and request.authorization == "Bearer unit-key-123"


@pytest.mark.parametrize(
    ("script", "words"),
    [
        ({"fail": 503}, "HTTP 503: scripted failure"),
        ({"key": "wrong-key-456"}, "HTTP 401: Incorrect API key"),
        ({"down": True}, "unreachable (connection refused)"),
        ({"delay": 2.0, "timeout": 0.3}, "did not answer within 0.3 s"),
    ],
)
async def test_an_endpoint_failure_is_one_clear_error(
    server: FakeVoiceAPI, script: dict[str, Any], words: str
) -> None:
    if "fail" in script:
        server.fail(script["fail"])
    if script.get("down"):
        server.down()
    server.delay_s = script.get("delay", 0.0)
    transcriber = endpoint(server, script.get("key", "unit-key-123"), script.get("timeout", 5))
    with pytest.raises(TranscriptionFailed) as caught:
        await transcriber.transcribe(VOICE, "audio/ogg")
    assert words in caught.value.message and "unit-key" not in caught.value.message
    assert "wrong-key" not in caught.value.message


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b'{"text": " hi "}', "application/json", " hi "),
        (b'{"text": "", "segments": []}', "application/json", ""),
        (b"plain words", "text/plain", "plain words"),
        (b'{"text": "json without the header"}', "text/plain", "json without the header"),
    ],
)
def test_parse_transcription(body: bytes, content_type: str, expected: str) -> None:
    assert parse_transcription(body, content_type) == expected


@pytest.mark.parametrize("body", [b'{"segments": []}', b"{not json", b'{"text": 5}'])
def test_a_transcription_reply_without_text_is_an_error(body: bytes) -> None:
    with pytest.raises(TranscriptionFailed):
        parse_transcription(body, "application/json")


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (500, b'{"error": {"message": "model not loaded"}}', "HTTP 500: model not loaded"),
        (422, b'{"detail": "bad file"}', "HTTP 422: bad file"),
        (502, b"<html>Bad Gateway</html>", "HTTP 502: <html>Bad Gateway</html>"),
        (503, b"", "HTTP 503"),
    ],
)
def test_error_reason(status: int, body: bytes, expected: str) -> None:
    assert error_reason(status, body) == expected


async def test_speech_asks_for_opus_and_returns_the_audio(server: FakeVoiceAPI) -> None:
    server.speech_audio = (DATA / "answer.ogg").read_bytes()
    client = SpeechClient(
        server.url, "tts-1", "alloy", api_key=SecretStr("unit-key-123"), timeout_s=5
    )
    assert await client.speak("Two files.") == server.speech_audio
    assert server.speeches[0].body == {
        "model": "tts-1",
        "input": "Two files.",
        "voice": "alloy",
        "response_format": "opus",
    }
    server.down()
    with pytest.raises(SpeechFailed, match="connection refused"):
        await client.speak("again")


# -- the local backend: what the doctor and the bot say when something is missing ----------


def test_a_missing_local_model_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(TranscriptionFailed) as caught:
        load_local("faster-whisper", tmp_path / "nope")
    assert "does not exist" in caught.value.message
    assert "download_model" in (caught.value.fix or "")


@pytest.mark.parametrize(
    ("engine", "module"), [("faster-whisper", "faster_whisper"), ("whispercpp", "pywhispercpp")]
)
def test_a_local_engine_that_is_not_installed_says_how_to_install_it(
    tmp_path: Path, engine: str, module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever this machine has, the engine is absent here.
    monkeypatch.setitem(sys.modules, module, None)
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights")
    with pytest.raises(TranscriptionFailed) as caught:
        load_local(engine, model)
    assert "not installed" in caught.value.message
    assert "pip install 'dispatch-matrix[voice-" in (caught.value.fix or "")


def fake_faster_whisper(texts: list[str]) -> types.ModuleType:
    """A stand-in for the faster_whisper package (this machine cannot download a model)."""
    module = types.ModuleType("faster_whisper")
    module.__spec__ = importlib.machinery.ModuleSpec("faster_whisper", None)

    class Segment:
        def __init__(self, text: str) -> None:
            self.text = text

    class WhisperModel:
        def __init__(self, path: str, device: str, compute_type: str) -> None:
            if Path(path).read_bytes() != b"weights":
                raise RuntimeError("Unable to open file 'model.bin'")
            self.path = path

        def transcribe(self, audio: str, language: str | None, vad_filter: bool) -> tuple[Any, Any]:
            assert Path(audio).is_file() and language == "en" and vad_filter
            return iter(Segment(t) for t in texts), None

    module.WhisperModel = WhisperModel  # type: ignore[attr-defined]
    return module


async def test_a_local_model_loads_once_and_transcribes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "faster_whisper", fake_faster_whisper([" Turn", " it off."]))
    model = tmp_path / "model"
    model.write_bytes(b"weights")
    local = LocalTranscriber("faster-whisper", model, language="en", timeout_s=5)
    assert await local.transcribe(VOICE, "audio/ogg") == " Turn it off."
    model.write_bytes(b"corrupt")  # loaded once: the second call does not read it again
    assert await local.transcribe(VOICE, "audio/ogg") == " Turn it off."
    with pytest.raises(TranscriptionFailed, match="could not be loaded"):
        load_local("faster-whisper", model)


def section(**values: Any) -> VoiceSection:
    return VoiceSection(**values)


def test_doctor_says_voice_is_off_and_how_to_turn_it_on() -> None:
    (line,) = voice_checks(section())
    assert line.ok and 'backend = "endpoint"' in line.what


def test_doctor_checks_the_local_engine_and_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    missing = voice_checks(section(backend="local", local_model=tmp_path / "m"))
    # find_spec of a module set to None in sys.modules raises; doctor must not.
    assert [c.ok for c in missing] == [False] and "not installed" in missing[0].what
    monkeypatch.setitem(sys.modules, "faster_whisper", fake_faster_whisper([]))
    absent = voice_checks(section(backend="local", local_model=tmp_path / "m"))
    assert [c.ok for c in absent] == [True, False] and "download_model" in absent[1].fix
    (tmp_path / "m").write_bytes(b"weights")
    loads = voice_checks(section(backend="local", local_model=tmp_path / "m"))
    assert [c.ok for c in loads] == [True, True] and "loads" in loads[1].what
    (tmp_path / "m").write_bytes(b"corrupt")
    broken = voice_checks(section(backend="local", local_model=tmp_path / "m"))
    assert [c.ok for c in broken] == [True, False] and "could not be loaded" in broken[1].what


def test_doctor_checks_the_endpoint(server: FakeVoiceAPI) -> None:
    (up,) = voice_checks(section(backend="endpoint", endpoint=server.url))
    assert up.ok and server.url in up.what
    server.down()
    (down,) = voice_checks(section(backend="endpoint", endpoint=server.url, speech=False))
    assert not down.ok and "unreachable" in down.what and "endpoint" in down.fix
