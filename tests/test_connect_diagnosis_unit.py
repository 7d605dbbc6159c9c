"""`run` against a homeserver URL that is wrong in a way the login cannot say: https on a
plain-HTTP port hung each try for its whole time limit without a word (minutes of silence),
and a URL with a path ended in 'whoami failed: M_UNRECOGNIZED Unrecognized request'. The
daemon now asks the URL once (`reach.probe`) and says what is wrong and the fix; a URL that
no retry can fix (https on a plain port, http on a TLS port) stops `run` at once, where it
used to retry every 60 s; a homeserver that is down is retried, and said once in the log
with the time of the next try (it was a warning per try)."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from structlog.testing import capture_logs

from dispatch_matrix.app.connect import connect, lasting_error, logged_out, next_try_at
from dispatch_matrix.app.reach import Reach
from dispatch_matrix.core.backoff import Backoff
from dispatch_matrix.core.errors import ConfigError, HomeserverError
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.failures import Unreachable
from dispatch_matrix.store.db import Session


class _Client:
    """The one thing `connect` asks of the client: a login that hangs or fails (the first
    `succeed_after` tries fail, the last of them with `then` when given)."""

    def __init__(
        self,
        homeserver: str,
        failure: Exception | None = None,
        succeed_after: int | None = None,
        then: Exception | None = None,
    ) -> None:
        self.homeserver = homeserver
        self.failure = failure
        self.succeed_after = succeed_after
        self.then = then
        self.tries = 0

    async def connect(self, password: str | None, access_token: str | None) -> Session:
        self.tries += 1
        if self.succeed_after is not None and self.tries > self.succeed_after:
            return Session(self.homeserver, "@bot:example.org", "DEV", "token")
        if self.then is not None and self.tries == self.succeed_after:
            raise self.then
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


@pytest.fixture
async def tls_port(tmp_path: Path) -> AsyncIterator[int]:
    """A port that speaks TLS (a self-signed certificate) and answers nothing in plain."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server = await asyncio.start_server(_drop, "127.0.0.1", 0, ssl=context)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def _drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (the kernel picked it free, and it was let go)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_https_on_a_plain_port_stops_the_hanging_login_with_the_fix(
    plain_homeserver: int,
) -> None:
    # It used to log matrix.url_problem and keep trying, a minute at a time, for ever.
    client = _Client(f"https://127.0.0.1:{plain_homeserver}")
    with pytest.raises(ConfigError) as raised:
        async with asyncio.timeout(20):
            await connect(cast(MatrixClient, client), "pw", diagnose_after_s=0)
    assert raised.value.key == "matrix.homeserver"
    assert "that port speaks plain HTTP" in raised.value.problem
    assert raised.value.fix == (
        f"use http://127.0.0.1:{plain_homeserver} (or the homeserver's HTTPS port)"
    )
    # A config error: a service stays stopped rather than restart into the same wall.
    assert raised.value.exit_code == 2


async def test_https_on_a_plain_port_stops_a_failing_login_before_the_first_retry(
    plain_homeserver: int,
) -> None:
    failure = Unreachable("login: cannot reach it (wrong version number)")
    client = _Client(f"https://127.0.0.1:{plain_homeserver}", failure)
    with capture_logs() as logged, pytest.raises(ConfigError) as raised:
        async with asyncio.timeout(20):
            # A probe at the first failure, not after the 60 s one would otherwise wait.
            await connect(cast(MatrixClient, client), "pw", diagnose_after_s=60)
    assert "that port speaks plain HTTP" in raised.value.problem
    assert client.tries == 1
    assert not [e for e in logged if e["event"] == "matrix.unreachable"]


async def test_http_on_a_tls_port_stops_the_login_with_the_https_url(tls_port: int) -> None:
    failure = Unreachable("login: cannot reach it (server disconnected)")
    client = _Client(f"http://127.0.0.1:{tls_port}", failure)
    with pytest.raises(ConfigError) as raised:
        async with asyncio.timeout(20):
            await connect(cast(MatrixClient, client), "pw", diagnose_after_s=60)
    assert raised.value.one_line() == (
        f"config: matrix.homeserver: http://127.0.0.1:{tls_port} is plain HTTP, but that port "
        f"speaks TLS (HTTPS) — use https://127.0.0.1:{tls_port}"
    )


async def test_a_homeserver_that_is_down_is_retried_and_said_once_with_the_next_try(
    closed_port: int,
) -> None:
    failure = Unreachable("login: cannot reach it (connection refused)", fix="is it up?")
    client = _Client(f"http://127.0.0.1:{closed_port}", failure, succeed_after=4)
    with capture_logs() as logged:
        async with asyncio.timeout(20):
            session = await connect(
                cast(MatrixClient, client),
                "pw",
                diagnose_after_s=60,
                now=lambda: 0.0,
                backoff=Backoff(0.01, 0.05),
            )
    assert session.device_id == "DEV"
    said = [e for e in logged if e["event"] == "matrix.unreachable"]
    assert len(said) == 1, said
    [first] = said
    assert first["log_level"] == "warning"
    assert first["error"] == (
        f"homeserver unreachable at http://127.0.0.1:{closed_port}: connection refused"
    )
    assert first["fix"] == "is it running? Check the address and port ([matrix] homeserver)"
    assert first["next_try"] == next_try_at(0.0, 0.01)
    assert "retrying until it answers" in first["then"]
    retries = [e for e in logged if e["event"] == "matrix.retrying"]
    assert [e["log_level"] for e in retries] == ["debug"] * 3
    [back] = [e for e in logged if e["event"] == "matrix.reachable"]
    assert back["tries"] == 5


async def test_a_changed_reason_is_said_again(closed_port: int) -> None:
    client = _Client(
        f"http://127.0.0.1:{closed_port}",
        Unreachable("login: cannot reach it (connection refused)"),
        succeed_after=3,
        then=Unreachable("login: cannot reach it (host name not found)"),
    )
    with capture_logs() as logged:
        async with asyncio.timeout(20):
            await connect(
                cast(MatrixClient, client), "pw", diagnose_after_s=60, backoff=Backoff(0.01, 0.05)
            )
    said = [e["error"] for e in logged if e["event"] == "matrix.unreachable"]
    assert said == [
        f"homeserver unreachable at http://127.0.0.1:{closed_port}: connection refused",
        "login: cannot reach it (host name not found)",
    ]


async def test_a_url_with_a_path_is_refused_with_the_url_to_use(plain_homeserver: int) -> None:
    url = f"http://127.0.0.1:{plain_homeserver}/_matrix/client"
    refusal = HomeserverError("whoami failed: M_UNRECOGNIZED Unrecognized request")
    with pytest.raises(ConfigError) as raised:
        await connect(cast(MatrixClient, _Client(url, refusal)), "pw")
    assert "not as a Matrix homeserver" in raised.value.problem
    assert raised.value.fix is not None
    assert f"use http://127.0.0.1:{plain_homeserver} (without the path)" in raised.value.fix


async def test_a_refusal_from_a_good_homeserver_is_left_as_it_was(plain_homeserver: int) -> None:
    refusal = HomeserverError("keys/upload failed: M_FORBIDDEN")
    url = f"http://127.0.0.1:{plain_homeserver}"
    with pytest.raises(HomeserverError) as raised:
        await connect(cast(MatrixClient, _Client(url, refusal)), "pw")
    assert raised.value is refusal


@pytest.mark.parametrize(
    ("reach", "stops"),
    [
        (Reach(True, latest="v1.11"), False),
        (Reach(False, "down", "start it"), False),
        (Reach(False, "wrong scheme", "use http://h", lasting=True), True),
    ],
)
def test_lasting_error(reach: Reach, stops: bool) -> None:
    error = lasting_error(reach)
    assert (error is not None) is stops
    if error is not None:
        assert error.one_line() == "config: matrix.homeserver: wrong scheme — use http://h"
        assert error.exit_code == 2


def test_next_try_at_is_the_local_time_of_day() -> None:
    at = datetime.datetime(2026, 12, 5, 8, 30, 0).astimezone()
    assert next_try_at(at.timestamp(), 61.4) == "08:31:01"


@pytest.mark.parametrize(
    ("can_log_in", "code", "fix"),
    [
        # A service restarts (5) and the password logs the bot in again.
        (True, 5, "start it again: it logs in with its password (a service restarts it)"),
        # Nothing to log in with: a restart would fail the same way, so it stays stopped (6).
        (False, 6, "set [matrix] password or password_file, or a new access_token_file"),
    ],
)
def test_a_login_revoked_while_serving_says_so_and_what_a_restart_does(
    can_log_in: bool, code: int, fix: str
) -> None:
    # It was "sync: the homeserver rejected our access token (M_UNKNOWN_TOKEN)", no fix.
    error = logged_out(can_log_in)
    assert error.message.startswith("the homeserver no longer accepts the bot's login")
    assert error.exit_code == code
    assert error.fix is not None and error.fix.startswith(fix)
