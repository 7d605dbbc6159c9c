"""Homeservers behind Matrix Authentication Service (matrix.org and others), against scripted
answers (MAS cannot run here): cross-signing without UIA, a reset that wants a browser, a
device delete refused, and a compatibility token in place of a password."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from dispatch_matrix.core.errors import HomeserverError, LoginError
from dispatch_matrix.core.ids import UserID
from dispatch_matrix.identity import crosssign
from dispatch_matrix.identity.signing import CrossSigningKeys
from dispatch_matrix.matrix import uia
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.store import Database
from dispatch_matrix.store.state import StateFolder

BOT = "@bot:mas.example"
RESET_URL = "https://account.mas.example/reset-cross-signing"
BROWSER_ONLY = {
    "flows": [{"stages": ["org.matrix.cross_signing_reset"]}],
    "params": {"org.matrix.cross_signing_reset": {"url": RESET_URL}},
    "session": "s1",
}

Reply = tuple[int, dict[str, Any]]


@dataclass
class Scripted:
    """A homeserver that answers each path from a list of scripted replies, in turn."""

    url: str = ""
    script: dict[tuple[str, str], list[Reply]] = field(default_factory=dict)
    seen: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.script[(method, path)] = list(replies)

    async def handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.text() or "{}")
        self.seen.append((request.method, request.path, body))
        replies = self.script.get((request.method, request.path))
        if not replies:
            return web.json_response({"errcode": "M_UNRECOGNIZED"}, status=404)
        status, reply = replies.pop(0) if len(replies) > 1 else replies[0]
        return web.json_response(reply, status=status)


@pytest.fixture
async def server() -> AsyncIterator[Scripted]:
    scripted = Scripted()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", scripted.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    scripted.url = f"http://127.0.0.1:{port}"
    yield scripted
    await runner.cleanup()


def client_for(server: Scripted, tmp_path: Path, logged_in: bool = True) -> MatrixClient:
    state = StateFolder(tmp_path / "state").ensure()
    client = MatrixClient(server.url, UserID(BOT), state, Database.open(state.db_path))
    if logged_in:
        client.nio = client.make_nio("BOTDEVICE")
        client.nio.restore_login(BOT, "BOTDEVICE", "syt_token")
    return client


async def test_a_reset_that_wants_a_browser_names_the_url_and_goes_on_once_approved(
    server: Scripted, tmp_path: Path
) -> None:
    # First: the browser stage. After the person approved: the upload goes through.
    server.on("POST", crosssign.UPLOAD, (401, BROWSER_ONLY), (401, BROWSER_ONLY), (200, {}))
    client = client_for(server, tmp_path)
    body = CrossSigningKeys.generate().upload_body(BOT)
    with pytest.raises(uia.ApprovalInBrowser) as needed:
        await crosssign._upload_with_auth(client, body, "a password")
    assert needed.value.url == RESET_URL and RESET_URL in needed.value.one_line()
    said: list[str] = []

    async def attempt() -> str:
        await crosssign._upload_with_auth(client, body, "a password")
        return "uploaded"

    assert await crosssign.until_approved(attempt, said.append, every_s=0.01) == "uploaded"
    assert len(said) == 1 and RESET_URL in said[0], "said once, not on every try"
    # The password was never offered to a flow that does not take one.
    assert all("auth" not in seen[2] for seen in server.seen)
    await client.close()


async def test_the_first_upload_needs_no_user_interactive_auth(
    server: Scripted, tmp_path: Path
) -> None:
    server.on("POST", crosssign.UPLOAD, (200, {}))
    client = client_for(server, tmp_path)
    await crosssign._upload_with_auth(client, CrossSigningKeys.generate().upload_body(BOT), None)
    assert [s[:2] for s in server.seen] == [("POST", crosssign.UPLOAD)]
    await client.close()


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            (
                401,
                {
                    **BROWSER_ONLY,
                    "flows": [{"stages": ["m.oauth"]}],
                    "params": {"m.oauth": {"url": RESET_URL}},
                },
            ),
            uia.ApprovalInBrowser,
        ),
        ((404, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}), HomeserverError),
        ((404, {"errcode": "M_NOT_FOUND"}), None),
        ((200, {}), None),
    ],
)
async def test_a_device_delete_refused_says_what_to_do_and_never_loops(
    server: Scripted, tmp_path: Path, reply: Reply, expected: type[Exception] | None
) -> None:
    server.on("DELETE", "/_matrix/client/v3/devices/OLDDEVICE", reply)
    client = client_for(server, tmp_path)
    if expected is None:
        await client.delete_device("OLDDEVICE", "a password")
    else:
        with pytest.raises(expected) as refused:
            await client.delete_device("OLDDEVICE", "a password")
        assert isinstance(refused.value, uia.ApprovalInBrowser | HomeserverError)
        assert refused.value.fix
    assert len(server.seen) == 1, "one request, no retry loop"
    await client.close()


def whoami(user: str, device: str | None) -> Reply:
    reply: dict[str, Any] = {"user_id": user, "is_guest": False}
    if device is not None:
        reply["device_id"] = device
    return 200, reply


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (whoami(BOT, "MASDEVICE"), None),
        (whoami("@someone:mas.example", "MASDEVICE"), "belongs to @someone"),
        (whoami(BOT, None), "names no device"),
        ((401, {"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid token"}), "rejected the token"),
    ],
)
async def test_a_compatibility_token_stands_in_for_the_password(
    server: Scripted, tmp_path: Path, reply: Reply, problem: str | None
) -> None:
    server.on("GET", "/_matrix/client/v3/account/whoami", reply)
    # connect publishes the new device's keys too (a stop before nio saved them would
    # leave the device unable to upload them ever again).
    uploaded = {"one_time_key_counts": {"signed_curve25519": 50}}
    server.on("POST", "/_matrix/client/v3/keys/upload", (200, uploaded))
    client = client_for(server, tmp_path, logged_in=False)
    connect: Callable[[], Any] = lambda: client.connect(None, "mct_compat_token")  # noqa: E731
    if problem is None:
        session = await connect()
        assert (session.device_id, session.access_token) == ("MASDEVICE", "mct_compat_token")
        assert client.db.session() == session, "kept as the bot's one device"
        assert not any(path.endswith("/login") for _, path, _ in server.seen)
    else:
        with pytest.raises(LoginError) as refused:
            await connect()
        assert problem in refused.value.message and refused.value.fix
    await client.close()


def test_browser_url_reads_either_stage_and_only_web_urls() -> None:
    assert uia.browser_url(BROWSER_ONLY) == RESET_URL
    assert uia.browser_url({"params": {"m.oauth": {"url": "javascript:alert(1)"}}}) is None
    assert uia.browser_url({"flows": []}) is None
    assert uia.password_flow({"flows": [{"stages": ["m.login.password"]}]})
    assert not uia.password_flow(BROWSER_ONLY)
