"""The operator's identity commands, run on the computer (never from the room):
`dispatch-matrix trust` (re-pin an owner's identity) and `reset-identity` (new keys for the
bot). Both use the bot's saved login; neither starts a new device.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from dispatch_matrix.core.errors import DispatchError, StateError
from dispatch_matrix.core.ids import UserID
from dispatch_matrix.identity.crosssign import ensure_identity, until_approved
from dispatch_matrix.identity.gate import UserKeys
from dispatch_matrix.identity.tables import IdentityTables
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.settings import MatrixSection
from dispatch_matrix.store import Database
from dispatch_matrix.store.state import StateFolder


class BotSettings(Protocol):
    """What the identity commands read of the config: the bot's account and its state
    folder (the app's `Config` is one)."""

    @property
    def matrix(self) -> MatrixSection: ...

    @property
    def state_dir(self) -> Path: ...


@contextlib.asynccontextmanager
async def saved_login(
    config: BotSettings,
) -> AsyncIterator[tuple[MatrixClient, Database, StateFolder]]:
    """The bot's client restored from the state folder (no sync, no new device)."""
    state = StateFolder(config.state_dir)
    if not state.db_path.exists():
        raise StateError(
            f"no state in {state.root}", fix="run `dispatch-matrix init` and `run` first"
        )
    db = Database.open(state.db_path)
    client = MatrixClient(config.matrix.homeserver, UserID(config.matrix.user_id), state, db)
    try:
        password = config.matrix.secret_password()
        await client.connect(password.get_secret_value() if password else None)
        yield client, db, state
    finally:
        await client.close()
        db.close()


async def trust(config: BotSettings, user_id: str | None, say: Callable[[str], None]) -> int:
    """List pinned identities, or re-pin `user_id` to the identity it publishes now."""
    async with saved_login(config) as (client, db, _state):
        tables = IdentityTables(db)
        if user_id is None:
            pins = tables.identities()
            if not pins:
                say("No identities pinned yet (an owner's is pinned when they first write).")
            for user, pinned, at, how in pins:
                when = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")
                say(f"{user}  master {pinned}  pinned {when} ({how})")
            return 0
        if user_id not in config.matrix.owners:
            raise DispatchError(f"{user_id} is not an owner", fix="add it to [matrix] owners first")
        keys = UserKeys.from_query(await client.query_keys([user_id]), user_id)
        master = keys.master_key
        if master is None:
            raise DispatchError(
                f"{user_id} publishes no cross-signing identity",
                fix="set up cross-signing in their client (Element: Settings → Security)",
            )
        old = tables.pinned_identity(user_id)
        tables.pin_identity(user_id, master, how="operator")
        tables.forget_notices(f"identity:{user_id}")
        if old == master:
            say(f"{user_id}: identity {master} was already pinned.")
        else:
            say(f"{user_id}: now trusting identity {master} (was {old or 'none'}).")
        held = [row for row in tables.held_messages() if row[0] == user_id and row[1] == master]
        if held:
            say(
                f"{len(held)} message(s) it sent while untrusted will run in order when the "
                "bot next syncs: within matrix.sync_timeout_ms if it is running (sooner when "
                "a message arrives), else at its next start."
            )
        return 0


async def reset_identity(config: BotSettings, say: Callable[[str], None]) -> int:
    """Replace the bot's cross-signing keys with new ones (the daemon must be stopped)."""
    state = StateFolder(config.state_dir)
    state.lock()
    try:
        async with saved_login(config) as (client, _db, _state):
            password = config.matrix.secret_password()
            secret = password.get_secret_value() if password else None
            identity = await until_approved(
                lambda: ensure_identity(client, state, secret, reset=True),
                say,
                give_up_s=15 * 60,
            )
            say(
                f"New cross-signing identity {identity.keys.master.public} published and "
                f"device {client.device_id} signed. Owners' clients will show that the bot's "
                "identity changed; verify it again from Element."
            )
    finally:
        state.unlock()
    return 0
