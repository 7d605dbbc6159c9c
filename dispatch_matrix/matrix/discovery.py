"""Which homeserver serves a user id: `.well-known/matrix/client` discovery, as clients do
it, so `init` needs only the bot's full user id (`@bot:example.org`)."""

from __future__ import annotations

import json

import aiohttp

from dispatch_matrix.core import logs

log = logs.get(__name__)

WELL_KNOWN = "/.well-known/matrix/client"


def server_of(user_id: str) -> str | None:
    """The server name of a full user id (`@bot:example.org` → `example.org`), or None."""
    if not user_id.startswith("@") or ":" not in user_id:
        return None
    server = user_id.split(":", 1)[1].strip()
    return server or None


def base_url_of(document: object) -> str | None:
    """The homeserver base URL a well-known document names, without a trailing slash."""
    if not isinstance(document, dict):
        return None
    homeserver = document.get("m.homeserver")
    base = homeserver.get("base_url") if isinstance(homeserver, dict) else None
    if not isinstance(base, str) or not base.startswith(("https://", "http://")):
        return None
    return base.rstrip("/")


async def discover(server: str, *, scheme: str = "https", timeout_s: float = 10) -> str | None:
    """The homeserver base URL `server`'s well-known document names; None without one
    (then the server name itself may serve it: the caller decides)."""
    url = f"{scheme}://{server}{WELL_KNOWN}"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.get(url, allow_redirects=True) as response,
        ):
            if response.status == 200:
                # Servers send it as text/plain or application/json; either is JSON.
                found = base_url_of(json.loads(await response.text()))
                if found is not None:
                    log.info("discovery.found", server=server, homeserver=found)
                    return found
            log.info("discovery.none", server=server, status=response.status)
    except (aiohttp.ClientError, TimeoutError, ValueError) as err:
        log.info("discovery.failed", server=server, error=type(err).__name__)
    return None
