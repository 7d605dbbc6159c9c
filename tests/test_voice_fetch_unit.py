"""A voice message whose audio the homeserver's media repository fails for a while (a 502,
no answer) is not failed at the first try: the voice lane tries again on `fetching`'s
schedule, tells the owner once when it takes long, and gives up (kept for `!retry`) only
after a day. The real lane and ledger, a stand-in media repository and room, and a clock
the lane's waits move (no real waiting)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from harness.workbench import FakeRoom
from nio.crypto.attachments import encrypt_attachment
from test_file_waits_unit import BAD_GATEWAY, Answer, MediaClient, MediaNio, not_found
from test_voice_lane import OWNER, ROOM, Backend, Intake, Timeline, until

from dispatch_matrix.core.ids import EventID
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.fetching import GIVE_UP_AFTER_S
from dispatch_matrix.matrix.inbound import Message
from dispatch_matrix.store import Database
from dispatch_matrix.voice.inbox import Hearing, VoiceInbox
from dispatch_matrix.voice.tables import VoiceMessages, VoiceState

AUDIO = b"OggS" + b"\x00" * 200
CIPHERTEXT, KEYS = encrypt_attachment(AUDIO)


def voice_content() -> dict[str, Any]:
    return {
        "msgtype": "m.audio",
        "body": "Voice message",
        "info": {"mimetype": "audio/ogg", "size": len(AUDIO)},
        "file": {"url": "mxc://x/voice", **{k: KEYS[k] for k in ("key", "iv", "hashes")}},
        "org.matrix.msc3245.voice": {},
    }


@dataclass
class Time:
    """The lane's clock and its waits: a wait moves the clock, and returns at once."""

    now: float = 1_000_000.0
    waits: list[float] = field(default_factory=list)
    # Called at each wait (the owner acting meanwhile).
    meanwhile: Callable[[], None] = lambda: None

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        self.meanwhile()
        await asyncio.sleep(0)


@dataclass
class Lane:
    inbox: VoiceInbox
    voices: VoiceMessages
    room: FakeRoom
    intake: Intake
    nio: MediaNio
    time: Time


@pytest.fixture
async def lane(tmp_path: Path) -> AsyncIterator[Lane]:
    db = Database.open(tmp_path / "ledger.db")
    voices = VoiceMessages(db)
    timeline: Timeline = []
    room, intake, backend = FakeRoom(), Intake(timeline), Backend(timeline)
    nio, time = MediaNio(), Time()
    nio.always = Answer(CIPHERTEXT)
    inbox = VoiceInbox(voices, db)
    hearing = Hearing(
        inbox,
        cast(MatrixClient, MediaClient(nio)),
        voices,
        room,  # type: ignore[arg-type]
        backend,
        intake,  # type: ignore[arg-type]
        max_file_bytes=1 << 20,
        folder=tmp_path / "voice",
        sleep=time.sleep,
        clock=time.clock,
    )
    job = asyncio.create_task(hearing.run())
    yield Lane(inbox, voices, room, intake, nio, time)
    job.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await job
    db.close()


async def say(lane: Lane, name: str) -> EventID:
    event = EventID(f"${name}")
    content = voice_content()
    message = Message(ROOM, event, OWNER, "", 1, True, "key", msgtype="m.audio", content=content)
    await lane.inbox.receive(message)
    return event


def state(lane: Lane, event: EventID) -> VoiceState:
    row = lane.voices.voice(event)
    assert row is not None
    return row.state


async def test_a_voice_message_whose_audio_fails_for_now_is_heard_once_it_comes(
    lane: Lane,
) -> None:
    lane.nio.script = [BAD_GATEWAY, BAD_GATEWAY]
    event = await say(lane, "v")
    await until(lambda: len(lane.intake.queued) == 1, lane.intake.changed)
    [(queued, words)] = lane.intake.queued
    assert queued == event and lane.nio.downloads == 3 and lane.time.waits == [5.0, 10.0]
    assert lane.room.bot_texts() == [f'🎙️ "{words}"'], "no failure said"
    assert state(lane, event) is VoiceState.HEARD


async def test_a_voice_message_the_homeserver_does_not_have_fails_at_once(lane: Lane) -> None:
    lane.nio.script = [not_found()]
    event = await say(lane, "v")
    await lane.room.wait_for(lambda: lane.room.bot_texts(), "the failure", 5)
    assert state(lane, event) is VoiceState.FAILED
    assert lane.nio.downloads == 1 and lane.time.waits == []
    [said] = lane.room.bot_texts()
    assert "could not fetch it" in said and "M_NOT_FOUND" in said


async def test_the_owner_is_told_once_and_a_day_of_failures_fails_it_for_retry(
    lane: Lane,
) -> None:
    lane.nio.always = BAD_GATEWAY

    def a_day_passes_at_the_tenth_wait() -> None:
        if len(lane.time.waits) == 10:
            lane.time.now += GIVE_UP_AFTER_S

    lane.time.meanwhile = a_day_passes_at_the_tenth_wait
    event = await say(lane, "v")
    await lane.room.wait_for(lambda: len(lane.room.bot_texts()) == 2, "the failure", 5)
    assert state(lane, event) is VoiceState.FAILED
    told, failed = lane.room.bot_texts()
    assert told.startswith("🎙️ I cannot fetch that voice message from the homeserver yet")
    assert "502" in told
    assert "could not fetch it" in failed and "`!retry`" in failed
    assert lane.intake.queued == [] and lane.nio.downloads == 11
    assert lane.time.waits == [5.0, 10.0, 20.0] + [30.0] * 7


async def test_a_voice_message_deleted_while_its_fetch_waits_is_dropped(lane: Lane) -> None:
    lane.nio.script = [BAD_GATEWAY]
    deleting: list[asyncio.Task[None]] = []

    def the_owner_deletes_it() -> None:
        deleting.append(asyncio.ensure_future(lane.inbox.redacted(EventID("$v"))))

    lane.time.meanwhile = the_owner_deletes_it
    event = await say(lane, "v")
    # The lane goes on to the next one (in order: after it is done with the first).
    after = await say(lane, "w")
    await until(lambda: lane.intake.queued, lane.intake.changed)
    assert [queued for queued, _words in lane.intake.queued] == [after]
    assert state(lane, event) is VoiceState.DROPPED
    assert lane.nio.downloads == 2, "one failed try for the deleted one, one for the next"
