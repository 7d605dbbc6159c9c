"""User-interactive auth (the spec's UIA) as the bot meets it: with a password on a classic
homeserver, or — behind Matrix Authentication Service (matrix.org and others) — only through
a browser, where the account's owner approves a cross-signing reset or a device removal.

The reading of a 401 answer is pure; the callers decide what to do with it.
"""

from __future__ import annotations

from typing import Any

from dispatch_matrix.core.errors import DispatchError

PASSWORD = "m.login.password"
# Stages a bot cannot complete itself: a person approves in a browser, at the URL given.
BROWSER_STAGES = ("org.matrix.cross_signing_reset", "m.oauth")


class ApprovalInBrowser(DispatchError):
    """The homeserver wants the account's owner to approve this in a browser first."""

    def __init__(self, what: str, url: str | None) -> None:
        where = f"open {url}" if url else "open the account management page of the bot's account"
        super().__init__(
            f"the homeserver wants {what} approved in a browser",
            fix=f"{where}, signed in as the bot, and approve it; the bot retries by itself",
        )
        self.url = url


def wants_auth(status: int, reply: dict[str, Any]) -> bool:
    """Whether the answer is a UIA challenge (401 with flows)."""
    return status == 401 and isinstance(reply.get("flows"), list)


def password_flow(reply: dict[str, Any]) -> bool:
    """Whether one of the flows is the password alone."""
    return any(
        isinstance(flow, dict) and flow.get("stages") == [PASSWORD]
        for flow in reply.get("flows") or []
    )


def browser_url(reply: dict[str, Any]) -> str | None:
    """The URL a browser-only stage names in the challenge's params, if any."""
    params = reply.get("params") or {}
    for stage in BROWSER_STAGES:
        url = (params.get(stage) or {}).get("url") if isinstance(params, dict) else None
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            return url
    return None


def password_auth(user_id: str, password: str, session: str | None) -> dict[str, Any]:
    """The `auth` dict of a password stage."""
    return {
        "type": PASSWORD,
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": password,
        "session": session,
    }
