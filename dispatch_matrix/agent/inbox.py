"""The first turn of a task: when it was sent, the owner's words, plus the files they sent —
images as image blocks the model sees, other files as paths it can read with its tools."""

from __future__ import annotations

import base64
import os
import stat
from datetime import datetime
from pathlib import Path
from typing import Any

from dispatch_matrix.store import Task

IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}
# The Messages API takes images up to about 5 MB (base64 grows it by a third).
MAX_IMAGE_BYTES = 3_750_000


def _image_bytes(path: Path, limit: int) -> bytes | None:
    """The bytes of a saved image, or None when it is not a regular file of at most `limit`
    bytes now. The inbox lies where the sandboxed agent may write, and this runs outside the
    sandbox: a queued image swapped for a link (to a key file, to /dev/zero) is not followed,
    and no more than `limit` bytes are ever read."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        handle = os.open(path, flags | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    with os.fdopen(handle, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        data = file.read(limit + 1)
    return data if len(data) <= limit else None


def turn_context(now: datetime) -> str:
    """The line of context that travels with one user turn (`now` in the owner's zone)."""
    return f"[sent {now.strftime('%a %Y-%m-%d %H:%M %Z').strip()}]"


def first_turn(task: Task, now: datetime) -> list[dict[str, Any]]:
    """The content blocks of the task's opening user message (`now` in the owner's zone)."""
    blocks: list[dict[str, Any]] = []
    notes: list[str] = []
    for item in task.attachments:
        path = Path(str(item["path"]))
        mimetype = str(item.get("mimetype", ""))
        size = int(str(item.get("size", 0)))
        image = (
            _image_bytes(path, MAX_IMAGE_BYTES)
            if mimetype in IMAGE_TYPES and size <= MAX_IMAGE_BYTES
            else None
        )
        if image is not None:
            data = base64.b64encode(image).decode()
            blocks.append(
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": mimetype, "data": data},
                }
            )
            notes.append(f"- image {path} (shown above)")
        else:
            notes.append(f"- file {path} ({mimetype or 'unknown type'}, {size} bytes)")
    # What a reply refers to comes before the owner's words ("make it shorter": which?).
    said = f"{task.reply_note}\n{task.body}" if task.reply_note else task.body
    text = f"{turn_context(now)}\n{said}".rstrip()
    if notes:
        text += "\n\nThe owner sent these files (saved on this computer):\n" + "\n".join(notes)
    blocks.append({"type": "text", "text": text})
    return blocks
