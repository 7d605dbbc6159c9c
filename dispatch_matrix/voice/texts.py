"""What the bot says in the room about voice messages: one place, one tone."""

from __future__ import annotations

VOICE_OFF = (
    '🎙️ I cannot listen to voice messages yet: set `backend = "endpoint"` and `endpoint = '
    '"http://127.0.0.1:8000"` (any OpenAI-style transcription server) under `[voice]` in my '
    "config and restart me, then `!retry`."
)


VOICE_EMPTY = (
    "🎙️ I heard no words in that voice message, so nothing was queued. Say it again, or type it."
)


def voice_failed(reason: str) -> str:
    """The backend gave no transcript; the voice message is kept for `!retry`."""
    return (
        f"🎙️ I could not transcribe that voice message: {reason}. Nothing was queued; "
        "`!retry` tries again."
    )


def voice_refused(reason: str) -> str:
    """A voice message that retrying cannot help (too big, not decryptable)."""
    return f"🎙️ I could not take that voice message: {reason}."


def voice_still_fetching(reason: str) -> str:
    """A voice message the homeserver has not handed over for a minute: told once, the bot
    keeps trying."""
    return (
        f"🎙️ I cannot fetch that voice message from the homeserver yet ({reason}). I keep "
        "trying and will listen to it as soon as it comes."
    )


VOICE_RETRYING = "🔁 Listening to your voice message again…"
