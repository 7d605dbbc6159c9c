"""Files both ways, end to end: the agent sends a file as an encrypted attachment the owner's
client decrypts; an image from the owner's client reaches the model as an image block.

The tests share one bot, owner and DM (`shared_dm`): none restarts or reconfigures the
bot, each waits for its own words, and each has the stand-in to itself (reset before it)."""

from __future__ import annotations

import base64
import contextlib
import struct
import subprocess
import zlib

import pytest
from conftest import Homeserver, SharedDM, shared_dm
from fake_messages_api import FakeMessagesAPI
from harness import http
from nio.crypto.attachments import decrypt_attachment, encrypt_attachment

pytestmark = [pytest.mark.e2e]

READ_ONLY = '[permissions]\nallow = ["Read"]\n'

shared = shared_dm(READ_ONLY)


@pytest.fixture
def fake_api(module_api: FakeMessagesAPI) -> FakeMessagesAPI:
    """The shared bot's stand-in, with nothing scripted or recorded by an earlier test."""
    module_api.reset()
    return module_api


def tiny_png() -> bytes:
    """A real 2×2 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


async def test_send_file_arrives_as_an_attachment_the_phone_decrypts(
    shared: SharedDM,
    fake_api: FakeMessagesAPI,
    homeserver: Homeserver,
) -> None:
    setup, _bot, owner, room = shared.as_started()
    report = setup.config.folder / "work" / "review.md"
    report.write_text("# Review\n\nAll green except test_b.\n")
    fake_api.reply(tools=[("send_file", {"path": str(report), "caption": "the review"})])
    fake_api.reply("Sent you the review.")
    await owner.send_text(room, "send me the review file")
    message = await owner.wait_message(room, sender=setup.bot.user_id, contains="the review")
    content = message["content"]
    assert message["was_encrypted"] and content["msgtype"] == "m.file"
    assert "url" not in content, "an encrypted room gets an encrypted file, never a plain URL"
    info = content["file"]
    token = http.login(homeserver.url, setup.owner.user_id, setup.owner.password)
    ciphertext = http.download(homeserver.url, token, info["url"])
    assert b"All green" not in ciphertext
    plain = decrypt_attachment(ciphertext, info["key"]["k"], info["hashes"]["sha256"], info["iv"])
    assert plain == report.read_bytes()
    await owner.wait_message(room, sender=setup.bot.user_id, contains="Sent you the review")


async def test_an_image_from_the_phone_reaches_the_model_as_an_image_block(
    shared: SharedDM,
    fake_api: FakeMessagesAPI,
    homeserver: Homeserver,
) -> None:
    setup, bot, owner, room = shared.as_started()
    png = tiny_png()
    ciphertext, keys = encrypt_attachment(png)
    token = http.login(homeserver.url, setup.owner.user_id, setup.owner.password)
    mxc = http.upload(homeserver.url, token, ciphertext, "screenshot.png")
    content = {
        "msgtype": "m.image",
        "body": "what is wrong in this screenshot?",
        "filename": "screenshot.png",
        "info": {"mimetype": "image/png", "size": len(png), "w": 2, "h": 2},
        "file": {
            "url": mxc,
            "key": keys["key"],
            "iv": keys["iv"],
            "hashes": keys["hashes"],
            "v": "v2",
            "mimetype": "image/png",
        },
    }
    fake_api.reply("It is a red square.")
    await owner.call("send_event", room_id=room, type="m.room.message", content=content)
    await owner.wait_message(room, sender=setup.bot.user_id, contains="red square")
    first = fake_api.requests[0].body["messages"][-1]["content"]
    image = next(block for block in first if block["type"] == "image")
    assert image["source"]["media_type"] == "image/png"
    assert base64.b64decode(image["source"]["data"]) == png
    text = next(block for block in first if block["type"] == "text")["text"]
    assert "what is wrong in this screenshot?" in text and "screenshot.png" in text
    saved = bot.log_events("attachment.received")[0]["path"]
    assert saved.startswith(str(setup.config.folder / "work" / "inbox"))


async def test_a_file_over_the_limit_is_refused_with_a_clear_message(
    shared: SharedDM,
    fake_api: FakeMessagesAPI,
) -> None:
    setup, _bot, owner, room = shared.as_started()
    content = {
        "msgtype": "m.file",
        "body": "huge.iso",
        "info": {"mimetype": "application/octet-stream", "size": 60 * 1024 * 1024},
        "file": {
            "url": "mxc://localhost/nothing",
            "key": {
                "kty": "oct",
                "key_ops": ["encrypt", "decrypt"],
                "alg": "A256CTR",
                "k": "qcHVMSgYg-71CauWBezXI5qkaRb0LuIy-Wx5kIaHMIA",
                "ext": True,
            },
            "iv": "X85+XgHN+HEAAAAAAAAAAA",
            "hashes": {"sha256": "5qG4fFnbbVdlAB1Q72JDKwCagV6Dbkx9PpYHmnxTZ4c"},
            "v": "v2",
        },
    }
    await owner.call("send_event", room_id=room, type="m.room.message", content=content)
    refused = await owner.wait_message(room, sender=setup.bot.user_id, contains="could not take")
    assert "60.0 MB" in refused["body"] and "50.0 MB limit" in refused["body"]
    assert "`matrix.max_file_mb`" in refused["body"], "it names the setting that raises it"
    assert fake_api.requests == []


async def test_a_malformed_message_is_answered_not_dropped(
    shared: SharedDM,
    fake_api: FakeMessagesAPI,
) -> None:
    setup, _bot, owner, room = shared.as_started()
    broken = {"msgtype": "m.file", "body": "broken", "file": {"url": 42}}
    await owner.call("send_event", room_id=room, type="m.room.message", content=broken)
    notice = await owner.wait_message(room, sender=setup.bot.user_id, contains="could not read")
    assert "Matrix format" in notice["body"]
    assert fake_api.requests == []


@pytest.mark.drill
async def test_a_file_sent_while_the_inbox_disk_is_full_is_refused_in_one_line(
    shared: SharedDM,
    fake_api: FakeMessagesAPI,
    homeserver: Homeserver,
) -> None:
    setup, _bot, owner, room = shared.as_started()
    inbox = setup.config.folder / "work" / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    # A small file system of its own as the inbox, so filling it fills nothing else (the
    # ledger stays writable: the owner can be told).
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(inbox)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        filler = inbox / "filler"
        with filler.open("wb", buffering=0) as handle, contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 65536)
        data = b"a line of the report\n" * 2000
        ciphertext, keys = encrypt_attachment(data)
        token = http.login(homeserver.url, setup.owner.user_id, setup.owner.password)
        mxc = http.upload(homeserver.url, token, ciphertext, "report.txt")
        content = {
            "msgtype": "m.file",
            "body": "report.txt",
            "filename": "report.txt",
            "info": {"mimetype": "text/plain", "size": len(data)},
            "file": {"url": mxc, **{k: keys[k] for k in ("key", "iv", "hashes")}, "v": "v2"},
        }
        await owner.call("send_event", room_id=room, type="m.room.message", content=content)
        refused = await owner.wait_message(
            room, sender=setup.bot.user_id, contains="could not save that file"
        )
        assert refused["body"].startswith("📎 I could not save that file: the disk holding ")
        assert "is full. Free some space there and send it again." in refused["body"]
        assert "\n" not in refused["body"]
        left = sorted(str(p.relative_to(inbox)) for p in inbox.rglob("*") if p.is_file())
        assert left == ["filler"], "no part of the file stayed"
        assert fake_api.requests == [], "nothing was queued"
    finally:
        subprocess.run(["umount", "-l", str(inbox)], check=False)
