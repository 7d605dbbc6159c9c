"""The first turn of a task: the owner's words, plus the files they sent — images as image
blocks the model sees, other files as paths it can read with its tools."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from dispatch_matrix.store import Task

IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}
# The Messages API takes images up to about 5 MB (base64 grows it by a third).
MAX_IMAGE_BYTES = 3_750_000


def first_turn(task: Task, stamp: str) -> list[dict[str, Any]]:
    """The content blocks of the task's opening user message."""
    blocks: list[dict[str, Any]] = []
    notes: list[str] = []
    for item in task.attachments:
        path = Path(str(item["path"]))
        mimetype = str(item.get("mimetype", ""))
        size = int(str(item.get("size", 0)))
        if mimetype in IMAGE_TYPES and size <= MAX_IMAGE_BYTES and path.is_file():
            data = base64.b64encode(path.read_bytes()).decode()
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
    text = f"{stamp}\n{said}".rstrip()
    if notes:
        text += "\n\nThe owner sent these files (saved on this computer):\n" + "\n".join(notes)
    blocks.append({"type": "text", "text": text})
    return blocks
