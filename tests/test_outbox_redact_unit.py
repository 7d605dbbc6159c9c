"""The outbox's redaction without a homeserver: every text is redacted unless the caller
says `redact=False` (an approval question, which shows exactly what would run)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from dispatch_matrix.core.ids import EventID, RoomID
from dispatch_matrix.core.logs import REDACTED, REDACTOR
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.outbox import Outbox
from dispatch_matrix.matrix.sender import Budget
from dispatch_matrix.store import Database

ROOM = RoomID("!room:example.org")
COMMAND = "curl -H 'Authorization: Bearer abc123def456' https://me:pw123456@h.example/x"


class RecordingClient:
    """Stands in for MatrixClient: records what would have been sent."""

    homeserver = "http://hs.example"
    user_id = "@bot:example.org"

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(
        self, room_id: RoomID, event_type: str, content: dict[str, Any], txn_id: str
    ) -> EventID:
        self.sent.append(content)
        return EventID(f"$e{len(self.sent)}")


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[tuple[Outbox, RecordingClient]]:
    client = RecordingClient()
    db = Database.open(tmp_path / "ledger.db")
    box = Outbox(
        cast(MatrixClient, client),
        db,
        before_send=None,
        max_file_bytes=1_000_000,
        long_texts=tmp_path / "answers",
        budget=Budget(0, 10),
        presence_every_s=30,
    )
    sender = asyncio.create_task(box.sender.run())
    yield box, client
    sender.cancel()
    db.close()


async def test_a_post_is_redacted_by_default(outbox: tuple[Outbox, RecordingClient]) -> None:
    box, client = outbox
    await box.post(ROOM, f"ran `{COMMAND}`")
    [content] = client.sent
    for text in (content["body"], content.get("formatted_body", "")):
        assert "abc123def456" not in text and "pw123456" not in text
    assert REDACTED in content["body"]


async def test_redact_false_posts_the_text_verbatim(
    outbox: tuple[Outbox, RecordingClient],
) -> None:
    box, client = outbox
    REDACTOR.add("registered-daemon-secret")
    question = f"May I run this?\n\n```\n{COMMAND} registered-daemon-secret\n```"
    await box.post(ROOM, question, redact=False)
    [content] = client.sent
    assert content["body"] == question
    assert REDACTED not in content["body"]


async def test_an_edit_is_always_redacted(outbox: tuple[Outbox, RecordingClient]) -> None:
    box, client = outbox
    await box.edit(ROOM, "$old", f"now `{COMMAND}`")
    [content] = client.sent
    assert "abc123def456" not in content["m.new_content"]["body"]


async def test_a_known_secret_is_hidden_in_its_encodings_in_body_and_html(
    outbox: tuple[Outbox, RecordingClient],
) -> None:
    box, client = outbox
    secret = "daemon-known-secret-4f9a2c"
    REDACTOR.add(secret)
    encoded = base64.b64encode(secret.encode()).decode()
    await box.post(ROOM, f"b64 `{encoded}` hex {secret.encode().hex()} up {secret.upper()}")
    [content] = client.sent
    for text in (content["body"], content.get("formatted_body", "")):
        assert encoded[:-4] not in text and secret.encode().hex() not in text
        assert secret.upper() not in text and text.count(REDACTED) == 3
