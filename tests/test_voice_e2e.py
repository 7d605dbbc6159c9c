"""Voice messages end to end: an encrypted voice message from the owner's strict js client,
through Synapse, transcribed by a stand-in OpenAI-style server on loopback (which checks the
multipart request), queued as the task, answered — and, with speech out on, answered aloud
as an encrypted voice message the owner's client decrypts."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import BotSetup, started
from fake_messages_api import FakeMessagesAPI
from fake_voice_api import FakeVoiceAPI
from harness.bot import BotProcess, console_script
from harness.jsclient import JsClient

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]
DATA = Path(__file__).parent / "data"
# "List the files in my work folder.", spoken by espeak-ng, Ogg/Opus as Element records it.
VOICE = (DATA / "voice.ogg").read_bytes()
VOICE_MS = 2474
# "Your work folder holds two files.": what the stand-in TTS answers with.
ANSWER = (DATA / "answer.ogg").read_bytes()
ANSWER_MS = 2547
KEY = "voice-test-key-5f1c9a7e"


@pytest.fixture
def fake_voice() -> Iterator[FakeVoiceAPI]:
    """A stand-in transcription + TTS server that insists on the key."""
    with FakeVoiceAPI(require_key=KEY) as server:
        yield server


def voice_config(server: FakeVoiceAPI, extra: str = "") -> str:
    return (
        f'\n[voice]\nbackend = "endpoint"\nendpoint = "{server.url}/v1"\nlanguage = "en"\n{extra}'
    )


async def start(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    running: list[BotProcess],
    extra: str,
) -> tuple[BotSetup, BotProcess, JsClient, str]:
    """A running bot whose voice key comes from the environment, its owner's strict
    cross-signed client, and their encrypted DM."""
    return await started(
        make_bot, owner_client, running, extra, env={"DISPATCH_VOICE__API_KEY": KEY}
    )


def reply_target(message: dict[str, Any]) -> str | None:
    relation = message["content"].get("m.relates_to") or {}
    return (relation.get("m.in_reply_to") or {}).get("event_id")


def asked(api: FakeMessagesAPI) -> list[str]:
    """The owner text each model request ended with."""
    return [
        r.body["messages"][-1]["content"][-1].get("text", "").splitlines()[-1] for r in api.requests
    ]


def fetched(bot: BotProcess, event_id: str) -> list[dict[str, Any]]:
    """The bot's record of starting to download a voice message's audio."""
    return [r for r in bot.log_events("voice.fetching") if r.get("event_id") == event_id]


async def test_an_encrypted_voice_message_becomes_a_task_and_its_transcript_and_answer_arrive(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    fake_voice: FakeVoiceAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await start(make_bot, owner_client, running, voice_config(fake_voice))
    fake_voice.transcript(" List the files in my work folder. ")
    fake_api.reply("Your work folder holds two files.")
    began = time.monotonic()
    sent = await owner.send_voice(room, VOICE, VOICE_MS)
    heard = await owner.wait_message(room, sender=setup.bot.user_id, contains="🎙️")
    heard_after = time.monotonic() - began
    assert heard["body"] == '🎙️ "List the files in my work folder."'
    assert heard["was_encrypted"] and reply_target(heard) == sent
    answer = await owner.wait_message(room, sender=setup.bot.user_id, contains="two files")
    answered_after = time.monotonic() - began
    assert answer["was_encrypted"] and reply_target(answer) == sent
    # The stand-in got the decrypted audio, as an OpenAI-style multipart request with the key.
    (request,) = fake_voice.transcriptions
    assert request.file == VOICE and request.content_type == "audio/ogg"
    assert request.filename.endswith(".ogg")
    assert (request.model, request.language) == ("whisper-1", "en")
    assert request.authorization == f"Bearer {KEY}"
    # The transcript is the task, exactly as if typed.
    assert asked(fake_api) == ["List the files in my work folder."]
    queued = await bot.wait_log("task.queued", where=lambda r: r["event_id"] == sent)
    assert len(queued) == 1
    assert fake_voice.speeches == [], "speech out is off by default"
    # The key never reaches the log; the decrypted audio does not outlive its transcript.
    assert KEY not in bot.log_file.read_text() and KEY not in "\n".join(bot.stdout + bot.stderr)
    assert [p for p in (setup.config.state / "voice").rglob("*") if p.is_file()] == []
    timing = bot.log_events("voice.transcribed")[0]
    # Shown with -s: the figures in the report.
    print(
        f"\nvoice figures: stand-in transcription {timing['seconds']}s; on the phone: "
        f"transcript after {heard_after:.2f}s, answer after {answered_after:.2f}s"
    )


async def test_a_backend_that_is_down_is_reported_and_retry_works_once_it_is_back(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    fake_voice: FakeVoiceAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await start(make_bot, owner_client, running, voice_config(fake_voice))
    bot_id = setup.bot.user_id
    fake_voice.down()
    sent = await owner.send_voice(room, VOICE, VOICE_MS)
    down = await owner.wait_message(room, sender=bot_id, contains="could not transcribe")
    assert "unreachable (connection refused)" in down["body"] and "`!retry`" in down["body"]
    assert reply_target(down) == sent
    assert fake_api.requests == [] and bot.log_events("task.queued") == []
    # Back, but it hears only silence: said in one line, still nothing queued.
    fake_voice.up()
    fake_voice.transcript(" [BLANK_AUDIO] ")
    retry = await owner.send_text(room, "!retry")
    again = await owner.wait_message(room, sender=bot_id, contains="Listening to your voice")
    assert reply_target(again) == retry
    empty = await owner.wait_message(room, sender=bot_id, contains="no words")
    assert reply_target(empty) == sent
    assert bot.log_events("task.queued") == []
    # And then it hears: the transcript is shown, queued and answered.
    fake_voice.transcript("What time is it?")
    fake_api.reply("It is noon.")
    await owner.send_text(room, "!retry")
    heard = await owner.wait_message(room, sender=bot_id, contains='🎙️ "What time')
    assert reply_target(heard) == sent
    answer = await owner.wait_message(room, sender=bot_id, contains="It is noon.")
    assert reply_target(answer) == sent
    assert asked(fake_api) == ["What time is it?"]
    # The audio was fetched once and kept for the retries, which sent the same bytes.
    assert len(fetched(bot, sent)) == 1
    assert [t.file for t in fake_voice.transcriptions] == [VOICE, VOICE]


async def test_an_audio_file_over_the_size_limit_is_refused_before_download(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    fake_voice: FakeVoiceAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await start(make_bot, owner_client, running, voice_config(fake_voice))
    sent = await owner.send_voice(room, VOICE, VOICE_MS, declared_size=60 * 1024 * 1024)
    refused = await owner.wait_message(room, sender=setup.bot.user_id, contains="could not take")
    assert "60.0 MB" in refused["body"] and "50.0 MB limit" in refused["body"]
    assert reply_target(refused) == sent
    assert bot.log_events("voice.refused")[0]["event_id"] == sent
    assert fetched(bot, sent) == [], "refused before a byte was downloaded"
    assert fake_voice.transcriptions == [] and fake_api.requests == []


async def test_a_voice_message_from_an_untrusted_device_is_never_downloaded(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    fake_voice: FakeVoiceAPI,
    running: list[BotProcess],
) -> None:
    """A thief with the owner's password logs in a device the owner never cross-signed."""
    setup, bot, owner, room = await start(make_bot, owner_client, running, voice_config(fake_voice))
    thief = await owner_client(setup.owner, strict=False, cross_sign=False, name="thief")
    sent = await thief.send_voice(room, VOICE, VOICE_MS)
    ignored = await bot.wait_log("message.ignored", where=lambda r: r["event_id"] == sent)
    assert ignored[0]["reason"] == "device not cross-signed by its owner"
    notice = await owner.wait_message(room, sender=setup.bot.user_id, contains="ignored")
    assert "not cross-signed" in notice["body"]
    assert fetched(bot, sent) == [] and bot.log_events("voice.transcribed") == []
    assert fake_voice.transcriptions == [] and fake_api.requests == []


async def test_voice_is_off_by_default_and_says_how_to_turn_it_on(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await start(make_bot, owner_client, running, "")
    sent = await owner.send_voice(room, VOICE, VOICE_MS)
    off = await owner.wait_message(room, sender=setup.bot.user_id, contains="voice messages")
    assert "[voice]" in off["body"] and 'backend = "endpoint"' in off["body"]
    assert len(off["body"].splitlines()) == 1 and reply_target(off) == sent
    assert fetched(bot, sent) == [] and fake_api.requests == []
    assert bot.log_events("task.queued") == []


async def test_deleting_or_editing_a_queued_voice_message_changes_its_task(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    fake_voice: FakeVoiceAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await start(make_bot, owner_client, running, voice_config(fake_voice))
    bot_id = setup.bot.user_id
    await owner.send_text(room, "!pause")
    await owner.wait_message(room, sender=bot_id, contains="Paused")
    fake_voice.transcript("Reboot the server.", "Delete the tmp folder.")
    unwanted = await owner.send_voice(room, VOICE, VOICE_MS)
    await owner.wait_message(room, sender=bot_id, contains="Reboot the server")
    misheard = await owner.send_voice(room, VOICE, VOICE_MS)
    await owner.wait_message(room, sender=bot_id, contains="Delete the tmp")
    await owner.call("redact", room_id=room, event_id=unwanted)
    await bot.wait_log("task.dropped")
    edit = {
        "msgtype": "m.text",
        "body": "* List the tmp folder.",
        "m.new_content": {"msgtype": "m.text", "body": "List the tmp folder."},
        "m.relates_to": {"rel_type": "m.replace", "event_id": misheard},
    }
    await owner.call("send_event", room_id=room, type="m.room.message", content=edit)
    await bot.wait_log("task.edited")
    await owner.send_text(room, "!resume")
    await owner.wait_message(room, sender=bot_id, contains="List the tmp folder.")
    assert asked(fake_api) == ["List the tmp folder."]


async def test_with_speech_out_the_answer_also_comes_as_a_voice_message_the_phone_decrypts(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    fake_voice: FakeVoiceAPI,
    running: list[BotProcess],
) -> None:
    extra = voice_config(fake_voice, 'speech = true\nspeech_voice = "nova"\n')
    setup, bot, owner, room = await start(make_bot, owner_client, running, extra)
    fake_voice.transcript("List the files in my work folder.")
    fake_voice.speech_audio = ANSWER
    fake_api.reply("Your work folder holds **two** files:\n\n```\na.txt\nb.txt\n```")
    sent = await owner.send_voice(room, VOICE, VOICE_MS)
    text = await owner.wait_message(room, sender=setup.bot.user_id, contains="holds")
    spoken = await owner.wait_message(
        room, sender=setup.bot.user_id, contains="Voice answer", after_event_id=text["event_id"]
    )
    content = spoken["content"]
    assert spoken["was_encrypted"] and content["msgtype"] == "m.audio"
    assert "org.matrix.msc3245.voice" in content
    assert content["org.matrix.msc1767.audio"]["duration"] == ANSWER_MS
    assert content["info"]["duration"] == ANSWER_MS and content["info"]["mimetype"] == "audio/ogg"
    assert reply_target(spoken) == sent
    assert "url" not in content, "an encrypted room gets an encrypted file, never a plain URL"
    assert await owner.fetch_attachment(content["file"]) == ANSWER
    (speech,) = fake_voice.speeches
    assert speech.body["input"] == "Your work folder holds two files: (code in the text answer)"
    assert speech.body["voice"] == "nova" and speech.body["response_format"] == "opus"
    assert speech.authorization == f"Bearer {KEY}"
    assert bot.log_events("voice.spoken")[0]["duration_ms"] == ANSWER_MS


async def test_a_crash_mid_transcription_loses_nothing_and_queues_the_task_once(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    fake_voice: FakeVoiceAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await start(make_bot, owner_client, running, voice_config(fake_voice))
    fake_voice.delay_s = 600
    fake_voice.transcript("never answered", "Check the backups.")
    sent = await owner.send_voice(room, VOICE, VOICE_MS)
    await fake_voice.await_transcriptions(1)
    await bot.kill9()
    fake_voice.delay_s = 0
    fake_api.reply("The backups are fine.")
    bot = await BotProcess(setup.config, env={"DISPATCH_VOICE__API_KEY": KEY}).start()
    running.append(bot)
    answer = await owner.wait_message(room, sender=setup.bot.user_id, contains="backups are fine")
    assert reply_target(answer) == sent
    assert asked(fake_api) == ["Check the backups."]
    assert [t.file for t in fake_voice.transcriptions] == [VOICE, VOICE]
    heard = [
        m
        for m in await owner.messages(room)
        if m["sender"] == setup.bot.user_id and "🎙️" in str(m["content"].get("body"))
    ]
    assert len(heard) == 1


async def doctor(setup: BotSetup) -> str:
    process = await asyncio.create_subprocess_exec(
        console_script(),
        "doctor",
        "--config",
        str(setup.config.path),
        "--no-api",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "DISPATCH_VOICE__API_KEY": KEY},
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return out.decode()


async def test_doctor_says_whether_the_transcription_server_answers(
    make_bot: Callable[..., BotSetup], fake_voice: FakeVoiceAPI
) -> None:
    setup = make_bot(extra=voice_config(fake_voice, "speech = true\n"))
    up = await doctor(setup)
    assert f"✓ transcription server reachable: {fake_voice.url}" in up
    assert f"✓ TTS server (speech out) reachable: {fake_voice.url}" in up
    fake_voice.down()
    down = await doctor(setup)
    assert f"✗ transcription server at {fake_voice.url} unreachable" in down
    assert "fix: start it, or fix [voice] endpoint" in down
    assert KEY not in up + down
