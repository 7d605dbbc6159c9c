"""How long a voice clip lasts, read from its container: pure functions over bytes.

A voice message carries its duration (and a waveform) so the phone can draw it before it
plays. Ogg pages end with a granule position, the sample count so far: the last page's,
less Opus's pre-skip, over 48 kHz is the length. WAV says it in its header. Nothing is
decoded; a clip we cannot read gives None rather than a guess.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

_PAGE = struct.Struct("<4sBBqIIIB")
# Opus timestamps always count 48 kHz samples, whatever the input rate was.
_OPUS_RATE = 48_000


@dataclass(frozen=True)
class _Page:
    granule: int
    serial: int
    packets: list[bytes]
    # Sizes of the packets that end on this page (the audio's bitrate over time).
    sizes: list[int]


def _pages(data: bytes) -> Iterator[_Page]:
    offset = 0
    pending = b""
    while offset + _PAGE.size <= len(data):
        capture, _version, _kind, granule, serial, _seq, _crc, count = _PAGE.unpack_from(
            data, offset
        )
        if capture != b"OggS":
            return
        table = data[offset + _PAGE.size : offset + _PAGE.size + count]
        if len(table) < count:
            return
        body = offset + _PAGE.size + count
        packets: list[bytes] = []
        sizes: list[int] = []
        for lace in table:
            pending += data[body : body + lace]
            body += lace
            if lace < 255:
                packets.append(pending)
                sizes.append(len(pending))
                pending = b""
        if body > len(data):
            return
        yield _Page(granule, serial, packets, sizes)
        offset = body


def duration_ms(data: bytes) -> int | None:
    """The clip's length in milliseconds (Ogg Opus, Ogg Vorbis or WAV); None if unknown."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return _wav_ms(data)
    if data[:4] != b"OggS":
        return None
    first: _Page | None = None
    last_granule = -1
    for page in _pages(data):
        if first is None:
            first = page
        if page.serial == first.serial and page.granule >= 0:
            last_granule = page.granule
    if first is None or not first.packets or last_granule < 0:
        return None
    head = first.packets[0]
    if head[:8] == b"OpusHead" and len(head) >= 12:
        pre_skip = int(struct.unpack_from("<H", head, 10)[0])
        return max(0, (last_granule - pre_skip) * 1000 // _OPUS_RATE)
    if head[:7] == b"\x01vorbis" and len(head) >= 16:
        rate = int(struct.unpack_from("<I", head, 12)[0])
        return last_granule * 1000 // rate if rate else None
    return None


def _wav_ms(data: bytes) -> int | None:
    offset, byte_rate, size = 12, 0, None
    while offset + 8 <= len(data):
        chunk, length = struct.unpack_from("<4sI", data, offset)
        if chunk == b"fmt " and length >= 12:
            byte_rate = struct.unpack_from("<I", data, offset + 16)[0]
        elif chunk == b"data":
            size = min(length, len(data) - offset - 8)
            break
        offset += 8 + length + (length & 1)
    if not byte_rate or size is None:
        return None
    return int(size * 1000 // byte_rate)


def waveform(data: bytes, bars: int = 40) -> list[int]:
    """A rough waveform (0–1024, as MSC3246 draws it) from an Ogg clip's packet sizes.

    Opus spends more bytes on louder, busier sound, so packet size is a fair stand-in for
    loudness without decoding. Empty for a clip that is not Ogg.
    """
    if data[:4] != b"OggS":
        return []
    sizes = [size for page in _pages(data) for size in page.sizes][2:]  # past the headers
    if not sizes:
        return []
    step = max(1, len(sizes) // bars)
    buckets = [sizes[i : i + step] for i in range(0, len(sizes), step)][:bars]
    means = [sum(bucket) / len(bucket) for bucket in buckets]
    low, high = min(means), max(means)
    span = (high - low) or 1.0
    return [round((mean - low) / span * 1024) for mean in means]
