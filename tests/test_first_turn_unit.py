"""A task's first turn: the owner's images shown to the model, read safely.

The inbox lies where the sandboxed agent may write, and the first turn is built outside the
sandbox: an agent of an earlier task could swap a queued image for a link to a key file (whose
bytes would then go to the model) or to an endless device. Neither is followed or read."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dispatch_matrix.agent.transcript import MAX_IMAGE_BYTES, first_turn
from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.store import Task, TaskState

NOW = datetime(2026, 12, 5, 9, 30, tzinfo=UTC)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def _task(path: Path, size: int, mimetype: str = "image/png") -> Task:
    attachment: dict[str, object] = {
        "path": str(path),
        "mimetype": mimetype,
        "size": size,
        "name": path.name,
    }
    return Task(
        id=1,
        event_id=EventID("$e"),
        room_id=RoomID("!r:x"),
        sender=UserID("@me:x"),
        body="what is this?",
        state=TaskState.QUEUED,
        origin_ts=0,
        created_at=0.0,
        started_at=None,
        finished_at=None,
        result=None,
        error=None,
        attachments=(attachment,),
    )


def _images(blocks: list[dict[str, object]]) -> list[bytes]:
    return [
        base64.b64decode(str(block["source"]["data"]))  # type: ignore[index]
        for block in blocks
        if block["type"] == "image"
    ]


def test_a_saved_image_is_shown_to_the_model(tmp_path: Path) -> None:
    image = tmp_path / "image.png"
    image.write_bytes(PNG)
    blocks = first_turn(_task(image, len(PNG)), NOW)
    assert _images(blocks) == [PNG]
    assert "(shown above)" in str(blocks[-1]["text"])


def test_an_image_swapped_for_a_link_to_a_secret_is_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "id_ed25519"
    secret.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    image = tmp_path / "image.png"
    image.symlink_to(secret)
    blocks = first_turn(_task(image, 35), NOW)
    assert _images(blocks) == []
    assert "OPENSSH" not in repr(blocks)
    # The model is told of the file by its path (its tools, inside the wall, may look).
    assert f"- file {image}" in str(blocks[-1]["text"])


def test_an_image_swapped_for_a_device_is_not_read(tmp_path: Path) -> None:
    image = tmp_path / "image.png"
    os.mkfifo(image)  # read, it would block forever; /dev/zero would never end
    assert _images(first_turn(_task(image, 10), NOW)) == []


@pytest.mark.parametrize("grown", [MAX_IMAGE_BYTES + 1, 2 * MAX_IMAGE_BYTES])
def test_an_image_grown_past_the_limit_since_it_was_saved_is_not_sent(
    tmp_path: Path, grown: int
) -> None:
    image = tmp_path / "image.png"
    image.write_bytes(PNG)
    with image.open("r+b") as file:
        file.truncate(grown)  # the size the event declared says small; the disk says not
    assert _images(first_turn(_task(image, len(PNG)), NOW)) == []


def test_a_missing_image_is_named_not_shown(tmp_path: Path) -> None:
    blocks = first_turn(_task(tmp_path / "gone.png", len(PNG)), NOW)
    assert _images(blocks) == []
    assert "gone.png" in str(blocks[-1]["text"])
