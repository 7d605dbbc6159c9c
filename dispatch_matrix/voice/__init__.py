"""Voice messages: transcription of what an owner says, and (optionally) speech out.

The pure decisions (which transcript is usable, what of an answer is spoken, the event that
speaks it, how long an Ogg/Opus clip lasts) are in `content.py` and `ogg.py`; the backends
that do the listening and speaking are thin edges in `transcribe.py` and `speech.py`;
`inbox.py` takes an owner's voice message from the room to the queue and `speech_out.py`
sends an answer back as speech. Which message is a voice message is a fact of the Matrix
event: the router reads it (`Message.voice`) and hands only those to the inbox, so a text
message never reaches this package. The voice messages table is `tables.py` (its schema is
a step of the store's one migration list).

The inbox is the router's `VoiceLane`. May import `core`, `store`, `matrix` and `queue`.
"""

from dispatch_matrix.voice.config import VoiceSection

__all__ = ["VoiceSection"]
