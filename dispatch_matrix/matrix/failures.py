"""How talking to the homeserver fails, as our error kinds: the one place nio's two failure
channels (exceptions and error responses) are sorted into them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import aiohttp
from nio import ErrorResponse, LocalProtocolError

from dispatch_matrix.core.errors import HomeserverError

# nio's own figure for a 429 that names no wait.
DEFAULT_RETRY_AFTER_MS = 5000
UNREACHABLE = (aiohttp.ClientError, OSError, TimeoutError, asyncio.TimeoutError)


class Unreachable(HomeserverError):
    """The homeserver did not answer (connection refused, DNS, timeout)."""


class CannotSend(HomeserverError):
    """nio refused to send locally (a room it does not know, devices it cannot encrypt to)."""


class RequestRefused(HomeserverError):
    """The homeserver answered with an error for this request (not an outage)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


# Refusals of a room event that no retry can fix: the bot is not (or no longer) allowed in
# the room, the room is gone, or the event itself is unacceptable. M_UNKNOWN_ROOM is not in
# the spec, but servers send it for a room they do not know.
FINAL_CODES = frozenset(
    {
        "M_FORBIDDEN",
        "M_NOT_FOUND",
        "M_UNKNOWN_ROOM",
        "M_GUEST_ACCESS_FORBIDDEN",
        "M_TOO_LARGE",
        "M_BAD_JSON",
        "M_NOT_JSON",
        "M_INVALID_PARAM",
        "M_USER_DEACTIVATED",
    }
)


def is_keys_clash(err: HomeserverError) -> bool:
    """Whether a key upload was refused because the homeserver holds other one-time keys
    under the same ids (Synapse: 'One time key … already exists'): an upload made before,
    whose keys this device never saved."""
    return (
        isinstance(err, RequestRefused)
        and "already exists" in err.message
        and ("one time key" in err.message.lower())
    )


def is_final(err: HomeserverError) -> bool:
    """Whether the homeserver refused for good: a retry would be refused the same way."""
    return isinstance(err, RequestRefused) and err.code in FINAL_CODES


class RateLimited(HomeserverError):
    """The homeserver refused this request for now (429, M_LIMIT_EXCEEDED): try this one
    again after `retry_after_s`; other requests may go on meanwhile."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TokenRejected(HomeserverError):
    """The homeserver no longer accepts the saved access token."""


def why_unreachable(err: BaseException) -> str:
    """A short reason a connection failed, for a person."""
    if isinstance(err, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    os_error = getattr(err, "os_error", None) or (err if isinstance(err, OSError) else None)
    if isinstance(os_error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, aiohttp.ClientConnectorDNSError):
        return "host name not found"
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        return "TLS certificate not trusted"
    if isinstance(os_error, OSError) and os_error.strerror:
        return os_error.strerror.lower()
    # The failure's own words, never a class name a person cannot act on.
    return str(err).strip() or "the connection failed"


def failure(what: str, response: ErrorResponse) -> HomeserverError:
    """The error kind for nio's error response to `what`."""
    code = getattr(response, "status_code", None) or "error"
    text = getattr(response, "message", "") or str(response)
    if code == "M_LIMIT_EXCEEDED":
        # Synapse sends retry_after_ms; a server that does not is given a few seconds.
        wait_ms = getattr(response, "retry_after_ms", None) or DEFAULT_RETRY_AFTER_MS
        return RateLimited(f"{what}: rate limited ({text})".strip(), wait_ms / 1000)
    if code in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"):
        return TokenRejected(f"{what}: the homeserver rejected our access token ({code})")
    if str(code).startswith("M_") and code != "M_LIMIT_EXCEEDED":
        return RequestRefused(f"{what} failed: {code} {text}".strip(), str(code))
    return HomeserverError(f"{what} failed: {code} {text}".strip())


UNREACHABLE_FIX = "is the homeserver running? Check [matrix] homeserver and the network"


async def checked(homeserver: str, what: str, request: Awaitable[Any]) -> Any:
    """Await one nio request to `homeserver`; its failure as one of our error kinds (nio
    reports failures both as exceptions and as error responses)."""
    try:
        response = await request
    except LocalProtocolError as err:
        raise CannotSend(f"{what}: {err}") from err
    except UNREACHABLE as err:
        raise Unreachable(
            f"{what}: cannot reach {homeserver} ({why_unreachable(err)})", fix=UNREACHABLE_FIX
        ) from err
    if isinstance(response, ErrorResponse):
        raise failure(what, response)
    return response
