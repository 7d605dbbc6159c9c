"""The voice lane without a homeserver: voice messages are heard one at a time in arrival
order, a deletion while one is being transcribed keeps it out of the queue, and a bug with
one voice message fails that message, not the lane (stand-ins for the room and backend)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from harness.workbench import FakeRoom

from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.matrix.inbound import Message
from dispatch_matrix.queue.intake import Command
from dispatch_matrix.store import Database, TaskState
from dispatch_matrix.voice.inbox import Hearing, VoiceInbox, audio_name
from dispatch_matrix.voice.tables import VoiceMessages, VoiceState

ROOM = RoomID("!room:x")
OWNER = UserID("@me:x")


# What the stand-ins saw, in order: ("hear", file) and ("queue", event id).
Timeline = list[tuple[str, str]]


class Intake:
    """Records what the lane queues."""

    def __init__(self, timeline: Timeline) -> None:
        self.queued: list[tuple[str, str]] = []
        self.changed = asyncio.Event()
        self.timeline = timeline

    async def message(self, event_id: str, room_id: str, sender: str, body: str, ts: int) -> None:
        self.queued.append((event_id, body))
        self.timeline.append(("queue", event_id))
        self.changed.set()


class Backend:
    """A transcriber that answers when the test lets it, or raises a bug."""

    describe = "a stand-in"

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.heard: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.texts: dict[str, str] = {}
        self.started = asyncio.Event()

    async def transcribe(self, audio: Path, mimetype: str) -> str:
        self.heard.append(audio.name)
        self.timeline.append(("hear", audio.name))
        self.started.set()
        gate = self.gates.get(audio.name)
        if gate is not None:
            await gate.wait()
        text = self.texts.get(audio.name, f"words of {audio.name}")
        if text == "BUG":
            raise KeyError("a bug")
        return text


Lane = tuple[VoiceInbox, VoiceMessages, FakeRoom, Intake, Backend]


@pytest.fixture
async def lane(
    tmp_path: Path,
) -> AsyncIterator[Lane]:
    db = Database.open(tmp_path / "ledger.db")
    voices = VoiceMessages(db)
    timeline: Timeline = []
    room, intake, backend = FakeRoom(), Intake(timeline), Backend(timeline)
    inbox = VoiceInbox(voices, db)
    hearing = Hearing(
        inbox,
        None,  # type: ignore[arg-type]  # never fetches: the audio is already on disk
        voices,
        room,  # type: ignore[arg-type]
        backend,
        intake,  # type: ignore[arg-type]
        max_file_bytes=1024,
        folder=tmp_path / "voice",
    )
    job = asyncio.create_task(hearing.run())
    yield inbox, voices, room, intake, backend
    job.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await job
    db.close()


async def send(inbox: VoiceInbox, voices: VoiceMessages, tmp_path: Path, name: str) -> EventID:
    """A voice message whose audio an earlier attempt already saved."""
    event = EventID(f"${name}")
    audio = tmp_path / f"{name}.ogg"
    audio.write_bytes(b"OggS")
    message = Message(ROOM, event, OWNER, "", 1, True, "key", msgtype="m.audio", content={})
    voices.add_voice(event, ROOM, OWNER, 1, {"msgtype": "m.audio"})
    voices.keep_voice_audio(event, str(audio))
    await inbox.receive(message)
    return event


async def until(condition: Any, event: asyncio.Event) -> None:
    async def wait() -> None:
        while not condition():
            event.clear()
            await event.wait()

    await asyncio.wait_for(wait(), 5)


async def test_voice_messages_are_heard_one_at_a_time_in_arrival_order(
    lane: Lane, tmp_path: Path
) -> None:
    inbox, voices, room, intake, backend = lane
    backend.gates["a.ogg"] = asyncio.Event()
    await send(inbox, voices, tmp_path, "a")
    await asyncio.wait_for(backend.started.wait(), 5)
    await send(inbox, voices, tmp_path, "b")
    backend.gates["a.ogg"].set()
    await until(lambda: len(intake.queued) == 2, intake.changed)
    # b was not even started before a was queued.
    assert backend.timeline == [
        ("hear", "a.ogg"),
        ("queue", "$a"),
        ("hear", "b.ogg"),
        ("queue", "$b"),
    ]
    assert intake.queued == [("$a", "words of a.ogg"), ("$b", "words of b.ogg")]
    assert room.bot_texts() == ['🎙️ "words of a.ogg"', '🎙️ "words of b.ogg"']
    row = voices.voice("$a")
    assert row is not None and row.state is VoiceState.HEARD and row.audio_path is None
    assert not (tmp_path / "a.ogg").exists()


async def test_a_voice_message_deleted_while_it_is_transcribed_is_not_queued(
    lane: Lane, tmp_path: Path
) -> None:
    inbox, voices, room, intake, backend = lane
    backend.gates["gone.ogg"] = asyncio.Event()
    await send(inbox, voices, tmp_path, "gone")
    await asyncio.wait_for(backend.started.wait(), 5)
    await inbox.redacted("$gone")
    backend.gates["gone.ogg"].set()
    await send(inbox, voices, tmp_path, "next")
    await until(lambda: len(intake.queued) == 1, intake.changed)
    assert intake.queued == [("$next", "words of next.ogg")]
    row = voices.voice("$gone")
    assert row is not None and row.state is VoiceState.DROPPED
    assert await inbox.retry(ROOM) is None, "a deleted voice message is never retried"


async def test_a_bug_with_one_voice_message_fails_it_and_the_lane_goes_on(
    lane: Lane, tmp_path: Path
) -> None:
    inbox, voices, room, intake, backend = lane
    backend.texts["bad.ogg"] = "BUG"
    await send(inbox, voices, tmp_path, "bad")
    await send(inbox, voices, tmp_path, "good")
    await until(lambda: len(intake.queued) == 1, intake.changed)
    assert intake.queued == [("$good", "words of good.ogg")]
    assert (
        "🎙️ I could not transcribe that voice message: an internal error (details are in "
        "the log). Nothing was queued; `!retry` tries again.",
        "$bad",
    ) in [(m.body, m.reply_to) for m in room.messages]
    # It was kept, with its audio, and `!retry` hears it again.
    backend.texts["bad.ogg"] = "fixed now"
    assert await inbox.retry(ROOM) == "🔁 Listening to your voice message again…"
    await until(lambda: len(intake.queued) == 2, intake.changed)
    assert intake.queued[-1] == ("$bad", "fixed now")


async def test_a_bare_retry_hears_the_voice_message_again_only_when_it_failed_last(
    tmp_path: Path,
) -> None:
    db = Database.open(tmp_path / "ledger.db")
    voices = VoiceMessages(db)
    inbox = VoiceInbox(voices, db)
    voices.add_voice(EventID("$v"), ROOM, OWNER, 1, {"msgtype": "m.audio"})
    voices.set_voice("$v", VoiceState.FAILED, error="backend down")
    # `!retry #3` names a task; another room has no voice message that failed.
    assert await inbox.retry_command(Command("retry", "#3"), ROOM) is None
    assert await inbox.retry_command(Command("retry"), RoomID("!other:x")) is None
    assert await inbox.retry_command(Command("retry"), ROOM) == (
        "🔁 Listening to your voice message again…"
    )
    row = voices.voice("$v")
    assert row is not None and row.state is VoiceState.PENDING
    # Failed again, then a task failed after it: a bare `!retry` is the queue's (the task).
    voices.set_voice("$v", VoiceState.FAILED, error="backend down")
    task = db.add_task(EventID("$t"), ROOM, OWNER, "work", 2, None)
    assert task is not None
    db.set_task_state(task.id, TaskState.FAILED, error="model down")
    assert await inbox.retry_command(Command("retry"), ROOM) is None
    row = voices.voice("$v")
    assert row is not None and row.state is VoiceState.FAILED
    db.close()


# -- read again after a crash: what was done is not done twice ------------------------------


def recorded(voices: VoiceMessages, name: str, content: dict[str, Any] | None = None) -> EventID:
    """A voice message the ledger holds as pending, as a crash left it."""
    event = EventID(f"${name}")
    voices.add_voice(event, ROOM, OWNER, 1, content or {"msgtype": "m.audio"})
    return event


async def test_a_voice_message_queued_before_a_crash_is_not_transcribed_again(
    lane: Lane, tmp_path: Path
) -> None:
    inbox, voices, room, intake, backend = lane
    # The crash came after its words were queued and before it was marked heard.
    event = recorded(voices, "done")
    audio = tmp_path / "done.ogg"
    audio.write_bytes(b"OggS")
    voices.keep_voice_audio(event, str(audio))
    ledger = cast(Database, inbox._ledger)
    ledger.add_task(event, ROOM, OWNER, "words of done.ogg", 1)
    await inbox.receive(Message(ROOM, event, OWNER, "", 1, True, "key", msgtype="m.audio"))
    # Heard in arrival order: once the next one is queued, the first was dealt with.
    await send(inbox, voices, tmp_path, "next")
    await until(lambda: len(intake.queued) == 1, intake.changed)
    assert intake.queued == [("$next", "words of next.ogg")]
    assert backend.heard == ["next.ogg"], "the queued one was not sent to the backend again"
    row = voices.voice(event)
    assert row is not None and row.state is VoiceState.HEARD and row.audio_path is None
    assert not audio.exists()
    assert room.bot_texts() == ['🎙️ "words of next.ogg"']


async def test_words_heard_before_a_crash_are_queued_without_the_backend(
    lane: Lane, tmp_path: Path
) -> None:
    inbox, voices, room, intake, backend = lane
    # Transcribed, its words kept, then the crash: before they were shown or queued.
    event = recorded(voices, "kept")
    voices.set_voice(event, VoiceState.PENDING, transcript="the kept words")
    await inbox.receive(Message(ROOM, event, OWNER, "", 1, True, "key", msgtype="m.audio"))
    await until(lambda: len(intake.queued) == 1, intake.changed)
    assert intake.queued == [("$kept", "the kept words")]
    assert backend.heard == []
    assert room.bot_texts() == ['🎙️ "the kept words"']
    row = voices.voice(event)
    assert row is not None and row.state is VoiceState.HEARD


async def test_audio_saved_before_a_crash_is_used_not_fetched_again(
    lane: Lane, tmp_path: Path
) -> None:
    inbox, voices, room, intake, backend = lane
    # Saved whole under its event's name, then the crash before the ledger noted where:
    # the lane has no client (a fetch would fail the message), so hearing it proves reuse.
    content = {"msgtype": "m.audio", "body": "Voice message.ogg"}
    event = recorded(voices, "saved", content)
    row = voices.voice(event)
    assert row is not None
    name = audio_name(row)
    assert name.endswith(".ogg") and "saved" not in name
    (tmp_path / "voice").mkdir()
    (tmp_path / "voice" / name).write_bytes(b"OggS")
    await inbox.receive(Message(ROOM, event, OWNER, "", 1, True, "key", msgtype="m.audio"))
    await until(lambda: len(intake.queued) == 1, intake.changed)
    assert backend.heard == [name]
    assert intake.queued == [("$saved", f"words of {name}")]
    assert list((tmp_path / "voice").iterdir()) == [], "heard, its audio is deleted"
