"""The voice path's pure decisions (table tests), its config, its ledger, its Ogg reader, and
its backends against a stand-in server on loopback — all without a homeserver."""

from __future__ import annotations

import importlib.machinery
import io
import sqlite3
import sys
import types
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_voice_api import FakeVoiceAPI
from pydantic import SecretStr

from dispatch_matrix.config import load_config
from dispatch_matrix.errors import ConfigError
from dispatch_matrix.ids import EventID, RoomID, UserID
from dispatch_matrix.store import Database
from dispatch_matrix.store.voice import VoiceState
from dispatch_matrix.voice import ogg
from dispatch_matrix.voice.config import VoiceSection, base_url
from dispatch_matrix.voice.content import (
    declared_size,
    echo,
    heard,
    is_voice,
    sniff,
    spoken,
    voice_content,
)
from dispatch_matrix.voice.doctor import voice_checks
from dispatch_matrix.voice.speech import SpeechClient, SpeechFailed
from dispatch_matrix.voice.transcribe import (
    EndpointTranscriber,
    LocalTranscriber,
    TranscriptionFailed,
    build_transcriber,
    error_reason,
    load_local,
    parse_transcription,
)

DATA = Path(__file__).parent / "data"
VOICE = DATA / "voice.ogg"

# -- which message is a voice message ------------------------------------------------------

VOICE_FLAG = {"org.matrix.msc3245.voice": {}}
AUDIO_BLOCK = {"org.matrix.msc1767.audio": {"duration": 1000}}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"msgtype": "m.audio", **VOICE_FLAG, **AUDIO_BLOCK}, True),  # Element
        ({"msgtype": "m.audio", **VOICE_FLAG}, True),
        ({"msgtype": "m.audio", **AUDIO_BLOCK}, True),
        ({"msgtype": "m.audio", "body": "song.mp3"}, False),  # an audio file to keep
        ({"msgtype": "m.file", **VOICE_FLAG}, False),
        ({"msgtype": "m.text", "body": "hi", **VOICE_FLAG}, False),
        ({}, False),
    ],
)
def test_is_voice(content: dict[str, Any], expected: bool) -> None:
    assert is_voice(content) is expected


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"info": {"size": 4469}}, 4469),
        ({"info": {"size": 0}}, 0),
        ({"info": {}}, None),
        ({}, None),
        ({"info": {"size": "4469"}}, None),
        ({"info": {"size": -1}}, None),
        ({"info": {"size": True}}, None),
        ({"info": "big"}, None),
    ],
)
def test_declared_size(content: dict[str, Any], expected: int | None) -> None:
    assert declared_size(content) == expected


# -- whether a transcript holds words ------------------------------------------------------


@pytest.mark.parametrize(
    ("transcript", "expected"),
    [
        (" List the files in my work folder. ", "List the files in my work folder."),
        ("list\n  the   files", "list the files"),
        ("", None),
        ("   ", None),
        ("[BLANK_AUDIO]", None),
        (" [ Silence ] ", None),
        ("(music)", None),
        ("(upbeat music)", None),
        ("(sent from my phone) hi", "(sent from my phone) hi"),
        ("...", None),
        ("<|nospeech|>", None),
        ("[BLANK_AUDIO] turn the lights off", "turn the lights off"),
        ("Grüß dich", "Grüß dich"),
        ("42", "42"),
    ],
)
def test_heard(transcript: str, expected: str | None) -> None:
    assert heard(transcript) == expected


def test_echo_quotes_the_transcript_and_shortens_a_very_long_one() -> None:
    assert echo("hello") == '🎙️ "hello"'
    long = echo("word " * 1000, width=100)
    assert long.startswith('🎙️ "word') and long.endswith('…"') and len(long) < 120


# -- what of an answer is spoken -----------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("Done.", "Done."),
        ("**Two** files: `a.txt` and _b_.", "Two files: a.txt and _b_."),
        ("# Result\n\n- one\n- two", "Result one two"),
        ("See [the docs](https://example.org/x).", "See the docs."),
        ("Open https://example.org/very/long?x=1 now", "Open a link now"),
        (
            "Run this:\n```bash\nrm -rf /tmp/x\n```\nthen wait.",
            "Run this: (code in the text answer) then wait.",
        ),
        ("> quoted ~~old~~ text", "quoted old text"),
        ("snake_case_name stays", "snake_case_name stays"),
    ],
)
def test_spoken(markdown: str, expected: str) -> None:
    assert spoken(markdown, 500) == expected


def test_spoken_cuts_a_long_answer_at_a_sentence_end() -> None:
    text = "First sentence here. Second sentence is longer than that. Third one."
    assert spoken(text, 60) == (
        "First sentence here. Second sentence is longer than that. "
        "The rest is in the text answer."
    )
    assert spoken("word " * 100, 50).endswith("… The rest is in the text answer.")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"OggS\x00\x02", ("audio/ogg", "ogg")),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", ("audio/wav", "wav")),
        (b"ID3\x04", ("audio/mpeg", "mp3")),
        (b"\xff\xfb\x90", ("audio/mpeg", "mp3")),
        (b"fLaC", ("audio/flac", "flac")),
        (b'{"error": "no"}', ("application/octet-stream", "bin")),
    ],
)
def test_sniff(data: bytes, expected: tuple[str, str]) -> None:
    assert sniff(data) == expected


def test_voice_content_marks_an_upload_as_a_voice_reply() -> None:
    uploaded = {
        "msgtype": "m.file",
        "body": "x.ogg",
        "info": {"size": 9},
        "file": {"url": "mxc://a/b"},
    }
    content = voice_content(
        uploaded, duration_ms=2547, waveform=[0, 1024], body="Voice answer", reply_to="$e"
    )
    assert content["msgtype"] == "m.audio" and content["org.matrix.msc3245.voice"] == {}
    assert content["info"] == {"size": 9, "duration": 2547}
    assert content["org.matrix.msc1767.audio"] == {"duration": 2547, "waveform": [0, 1024]}
    assert content["m.relates_to"] == {"m.in_reply_to": {"event_id": "$e"}}
    assert content["file"] == {"url": "mxc://a/b"} and uploaded["info"] == {"size": 9}


# -- how long a clip lasts -----------------------------------------------------------------


def test_duration_of_the_shipped_ogg_opus_clips_matches_opusinfo() -> None:
    # opusinfo says 2.474 s and 2.547 s.
    assert ogg.duration_ms(VOICE.read_bytes()) == 2474
    assert ogg.duration_ms((DATA / "answer.ogg").read_bytes()) == 2547


def test_duration_of_a_wav_clip() -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(b"\x00\x00" * 24_000)
    assert ogg.duration_ms(buffer.getvalue()) == 1500


@pytest.mark.parametrize(
    "data",
    [b"", b"OggS", b"not audio at all", VOICE.read_bytes()[:40], b"RIFF\x00\x00\x00\x00WAVE"],
)
def test_duration_of_what_cannot_be_read_is_none(data: bytes) -> None:
    assert ogg.duration_ms(data) is None


def test_waveform_is_in_range_and_follows_the_sound() -> None:
    shape = ogg.waveform(VOICE.read_bytes())
    assert len(shape) == 40 and all(0 <= v <= 1024 for v in shape)
    assert max(shape) == 1024 and min(shape) == 0
    assert ogg.waveform(b"RIFF....WAVE") == []


# -- config --------------------------------------------------------------------------------

GOOD = """
[matrix]
homeserver = "https://matrix.example.org/"
user_id = "@bot:example.org"
password = "hunter2hunter2"
owners = ["@me:example.org"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000"),
        ("https://api.example.org/v1/", "https://api.example.org"),
        ("https://example.org/whisper", "https://example.org/whisper"),
    ],
)
def test_base_url(given: str, expected: str) -> None:
    assert base_url(given) == expected


def test_voice_is_off_by_default(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.voice.backend == "off" and not config.voice.speech
    assert build_transcriber(config.voice) is None


def test_the_key_comes_from_a_file_beside_the_config_or_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "voice.key").write_text("from-a-file-123\n")
    text = GOOD + (
        '[voice]\nbackend = "endpoint"\nendpoint = "http://127.0.0.1:9"\n'
        'api_key_file = "voice.key"\n'
    )
    config = load_config(write(tmp_path, text))
    key = config.voice.secret_api_key()
    assert key is not None and key.get_secret_value() == "from-a-file-123"
    assert "from-a-file" not in repr(config)
    monkeypatch.setenv("DISPATCH_VOICE__API_KEY", "from-the-environment")
    key = load_config(write(tmp_path, text)).voice.secret_api_key()
    assert key is not None and key.get_secret_value() == "from-the-environment"


@pytest.mark.parametrize(
    ("voice", "words"),
    [
        ('backend = "endpoint"', "needs endpoint"),
        ('backend = "local"', "needs local_model"),
        ('backend = "endpoint"\nendpoint = "localhost:8000"', "http(s) URL"),
        ("speech = true", "needs speech_endpoint"),
        ('backend = "whisper"', "off"),
        ('backend = "endpoint"\nendpoint = "http://x:1"\napi_key_file = "missing"', "cannot read"),
        ("endpiont = 3", "did you mean 'endpoint'"),
    ],
)
def test_config_mistakes_name_the_key_and_the_fix(tmp_path: Path, voice: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, GOOD + "[voice]\n" + voice + "\n"))
    assert caught.value.key.startswith("voice")
    assert words in caught.value.problem + (caught.value.fix or "")


# -- the ledger ----------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database.open(tmp_path / "ledger.db")
    yield database
    database.close()


def test_a_voice_message_is_recorded_once_and_moves_on(db: Database) -> None:
    room, event = RoomID("!r:x"), EventID("$v1")
    content = {"msgtype": "m.audio", "file": {"url": "mxc://x/y"}}
    first = db.add_voice(event, room, UserID("@me:x"), 1000, content)
    assert first.state is VoiceState.PENDING and first.content == content
    again = db.add_voice(event, room, UserID("@me:x"), 1000, {"other": 1})
    assert again.content == content
    db.set_voice(event, VoiceState.PENDING, audio_path="/s/voice/a.ogg")
    db.set_voice(event, VoiceState.FAILED, error="down", attempt=True)
    row = db.voice(event)
    assert row is not None and row.audio_path == "/s/voice/a.ogg" and row.attempts == 1
    assert db.latest_failed_voice(room) == row and db.latest_failed_voice(RoomID("!o:x")) is None
    db.set_voice(event, VoiceState.HEARD, transcript="hi", attempt=True)
    db.forget_voice_audio(event)
    row = db.voice(event)
    assert row is not None and row.state is VoiceState.HEARD and row.transcript == "hi"
    assert row.audio_path is None and row.error is None and db.latest_failed_voice(room) is None


def test_the_newest_failure_is_retried_first(db: Database) -> None:
    room = RoomID("!r:x")
    for name in ("$a", "$b"):
        db.add_voice(EventID(name), room, UserID("@me:x"), 1, {})
        db.set_voice(name, VoiceState.FAILED, error="down")
    latest = db.latest_failed_voice(room)
    assert latest is not None and latest.event_id == "$b"


def test_a_deleted_voice_message_stays_deleted_and_pending_ones_come_oldest_first(
    db: Database,
) -> None:
    room = RoomID("!r:x")
    for name in ("$one", "$two", "$three"):
        db.add_voice(EventID(name), room, UserID("@me:x"), 1, {})
    db.set_voice("$one", VoiceState.DROPPED, error="message deleted")
    db.set_voice("$one", VoiceState.FAILED, error="down", attempt=True)
    row = db.voice("$one")
    assert row is not None and row.state is VoiceState.DROPPED and row.attempts == 0
    first = db.next_pending_voice()
    assert first is not None and first.event_id == "$two"
    db.set_voice("$two", VoiceState.HEARD, transcript="hi")
    second = db.next_pending_voice()
    assert second is not None and second.event_id == "$three"


def test_the_voice_table_is_a_new_migration_step(tmp_path: Path) -> None:
    Database.open(tmp_path / "l.db").close()
    conn = sqlite3.connect(tmp_path / "l.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 8
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
