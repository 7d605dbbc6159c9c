"""`run` against a homeserver URL that is wrong in a way the login cannot say: https on a
plain-HTTP port hung each try for its whole time limit without a word (minutes of silence),
and a URL with a path ended in 'whoami failed: M_UNRECOGNIZED Unrecognized request'. The
daemon now asks the URL once (`reach.probe`) and says what is wrong and the fix."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from dispatch_matrix.app.daemon import connect
from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.store.db import Session


class _Client:
    """The one thing `connect` asks of the client: a login that hangs or fails."""

    def __init__(self, homeserver: str, failure: Exception | None = None) -> None:
        self.homeserver = homeserver
        self.failure = failure

    async def connect(self, password: str | None, access_token: str | None) -> Session:
        if self.failure is not None:
            raise self.failure
        await asyncio.Event().wait()  # a TLS hello that the plain port never answers
        raise AssertionError("unreachable")


@pytest.fixture
async def plain_homeserver() -> AsyncIterator[int]:
    """A homeserver's client API in plain HTTP: /_matrix/client/versions and nothing else."""

    async def versions(request: web.Request) -> web.Response:
        return web.json_response({"versions": ["v1.11"]})

    app = web.Application()
    app.router.add_get("/_matrix/client/versions", versions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = cast(Any, site._server)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        await runner.cleanup()


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_https_on_a_plain_port_is_said_while_the_login_still_hangs(
    plain_homeserver: int,
) -> None:
    client = _Client(f"https://127.0.0.1:{plain_homeserver}")
    with capture_logs() as logged:
        login = asyncio.create_task(connect(cast(MatrixClient, client), "pw", diagnose_after_s=0))

        def said() -> list[dict[str, Any]]:
            return [e for e in logged if e["event"] == "matrix.url_problem"]

        await until(lambda: bool(said()))
        assert not login.done(), "the login keeps trying: the homeserver may be fixed"
        login.cancel()
        with pytest.raises(asyncio.CancelledError):
            await login
    [event] = said()
    assert "that port speaks plain HTTP" in event["error"]
    assert f"use http://127.0.0.1:{plain_homeserver}" in event["fix"]


async def test_a_url_with_a_path_is_refused_with_the_url_to_use(plain_homeserver: int) -> None:
    url = f"http://127.0.0.1:{plain_homeserver}/_matrix/client"
    refusal = HomeserverError("whoami failed: M_UNRECOGNIZED Unrecognized request")
    with pytest.raises(HomeserverError) as raised:
        await connect(cast(MatrixClient, _Client(url, refusal)), "pw")
    assert "not as a Matrix homeserver" in raised.value.message
    assert raised.value.fix is not None
    assert f"use http://127.0.0.1:{plain_homeserver} (without the path)" in raised.value.fix


async def test_a_refusal_from_a_good_homeserver_is_left_as_it_was(plain_homeserver: int) -> None:
    refusal = HomeserverError("keys/upload failed: M_FORBIDDEN")
    url = f"http://127.0.0.1:{plain_homeserver}"
    with pytest.raises(HomeserverError) as raised:
        await connect(cast(MatrixClient, _Client(url, refusal)), "pw")
    assert raised.value is refusal
