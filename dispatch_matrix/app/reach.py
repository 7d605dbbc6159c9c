"""Whether a homeserver answers at a URL, and when not, why in a sentence with its fix.

Used before anything logs in (`init`), by `doctor` and by `run` when its first login fails
or hangs: one short request with its own timeout, where a login through nio retries and
waits a minute per try. A URL given as https:// whose port speaks plain HTTP, or as http://
whose port speaks TLS, is told apart from one that is merely down: the first kind is
`lasting` (only a changed URL fixes it, so `run` stops), the second may come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

# What one probe may take; the plain-HTTP second look gets less.
PROBE_TIMEOUT_S = 10.0
_PLAIN_LOOK_S = 3.0


@dataclass(frozen=True)
class Reach:
    """The answer of one probe: the spec versions, or the problem and its fix."""

    ok: bool
    problem: str = ""
    fix: str = ""
    latest: str = ""
    # Retrying cannot fix it: the URL itself is wrong (its scheme, its path), not the server.
    lasting: bool = False


def kind_of(err: BaseException) -> str:
    """The failure's kind, as `explain` takes it."""
    if isinstance(err, TimeoutError | asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        return "certificate"
    if isinstance(err, aiohttp.ClientConnectorDNSError):
        return "dns"
    if isinstance(err, aiohttp.ClientSSLError | ssl.SSLError):
        return "tls"
    if isinstance(err, aiohttp.NonHttpUrlClientError | aiohttp.InvalidURL):
        return "not-http"
    os_error = getattr(err, "os_error", None) or (err if isinstance(err, OSError) else None)
    if isinstance(os_error, ConnectionRefusedError):
        return "refused"
    if isinstance(err, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "dropped"
    return "other"


def explain(
    url: str,
    kind: str,
    *,
    plain_http: bool = False,
    speaks_tls: bool = False,
    detail: str = "",
    limit: float = PROBE_TIMEOUT_S,
) -> Reach:
    """A failed probe of `url` as a sentence and its fix (pure; table-tested)."""
    parts = urlsplit(url)
    # OpenSSL's words when the answer to its hello is not TLS at all: plain text came back.
    plain_http = plain_http or (kind == "tls" and "wrong version number" in detail.lower())
    if plain_http and parts.scheme == "https":
        plain = parts._replace(scheme="http").geturl()
        return Reach(
            False,
            f"{url} does not answer in TLS: that port speaks plain HTTP",
            f"use {plain} (or the homeserver's HTTPS port)",
            lasting=True,
        )
    if speaks_tls and parts.scheme == "http":
        secure = parts._replace(scheme="https").geturl()
        return Reach(
            False,
            f"{url} is plain HTTP, but that port speaks TLS (HTTPS)",
            f"use {secure}",
            lasting=True,
        )
    where = f"homeserver unreachable at {url}"
    sentences = {
        "refused": (f"{where}: connection refused", "is it running? Check the address and port"),
        "dns": (
            f"{where}: the host name {parts.hostname!r} is not found",
            "check the spelling of the homeserver URL and this computer's network",
        ),
        "timeout": (
            f"{where}: no answer within {limit:.0f} s",
            "check the address and port, and that no firewall drops the connection",
        ),
        "certificate": (
            f"{where}: its TLS certificate is not trusted here",
            "use the homeserver's public name, or install the certificate's authority",
        ),
        "tls": (
            f"{where}: the TLS handshake failed ({detail or 'no details'})",
            "check that the port is the homeserver's HTTPS port",
        ),
        "not-http": (
            f"{url!r} is not an http(s) URL",
            "write it in full, e.g. https://matrix.example.org",
        ),
        "dropped": (
            f"{where}: it closed the connection without an answer",
            "check that the URL is the homeserver's client API (the one Element signs in to)",
        ),
    }
    problem, fix = sentences.get(
        kind, (f"{where}: {detail or 'the connection failed'}", "check the URL and the network")
    )
    return Reach(False, problem, fix, lasting=kind == "not-http")


async def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> Reach:
    """Ask `url` for the Matrix client API's versions, within `timeout` seconds."""
    if not url.startswith("https://"):
        reach = await _probe(url, timeout)
        # A plain request to a TLS port is dropped, or answered by a proxy's error page:
        # whether the port completes a TLS handshake tells that slip from a server that is down.
        if not reach.ok and url.startswith("http://") and await _speaks_tls(url):
            return explain(url, "tls-port", speaks_tls=True)
        return reach
    # A TLS hello sent to a plain-HTTP port may go unanswered until the time limit: ask
    # that port in plain HTTP meanwhile, and a homeserver answering there ends the wait.
    secure = asyncio.ensure_future(_probe(url, timeout))
    plain = asyncio.ensure_future(_speaks_plain_http(url))
    try:
        done, _ = await asyncio.wait({secure, plain}, return_when=asyncio.FIRST_COMPLETED)
        if secure not in done and await plain:
            return explain(url, "tls", plain_http=True)
        reach = await secure
        if not reach.ok and reach.problem and await plain:
            return explain(url, "tls", plain_http=True)
        return reach
    finally:
        for job in (secure, plain):
            job.cancel()
        await asyncio.gather(secure, plain, return_exceptions=True)


async def _probe(url: str, timeout: float) -> Reach:
    try:
        reply = await _versions(url, timeout)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as err:
        return explain(url, kind_of(err), detail=_detail(err), limit=timeout)
    status, body = reply
    if not _is_homeserver(status, body):
        return not_a_homeserver(url, status)
    versions = body.get("versions") if isinstance(body, dict) else None
    return Reach(True, latest=str(versions[-1]) if versions else "?")


def not_a_homeserver(url: str, status: int) -> Reach:
    """`url` answers HTTP, but not the client API (pure; table-tested). Something after the
    host is the usual slip (a link copied from a browser, `/_matrix/client`): the fix names
    the URL without it. A 5xx is a proxy whose homeserver is away, which may come back; any
    other answer is the URL's fault, and lasting."""
    parts = urlsplit(url)
    problem = (
        f"{url} answers, but not as a Matrix homeserver (HTTP {status} for "
        "/_matrix/client/versions)"
    )
    lasting = status < 500
    if parts.path.strip("/") or parts.query or parts.fragment:
        bare = parts._replace(path="", query="", fragment="").geturl()
        return Reach(False, problem, f"use {bare} (without the path)", lasting=lasting)
    return Reach(
        False,
        problem,
        "give the homeserver's client API URL, the one Element signs in to",
        lasting=lasting,
    )


def _is_homeserver(status: int, body: object) -> bool:
    return status == 200 and isinstance(body, dict) and isinstance(body.get("versions"), list)


async def _versions(url: str, timeout: float) -> tuple[int, object]:
    limit = aiohttp.ClientTimeout(total=timeout)
    async with (
        aiohttp.ClientSession(timeout=limit) as session,
        session.get(url.rstrip("/") + "/_matrix/client/versions") as reply,
    ):
        try:
            body: object = await reply.json(content_type=None)
        except ValueError:
            body = None
        return reply.status, body


async def _speaks_plain_http(url: str) -> bool:
    """Whether a homeserver answers at `url`'s host and port in plain HTTP (a TLS port that
    answers a plain request with an error page is not one)."""
    plain = urlsplit(url)._replace(scheme="http").geturl()
    try:
        return _is_homeserver(*await _versions(plain, _PLAIN_LOOK_S))
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return False


async def _speaks_tls(url: str) -> bool:
    """Whether `url`'s host and port complete a TLS handshake (any certificate: only the
    protocol is asked, nothing is sent over it)."""
    parts = urlsplit(url)
    if parts.hostname is None:
        return False
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(_PLAIN_LOOK_S):
            _, writer = await asyncio.open_connection(
                parts.hostname, parts.port or 80, ssl=context, server_hostname=parts.hostname
            )
    except (OSError, TimeoutError, ssl.SSLError, ValueError):
        return False
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return True


def _detail(err: BaseException) -> str:
    """The failure's own words, never just a class name."""
    os_error = getattr(err, "os_error", None)
    if isinstance(os_error, OSError) and os_error.strerror:
        return os_error.strerror.lower()
    text = str(err).strip()
    return text or "the connection failed"
