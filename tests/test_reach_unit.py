"""Why a homeserver cannot be reached, said as a sentence with its fix (issue 28: doctor and
init showed class names, or nothing for minutes)."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import pytest

from dispatch_matrix.app.reach import explain, kind_of, not_a_homeserver, probe


class _Key:
    host, port, ssl = "h", 1, True


@pytest.mark.parametrize(
    ("err", "kind"),
    [
        (TimeoutError(), "timeout"),
        (aiohttp.ClientConnectorError(_Key(), ConnectionRefusedError(111, "refused")), "refused"),  # type: ignore[arg-type]
        (ConnectionRefusedError(111, "Connection refused"), "refused"),
        (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "tls"),
        (aiohttp.NonHttpUrlClientError("matrix.example.org"), "not-http"),
        (aiohttp.ServerDisconnectedError(), "dropped"),
        (ValueError("odd"), "other"),
    ],
)
def test_kind_of_a_failure(err: BaseException, kind: str) -> None:
    assert kind_of(err) == kind


@pytest.mark.parametrize(
    ("url", "kind", "plain", "detail", "problem", "fix"),
    [
        (
            "http://127.0.0.1:9",
            "refused",
            False,
            "",
            "homeserver unreachable at http://127.0.0.1:9: connection refused",
            "is it running?",
        ),
        (
            "https://127.0.0.1:8008",
            "timeout",
            True,
            "",
            "that port speaks plain HTTP",
            "use http://127.0.0.1:8008",
        ),
        (
            "https://127.0.0.1:8008",
            "tls",
            False,
            "[ssl: wrong_version_number] wrong version number (_ssl.c:1006)",
            "that port speaks plain HTTP",
            "use http://127.0.0.1:8008",
        ),
        (
            "https://matrix.exmaple.org",
            "dns",
            False,
            "",
            "'matrix.exmaple.org' is not found",
            "spelling",
        ),
        ("matrix.example.org", "not-http", False, "", "is not an http(s) URL", "https://"),
        ("https://m.org", "timeout", False, "", "no answer within 10 s", "firewall"),
        (
            "https://m.org",
            "other",
            False,
            "boom",
            "homeserver unreachable at https://m.org: boom",
            "network",
        ),
    ],
)
def test_each_failure_is_a_sentence_with_its_fix(
    url: str, kind: str, plain: bool, detail: str, problem: str, fix: str
) -> None:
    reach = explain(url, kind, plain_http=plain, detail=detail)
    assert not reach.ok and problem in reach.problem and fix in reach.fix
    assert "Error" not in reach.problem + reach.fix


async def test_a_closed_port_is_told_at_once() -> None:
    # A hang guard, not a speed bound: a refusal is told by the one attempt, no retry.
    reach = await asyncio.wait_for(probe("http://127.0.0.1:9"), 60)
    assert "connection refused" in reach.problem


async def test_https_to_a_port_that_never_answers_gives_up_at_its_time_limit() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)  # take the hello, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        # A hang guard, not a speed bound: the port never answers, so only the probe's own
        # limit can end it; the problem names the limit it was given.
        reach = await asyncio.wait_for(probe(f"https://127.0.0.1:{port}", timeout=1.0), 60)
    assert not reach.ok and "no answer within 1 s" in reach.problem, reach.problem


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        # A path said only "give the homeserver's client API URL": now the URL to use.
        ("http://127.0.0.1:8008/_matrix/client", "use http://127.0.0.1:8008 (without the path)"),
        ("https://matrix.example.org/#/login", "use https://matrix.example.org (without the path)"),
        ("https://example.org/element/", "use https://example.org (without the path)"),
        ("https://matrix.example.org", "the one Element signs in to"),
        ("https://matrix.example.org/", "the one Element signs in to"),
    ],
)
def test_a_url_that_answers_but_is_no_homeserver_names_the_url_to_use(url: str, fix: str) -> None:
    reach = not_a_homeserver(url, 404)
    assert not reach.ok and "not as a Matrix homeserver (HTTP 404" in reach.problem
    assert fix in reach.fix


@pytest.mark.parametrize(
    ("url", "kind", "flags", "lasting"),
    [
        # Only a changed URL fixes these: `run` stops rather than retry every minute.
        ("https://127.0.0.1:8008", "timeout", {"plain_http": True}, True),
        ("http://127.0.0.1:8448", "dropped", {"speaks_tls": True}, True),
        ("matrix.example.org", "not-http", {}, True),
        # The world may change under these: the server starts, the network comes up.
        ("http://127.0.0.1:9", "refused", {}, False),
        ("https://matrix.exmaple.org", "dns", {}, False),
        ("https://m.org", "timeout", {}, False),
        ("https://m.org", "certificate", {}, False),
        ("https://m.org", "dropped", {}, False),
        # A TLS port found for an https URL is no slip at all.
        ("https://m.org", "dropped", {"speaks_tls": True}, False),
    ],
)
def test_which_failures_no_retry_can_fix(
    url: str, kind: str, flags: dict[str, bool], lasting: bool
) -> None:
    assert explain(url, kind, **flags).lasting is lasting


def test_http_on_a_tls_port_names_the_https_url() -> None:
    reach = explain("http://127.0.0.1:8448", "dropped", speaks_tls=True)
    assert reach.problem == "http://127.0.0.1:8448 is plain HTTP, but that port speaks TLS (HTTPS)"
    assert reach.fix == "use https://127.0.0.1:8448"


@pytest.mark.parametrize(
    ("status", "lasting"),
    # A proxy's 5xx: its homeserver is away and may come back. Anything else: a wrong URL.
    [(404, True), (400, True), (200, True), (502, False), (503, False)],
)
def test_an_answer_that_is_no_homeserver_is_lasting_unless_a_proxy_waits(
    status: int, lasting: bool
) -> None:
    assert not_a_homeserver("https://matrix.example.org", status).lasting is lasting
