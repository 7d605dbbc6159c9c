"""Voice messages in the ledger: each owner's voice message from the moment it is seen,
until its transcript is handed to the queue — so one the backend could not hear is kept
for `!retry`, and a crash mid-transcription is transcribed again at the re-read."""

from __future__ import annotations

import enum
import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.store import Connection


class VoiceState(enum.StrEnum):
    """Where a voice message is on its way to becoming a task."""

    # Seen, not yet transcribed (or a crash came in between).
    PENDING = "pending"
    # Transcribed and handed to the queue as if typed.
    HEARD = "heard"
    # Not transcribed (backend down, empty transcript, voice off): `!retry` tries again.
    FAILED = "failed"
    # Refused for good (over the size limit, not decryptable): retrying cannot help.
    REFUSED = "refused"
    # The owner deleted it.
    DROPPED = "dropped"


@dataclass(frozen=True)
class VoiceMessage:
    """One owner voice message and how far it got."""

    event_id: EventID
    room_id: RoomID
    sender: UserID
    origin_ts: int
    # The event's content: the encrypted file's link and key, to fetch it again.
    content: dict[str, Any]
    state: VoiceState
    audio_path: str | None
    transcript: str | None
    error: str | None
    attempts: int
    updated_at: float


def _voice(row: sqlite3.Row) -> VoiceMessage:
    return VoiceMessage(
        event_id=EventID(row["event_id"]),
        room_id=RoomID(row["room_id"]),
        sender=UserID(row["sender"]),
        origin_ts=row["origin_ts"],
        content=json.loads(row["content"]),
        state=VoiceState(row["state"]),
        audio_path=row["audio_path"],
        transcript=row["transcript"],
        error=row["error"],
        attempts=row["attempts"],
        updated_at=row["updated_at"],
    )


class VoiceMessages:
    """Voice messages on their way to the queue (the `voice_messages` table, migration step 8)."""

    def __init__(self, db: Connection) -> None:
        self._db = db

    def add_voice(
        self,
        event_id: EventID,
        room_id: RoomID,
        sender: UserID,
        origin_ts: int,
        content: dict[str, Any],
    ) -> VoiceMessage:
        """Record a voice message as pending; an event seen before keeps its record."""
        now = time.time()
        with self._db.tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO voice_messages (event_id, room_id, sender, origin_ts,"
                " content, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event_id,
                    room_id,
                    sender,
                    origin_ts,
                    json.dumps(content),
                    VoiceState.PENDING,
                    now,
                    now,
                ),
            )
            row = conn.execute(
                "SELECT * FROM voice_messages WHERE event_id = ?", (event_id,)
            ).fetchone()
        return _voice(row)

    def voice(self, event_id: str) -> VoiceMessage | None:
        """A voice message by its event id."""
        row = self._db.read(
            "SELECT * FROM voice_messages WHERE event_id = ?", (event_id,)
        ).fetchone()
        return None if row is None else _voice(row)

    def set_voice(
        self,
        event_id: str,
        state: VoiceState,
        *,
        audio_path: str | None = None,
        transcript: str | None = None,
        error: str | None = None,
        attempt: bool = False,
    ) -> None:
        """Move a voice message on; the audio path, once known, is kept until replaced."""
        # A deleted voice message stays deleted, whatever a transcription still running
        # when it was deleted comes back with.
        with self._db.tx() as conn:
            conn.execute(
                "UPDATE voice_messages SET state = ?, audio_path = COALESCE(?, audio_path),"
                " transcript = COALESCE(?, transcript), error = ?,"
                " attempts = attempts + ?, updated_at = ? WHERE event_id = ? AND state != ?",
                (
                    state,
                    audio_path,
                    transcript,
                    error,
                    int(attempt),
                    time.time(),
                    event_id,
                    VoiceState.DROPPED,
                ),
            )

    def keep_voice_audio(self, event_id: str, audio_path: str) -> None:
        """Remember where the decrypted audio is, for a retry."""
        with self._db.tx() as conn:
            conn.execute(
                "UPDATE voice_messages SET audio_path = ? WHERE event_id = ?",
                (audio_path, event_id),
            )

    def forget_voice_audio(self, event_id: str) -> None:
        """The decrypted audio was deleted: forget where it was."""
        with self._db.tx() as conn:
            conn.execute(
                "UPDATE voice_messages SET audio_path = NULL WHERE event_id = ?", (event_id,)
            )

    def latest_failed_voice(self, room_id: str) -> VoiceMessage | None:
        """The room's newest voice message that `!retry` can transcribe again."""
        row = self._db.read(
            "SELECT * FROM voice_messages WHERE room_id = ? AND state = ?"
            " ORDER BY updated_at DESC LIMIT 1",
            (room_id, VoiceState.FAILED),
        ).fetchone()
        return None if row is None else _voice(row)

    def next_pending_voice(self) -> VoiceMessage | None:
        """The oldest voice message waiting to be heard."""
        row = self._db.read(
            "SELECT * FROM voice_messages WHERE state = ? ORDER BY rowid LIMIT 1",
            (VoiceState.PENDING,),
        ).fetchone()
        return None if row is None else _voice(row)
