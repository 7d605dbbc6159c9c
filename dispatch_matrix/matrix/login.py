"""How the bot's device comes to be: a password login, a token someone issued for it (MAS),
and the check that a saved device's crypto store still opens. Used by `MatrixClient.connect`,
which keeps one device for the bot's whole life."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from nio import LoginResponse

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import LoginError
from dispatch_matrix.matrix.failures import UNREACHABLE, TokenRejected, Unreachable, why_unreachable
from dispatch_matrix.store.models import Session

if TYPE_CHECKING:
    from dispatch_matrix.matrix.client import MatrixClient

log = logs.get(__name__)


async def adopt(client: MatrixClient, token: str, lost: str | None) -> Session:
    """Use a token someone issued for the bot (its device is whatever it names)."""
    probe = client.make_nio(None)
    probe.user_id, probe.access_token = client.user_id, token
    try:
        response = await client.call("whoami", probe.whoami())
    except TokenRejected:
        raise LoginError(
            "the homeserver rejected the token in matrix.access_token_file",
            fix="issue a new one (mas-cli manage issue-compatibility-token) or use a password",
        ) from None
    finally:
        await probe.close()
    if response.user_id != client.user_id:
        raise LoginError(
            f"matrix.access_token_file belongs to {response.user_id}, not {client.user_id}",
            fix="issue the token for the bot's own account",
        )
    if not response.device_id or response.device_id == lost:
        raise LoginError(
            "the access token names no device the bot can use"
            + (f" (its device {lost} lost its encryption keys)" if lost else ""),
            fix="issue a token for a new device: mas-cli manage issue-compatibility-token "
            f"{client.user_id.split(':', 1)[0].lstrip('@')} --device-id <NEW_ID>",
        )
    client.nio = client.make_nio(response.device_id)
    client.nio.restore_login(client.user_id, response.device_id, token)
    session = Session(client.homeserver, client.user_id, response.device_id, token)
    client.db.save_session(session)
    log.info("matrix.token_adopted", user=client.user_id, device=response.device_id)
    return session


def store_usable(client: MatrixClient, saved: Session) -> bool:
    """Whether the saved device's crypto store opens; an unreadable one is moved aside."""
    path = client.state.crypto_dir / f"{saved.user_id}_{saved.device_id}.db"
    if not path.exists():
        return False
    probe = client.make_nio(saved.device_id)
    try:
        probe.user_id = saved.user_id
        probe.load_store()
        if probe.olm is None:
            raise ValueError("no olm account in the store")
    except Exception as err:  # noqa: BLE001 - any failure to open the store means lost
        aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
        path.rename(aside)
        log.error("matrix.crypto_store_unreadable", error=repr(err), moved_to=str(aside))
        return False
    return True


async def with_password(
    client: MatrixClient, password: str | None, device_id: str | None
) -> Session:
    """Log in with the password (with the old device id: the same device and keys)."""
    if not password:
        raise LoginError(
            "the bot has no saved login and no password",
            fix="set [matrix] password, password_file or access_token_file (or "
            "DISPATCH_MATRIX__PASSWORD)",
        )
    # Logging in with the old device id keeps the same device (and its keys).
    client.nio = client.make_nio(device_id)
    try:
        response = await client.nio.login(password, device_name=client.device_name)
    except UNREACHABLE as err:
        await client.nio.close()
        raise Unreachable(
            f"cannot reach {client.homeserver} ({why_unreachable(err)})",
            fix="check [matrix] homeserver and that the server is up",
        ) from err
    if not isinstance(response, LoginResponse):
        await client.nio.close()
        code = getattr(response, "status_code", "")
        if code == "M_FORBIDDEN":
            raise LoginError(
                f"the homeserver rejected the password for {client.user_id}",
                fix="check [matrix] password (or password_file)",
            )
        raise LoginError(f"login as {client.user_id} failed: {code} {response.message}")
    session = Session(
        client.homeserver, response.user_id, response.device_id, response.access_token
    )
    client.db.save_session(session)
    log.info("matrix.logged_in", user=session.user_id, device=session.device_id)
    return session
