"""The bot's own cross-signing identity: create once, upload, sign our device; never replace
silently.

Clients that exclude insecure devices (MSC4153) share room keys only with devices their owner
cross-signed, and refuse messages from others. So before the bot joins any room it makes sure
that its master key is on the homeserver and that its self-signing key signed its device.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dispatch_matrix.core import logs
from dispatch_matrix.core.backoff import Backoff
from dispatch_matrix.core.errors import HomeserverError, LoginError, TrustError
from dispatch_matrix.identity.signing import CrossSigningKeys, key_of, verify
from dispatch_matrix.matrix import uia
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.store.state import StateFolder

log = logs.get(__name__)

T = TypeVar("T")
UPLOAD = "/_matrix/client/v3/keys/device_signing/upload"
SIGNATURES = "/_matrix/client/v3/keys/signatures/upload"


class IdentityConflict(TrustError):
    """The account has cross-signing keys whose private parts this bot does not hold."""


@dataclass(frozen=True)
class OwnIdentity:
    """The bot's cross-signing keys and what had to be done to publish them."""

    keys: CrossSigningKeys
    uploaded: bool
    signed_device: bool


def keys_path(state: StateFolder) -> Path:
    """Where the private cross-signing seeds are kept."""
    return state.secrets_dir / "cross-signing.json"


async def ensure_identity(
    client: MatrixClient, state: StateFolder, password: str | None, *, reset: bool = False
) -> OwnIdentity:
    """Make sure our cross-signing keys are published and sign our device (idempotent).

    With `reset`, new keys replace whatever the account has (the operator asked for it).
    """
    me = client.user_id
    path = keys_path(state)
    keys = None if reset else CrossSigningKeys.load(path)
    if keys is not None and not keys.publics_saved:
        # An older file holds only the seeds: save the public keys beside them, so that
        # later starts need no signing library to know them.
        keys.save(path)
    published = await client.query_keys([me])
    server_master = key_of(published.get("master_keys", {}).get(me, {}))
    uploaded = False
    if keys is None or server_master != keys.master.public:
        if server_master is not None and not reset:
            raise IdentityConflict(
                "the bot's account already has a cross-signing identity "
                + (
                    "that this state folder does not hold" if keys is None else "that replaced ours"
                ),
                fix="if you trust this computer, run `dispatch-matrix reset-identity` "
                "(owners will see the bot's identity change)",
            )
        if keys is None:
            keys = CrossSigningKeys.generate()
            # Saved before the upload: a crash in between re-uploads the same keys.
            keys.save(path)
        await _upload_with_auth(client, keys.upload_body(me), password)
        uploaded = True
        log.info("crosssign.uploaded", master=keys.master.public)
        published = await client.query_keys([me])
    device = published.get("device_keys", {}).get(me, {}).get(client.device_id)
    if device is None:
        raise HomeserverError(
            f"the homeserver does not list our device {client.device_id}'s keys",
            fix="restart; the keys are uploaded at start",
        )
    signed = False
    if not verify(device, me, keys.self_signing.key_id, keys.self_signing.public):
        signed_device = keys.self_signing.sign(device, me)
        reply = await client.api_ok("POST", SIGNATURES, {me: {client.device_id: signed_device}})
        _check_failures(reply)
        signed = True
        log.info("crosssign.device_signed", device=client.device_id)
    return OwnIdentity(keys, uploaded, signed)


async def until_approved(
    attempt: Callable[[], Awaitable[T]],
    say: Callable[[str], None],
    *,
    every_s: float = 10.0,
    give_up_s: float | None = None,
) -> T:
    """Run `attempt`; while the homeserver wants a person's approval in a browser, say
    once where, then try again now and then (never a tight loop) until it is given."""
    backoff = Backoff(every_s, 60.0)
    started = time.monotonic()
    told = False
    while True:
        try:
            return await attempt()
        except uia.ApprovalInBrowser as err:
            if not told:
                say(f"Waiting for an approval in a browser: {err.one_line()}")
                told = True
            log.warning("crosssign.approval_needed", url=err.url, fix=err.fix)
            if give_up_s is not None and time.monotonic() - started > give_up_s:
                raise
            await asyncio.sleep(backoff.next())


async def sign_user(client: MatrixClient, keys: CrossSigningKeys, master: dict[str, Any]) -> None:
    """Sign another user's master key with our user-signing key (they are verified to us)."""
    user_id = master["user_id"]
    signed = keys.user_signing.sign(master, client.user_id)
    public = key_of(master)
    reply = await client.api_ok("POST", SIGNATURES, {user_id: {public: signed}})
    _check_failures(reply)
    log.info("crosssign.user_signed", user=user_id)


async def _upload_with_auth(
    client: MatrixClient, body: dict[str, Any], password: str | None
) -> None:
    # A first upload needs no auth (MSC3967); replacing keys asks for the password on a
    # classic homeserver, and for a person's approval in a browser behind MAS.
    status, reply = await client.api("POST", UPLOAD, body)
    if uia.wants_auth(status, reply):
        if not uia.password_flow(reply):
            raise uia.ApprovalInBrowser(
                "replacing the bot's cross-signing keys", uia.browser_url(reply)
            )
        if not password:
            raise LoginError(
                "the homeserver wants the bot's password to publish its cross-signing keys",
                fix="set [matrix] password or password_file",
            )
        auth = uia.password_auth(client.user_id, password, reply.get("session"))
        status, reply = await client.api("POST", UPLOAD, {**body, "auth": auth})
    if status != 200:
        code = reply.get("errcode", status)
        if status == 401:
            raise LoginError(
                f"the homeserver refused the password for the cross-signing upload ({code})",
                fix="check [matrix] password",
            )
        raise HomeserverError(f"cross-signing upload failed: {code} {reply.get('error', '')}")


def _check_failures(reply: dict[str, Any]) -> None:
    failures = reply.get("failures") or {}
    if failures:
        raise HomeserverError(f"the homeserver refused a signature: {failures}")
