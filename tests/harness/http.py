"""Plain client-server API calls for tests that must do what no polite client does
(send plaintext into an encrypted room, log in as an attacker holding the password)."""

from __future__ import annotations

import json
import secrets
import urllib.parse
import urllib.request
from typing import Any


def call(base: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    req = urllib.request.Request(
        base + path, data=None if body is None else json.dumps(body).encode(), method=method
    )
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as reply:
        return json.loads(reply.read())


def login(base: str, user_id: str, password: str) -> str:
    """A new device's access token (what an attacker with the password gets)."""
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": password,
    }
    return str(call(base, "POST", "/_matrix/client/v3/login", body)["access_token"])


def send_plaintext(base: str, token: str, room_id: str, text: str) -> str:
    """An unencrypted m.room.message, even in an encrypted room; returns its event id."""
    path = (
        f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/send/m.room.message/"
        f"{secrets.token_hex(8)}"
    )
    reply = call(base, "PUT", path, {"msgtype": "m.text", "body": text}, token)
    return str(reply["event_id"])


def send_event(base: str, token: str, room_id: str, event_type: str, content: Any) -> str:
    """Any room event, as given; returns its event id."""
    path = (
        f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/send/{event_type}/"
        f"{secrets.token_hex(8)}"
    )
    return str(call(base, "PUT", path, content, token)["event_id"])


def upload(base: str, token: str, data: bytes, name: str) -> str:
    """Upload bytes to the media repository; returns the mxc:// URI."""
    path = f"/_matrix/media/v3/upload?filename={urllib.parse.quote(name)}"
    req = urllib.request.Request(base + path, data=data, method="POST")
    req.add_header("Content-Type", "application/octet-stream")
    req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as reply:
        return str(json.loads(reply.read())["content_uri"])


def download(base: str, token: str, mxc: str) -> bytes:
    """Download media through the authenticated media API."""
    server, media = mxc.removeprefix("mxc://").split("/", 1)
    req = urllib.request.Request(f"{base}/_matrix/client/v1/media/download/{server}/{media}")
    req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as reply:
        return bytes(reply.read())
