"""The bot's device over its life: restore the saved one, or make one by a password login or
by adopting a token someone issued for it (MAS), and check that a saved device's crypto
store still opens. `Devices.open` returns what it made; the client then only uses it.

The bot keeps one device for its whole life: the first start logs in and saves the token
and device id; every later start restores them. A device whose keys are lost is never
re-created under its old id (that would break every owner's view of it): a new one
replaces it, and the old id is returned for the caller to delete and announce.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nio import AsyncClient, AsyncClientConfig, LoginResponse

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import LoginError
from dispatch_matrix.core.ids import UserID
from dispatch_matrix.matrix.failures import (
    UNREACHABLE,
    TokenRejected,
    Unreachable,
    checked,
    why_unreachable,
)
from dispatch_matrix.store import Connection
from dispatch_matrix.store.db import Session
from dispatch_matrix.store.state import StateFolder

log = logs.get(__name__)

# nio would retry timeouts and 429s forever inside one call; we bound that and let the
# caller's loop back off, log, and decide.
_CLIENT_CONFIG: dict[str, Any] = {
    "encryption_enabled": True,
    "store_sync_tokens": False,
    "max_limit_exceeded": 5,
    "max_timeouts": 1,
    "backoff_factor": 0.5,
    "max_timeout_retry_wait_time": 5,
    "request_timeout": 60,
}


@dataclass(frozen=True)
class Device:
    """A device the bot is signed in as: its nio client (crypto store loaded), its saved
    session, and the saved device it replaced because that one's keys were lost."""

    nio: AsyncClient
    session: Session
    replaced: str | None = None


class Devices:
    """Makes or restores the bot's one device from the saved session and the credentials."""

    def __init__(
        self,
        homeserver: str,
        user_id: UserID,
        state: StateFolder,
        db: Connection,
        device_name: str = "dispatch-matrix",
    ) -> None:
        self._homeserver = homeserver
        self._user_id = user_id
        self._state = state
        self._db = db
        self._device_name = device_name

    def nio_for(self, device_id: str | None) -> AsyncClient:
        """A nio client for one of the bot's devices, on our encrypted crypto store."""
        config = AsyncClientConfig(pickle_key=self._state.pickle_key(), **_CLIENT_CONFIG)
        return AsyncClient(
            self._homeserver,
            self._user_id,
            device_id=device_id or "",
            store_path=str(self._state.crypto_dir),
            config=config,
        )

    async def open(self, password: str | None, access_token: str | None = None) -> Device:
        """Restore the saved device or sign in for the first time.

        `access_token` (a compatibility token from MAS, `mas-cli manage
        issue-compatibility-token`) stands in for the password login: its device becomes
        the bot's device. If the saved device's crypto store is gone or unreadable, a new
        device replaces it (`Device.replaced` names the old one).
        """
        saved = self._db.session()
        if saved is not None and saved.user_id != self._user_id:
            raise LoginError(
                f"the state folder belongs to {saved.user_id}, not {self._user_id}",
                fix="use a new [store] path for a different bot account",
            )
        if saved is not None and not self._store_usable(saved):
            log.error("matrix.crypto_store_lost", device=saved.device_id)
            made = await self._sign_in(password, access_token, None, lost=saved.device_id)
            return Device(made.nio, made.session, replaced=saved.device_id)
        if saved is not None:
            nio = self.nio_for(saved.device_id)
            nio.restore_login(saved.user_id, saved.device_id, saved.access_token)
            try:
                await checked(self._homeserver, "whoami", nio.whoami())
            except TokenRejected:
                log.warning("matrix.token_rejected", device=saved.device_id)
                await nio.close()
                if access_token == saved.access_token:
                    access_token = None
            except BaseException:
                # The homeserver was away: this try leaves no session open.
                await nio.close()
                raise
            else:
                log.info("matrix.restored", user=saved.user_id, device=saved.device_id)
                return Device(nio, saved)
        return await self._sign_in(password, access_token, saved.device_id if saved else None)

    async def _sign_in(
        self,
        password: str | None,
        access_token: str | None,
        device_id: str | None,
        lost: str | None = None,
    ) -> Device:
        """A login with the password, or the adoption of a given access token."""
        if access_token is not None and (password is None or lost is None):
            return await self._adopt(access_token, lost)
        return await self._with_password(password, device_id)

    async def _adopt(self, token: str, lost: str | None) -> Device:
        """Use a token someone issued for the bot (its device is whatever it names)."""
        probe = self.nio_for(None)
        probe.user_id, probe.access_token = self._user_id, token
        try:
            response = await checked(self._homeserver, "whoami", probe.whoami())
        except TokenRejected:
            raise LoginError(
                "the homeserver rejected the token in matrix.access_token_file",
                fix="issue a new one (mas-cli manage issue-compatibility-token) or use a password",
            ) from None
        finally:
            await probe.close()
        if response.user_id != self._user_id:
            raise LoginError(
                f"matrix.access_token_file belongs to {response.user_id}, not {self._user_id}",
                fix="issue the token for the bot's own account",
            )
        if not response.device_id or response.device_id == lost:
            raise LoginError(
                "the access token names no device the bot can use"
                + (f" (its device {lost} lost its encryption keys)" if lost else ""),
                fix="issue a token for a new device: mas-cli manage issue-compatibility-token "
                f"{self._user_id.split(':', 1)[0].lstrip('@')} --device-id <NEW_ID>",
            )
        nio = self.nio_for(response.device_id)
        nio.restore_login(self._user_id, response.device_id, token)
        session = Session(self._homeserver, self._user_id, response.device_id, token)
        self._db.save_session(session)
        log.info("matrix.token_adopted", user=self._user_id, device=response.device_id)
        return Device(nio, session)

    def set_aside(self, saved: Session, why: str) -> Path:
        """Move the saved device's crypto store aside, so the next `open` replaces the
        device (its keys can no longer be used); returns where it went."""
        path = self._state.crypto_dir / f"{saved.user_id}_{saved.device_id}.db"
        aside = path.with_name(f"{path.name}.{why}-{int(time.time())}")
        path.rename(aside)
        return aside

    def _store_usable(self, saved: Session) -> bool:
        """Whether the saved device's crypto store opens; an unreadable one is moved aside."""
        path = self._state.crypto_dir / f"{saved.user_id}_{saved.device_id}.db"
        if not path.exists():
            return False
        probe = self.nio_for(saved.device_id)
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

    async def _with_password(self, password: str | None, device_id: str | None) -> Device:
        """Log in with the password (with the old device id: the same device and keys)."""
        if not password:
            raise LoginError(
                "the bot has no saved login and no password",
                fix="set [matrix] password, password_file or access_token_file (or "
                "DISPATCH_MATRIX__PASSWORD)",
            )
        # Logging in with the old device id keeps the same device (and its keys).
        nio = self.nio_for(device_id)
        try:
            response = await nio.login(password, device_name=self._device_name)
        except asyncio.CancelledError:
            # Ctrl-C during `init`: an open session would be reported as unclosed at exit.
            await nio.close()
            raise
        except UNREACHABLE as err:
            await nio.close()
            raise Unreachable(
                f"cannot reach {self._homeserver} ({why_unreachable(err)})",
                fix="check [matrix] homeserver and that the server is up",
            ) from err
        if not isinstance(response, LoginResponse):
            await nio.close()
            code = getattr(response, "status_code", "")
            if code == "M_FORBIDDEN":
                raise LoginError(
                    f"the homeserver rejected the password for {self._user_id}",
                    fix="check [matrix] password (or password_file)",
                )
            raise LoginError(f"login as {self._user_id} failed: {code} {response.message}")
        session = Session(
            self._homeserver, response.user_id, response.device_id, response.access_token
        )
        self._db.save_session(session)
        log.info("matrix.logged_in", user=session.user_id, device=session.device_id)
        return Device(nio, session)
