"""Voice messages: transcription of what an owner says, and (optionally) speech out.

The pure decisions (which message is a voice message, which transcript is usable, what of
an answer is spoken, how long an Ogg/Opus clip lasts) are in `content.py` and `ogg.py`; the
backends that do the listening and speaking are thin edges in `transcribe.py` and
`speech.py`. Nothing here knows Matrix or the queue.
"""

from .config import VoiceSection

__all__ = ["VoiceSection"]
