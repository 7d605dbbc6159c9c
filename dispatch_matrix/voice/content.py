"""The pure decisions of the voice path, table-tested: whether a transcript holds words,
what of an answer is spoken, and the event that carries a spoken answer. Which message is a
voice message is a fact of the Matrix event, read by `matrix/inbound.py` (`Message.voice`)."""

from __future__ import annotations

import re
from typing import Any

from dispatch_matrix.matrix.inbound import AUDIO_BLOCK, VOICE_FLAG

# What Whisper-style models print for silence, music or noise rather than words.
_NON_SPEECH = re.compile(
    r"[\[(]\s*(?:[a-z]+\s+)?(?:blank_audio|silence|music|noise|inaudible|no speech|applause)"
    r"[^\])]*[\])]"
    r"|<\|[a-z_]+\|>",
    re.I,
)
_WORD = re.compile(r"\w", re.UNICODE)


def declared_size(content: dict[str, Any]) -> int | None:
    """The size the sender declared for the audio, if it declared one."""
    info = content.get("info")
    size = info.get("size") if isinstance(info, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None


def heard(transcript: str) -> str | None:
    """The transcript as a task's text; None when it holds no words (silence, noise)."""
    text = _NON_SPEECH.sub(" ", transcript)
    text = " ".join(text.split())
    return text if _WORD.search(text) else None


def echo(text: str, width: int = 2000) -> str:
    """What the owner sees of the transcript: `🎙️ "…"`, shortened when very long."""
    shown = text if len(text) <= width else text[: width - 1].rstrip() + "…"
    return f'🎙️ "{shown}"'


_FENCE = re.compile(r"```.*?(?:```|$)", re.S)
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_INLINE = re.compile(r"`([^`]*)`")
_LINE_MARKS = re.compile(r"^\s*(?:#{1,6}|>+|[-*+])\s+", re.M)
_EMPHASIS = re.compile(r"(\*{1,3}|_{2,3}|~~)(\S(?:.*?\S)?)\1")
_URL = re.compile(r"https?://\S+")
_SENTENCE_END = re.compile(r"[.!?…](?=\s|$)")


def spoken(markdown: str, max_chars: int) -> str:
    """The part of an answer worth speaking: prose without code, links or Markdown marks,
    cut at a sentence end within `max_chars`. The text answer always has everything."""
    text = _FENCE.sub(" (code in the text answer) ", markdown)
    text = _LINK.sub(r"\1", text)
    text = _INLINE.sub(r"\1", text)
    text = _URL.sub("a link", text)
    text = _LINE_MARKS.sub("", text)
    text = _EMPHASIS.sub(r"\2", text)
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    ends = [m.end() for m in _SENTENCE_END.finditer(cut)]
    # A sentence end, unless that would throw most of the allowance away.
    at_sentence = bool(ends) and ends[-1] > max_chars // 3
    cut = cut[: ends[-1]] if at_sentence else cut.rsplit(" ", 1)[0] + "…"
    return cut + " The rest is in the text answer."


def sniff(data: bytes) -> tuple[str, str]:
    """The (mimetype, file extension) of audio bytes a TTS server returned."""
    if data[:4] == b"OggS":
        return "audio/ogg", "ogg"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav", "wav"
    if data[:3] == b"ID3" or data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg", "mp3"
    if data[:4] == b"fLaC":
        return "audio/flac", "flac"
    return "application/octet-stream", "bin"


def voice_content(
    uploaded: dict[str, Any],
    *,
    duration_ms: int,
    waveform: list[int],
    body: str,
    reply_to: str | None,
) -> dict[str, Any]:
    """An uploaded (encrypted) audio file's message content, made a voice message: the
    voice flag, the duration in `info` and in the MSC1767 audio block, as Element sends it."""
    content = dict(uploaded)
    info = dict(content.get("info") or {})
    info["duration"] = duration_ms
    content.update(
        {
            "msgtype": "m.audio",
            "body": body,
            "info": info,
            "org.matrix.msc1767.text": body,
            AUDIO_BLOCK: {"duration": duration_ms, "waveform": waveform},
            VOICE_FLAG: {},
        }
    )
    if reply_to is not None:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
    return content
