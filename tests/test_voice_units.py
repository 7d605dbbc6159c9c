"""The voice path's pure decisions (table tests), its Ogg reader and its config — no I/O
beyond reading the shipped test clips and a config file."""

from __future__ import annotations

import io
import wave
from pathlib import Path
from typing import Any

import pytest
from nio import Event

from dispatch_matrix.app.config import load_config
from dispatch_matrix.core.errors import ConfigError
from dispatch_matrix.core.ids import RoomID
from dispatch_matrix.matrix.inbound import Message, from_event
from dispatch_matrix.voice import ogg
from dispatch_matrix.voice.config import base_url
from dispatch_matrix.voice.content import (
    declared_size,
    echo,
    heard,
    sniff,
    spoken,
    voice_content,
)
from dispatch_matrix.voice.transcribe import (
    build_transcriber,
)

DATA = Path(__file__).parent / "data"
VOICE = DATA / "voice.ogg"

# -- which message is a voice message (read by the router from the event) --------------------

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
        ({"msgtype": "m.text", "body": "hi"}, False),
    ],
)
def test_a_voice_message_is_told_from_the_event_alone(
    content: dict[str, Any], expected: bool
) -> None:
    audio = {"url": "mxc://hs/clip", "info": {"mimetype": "audio/ogg"}}
    wire = {
        "type": "m.room.message",
        "event_id": "$v",
        "sender": "@owner:hs",
        "origin_server_ts": 1,
        "content": {"body": "Voice message", **audio, **content},
    }
    message = from_event(RoomID("!r:hs"), Event.parse_event(wire))
    assert isinstance(message, Message)
    assert message.voice is expected


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
        "First sentence here. Second sentence is longer than that. The rest is in the text answer."
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
