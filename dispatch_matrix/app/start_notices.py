"""What the daemon tells about itself once it is connected: the banner on the terminal;
to the owners, a device that replaced a lost one (and whether the old one could be
removed), a task resumed after a restart, shell commands that run without the sandbox, a
model that is deprecated or retired, and a connector that did not start. Each is said
once (fixed keys)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dispatch_matrix import __version__
from dispatch_matrix.app.connect import REMOVAL_META, REPLACED_META
from dispatch_matrix.app.onboarding import OWNER_PASSWORD_FILE
from dispatch_matrix.core import logs
from dispatch_matrix.core.ids import RoomID
from dispatch_matrix.matrix import texts
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.outbox import Outbox
from dispatch_matrix.queue import texts as queue_texts
from dispatch_matrix.store import Connection

if TYPE_CHECKING:
    from dispatch_matrix.agent import Engine
    from dispatch_matrix.app.config import Config
    from dispatch_matrix.connectors.hub import Connectors
    from dispatch_matrix.matrix.sync import SyncLoop
    from dispatch_matrix.matrix.welcome import Welcome
    from dispatch_matrix.store.db import Session

log = logs.get(__name__)


@dataclass(frozen=True)
class StartNotices:
    """The banner and the owners' notices of one start, said once the first sync is in."""

    config: Config
    session: Session
    client: MatrixClient
    db: Connection
    outbox: Outbox
    agent: Engine
    sync: SyncLoop
    welcome: Welcome
    # The room of a task a restart interrupted (it runs again), if there is one.
    resumed_in: RoomID | None
    unconfined: bool
    say: Callable[[str], None]

    async def run(self) -> None:
        """Wait for the first sync, print the banner, then tell the owners."""
        await self.sync.first_sync_done.wait()
        invited = self.welcome.awaited()
        self.say(banner(self.config, self.session, self.sync.first_sync_seconds, invited))
        sys.stdout.flush()
        await announce_replacement(self.client, self.db, self.outbox)
        if self.resumed_in is not None:
            await self.outbox.post(self.resumed_in, queue_texts.RESUMED_AFTER_RESTART, notice=True)
        if self.unconfined:
            await announce_unconfined(self.client, self.outbox)
        await report_model(self.agent, self.db, self.client, self.outbox)


async def tell_connector_failures(
    first_sync: asyncio.Event,
    rooms_changed: asyncio.Event,
    client: MatrixClient,
    connectors: Connectors,
    outbox: Outbox,
) -> None:
    """Tell the owners, once per run, server and room, that an MCP server did not start.

    It waits for a failure; then, since a failure at start-up comes before the bot is in
    any room, for the first sync and, while the bot is in no room, for a change of rooms
    (`rooms_changed`, set by the router). Nothing here runs at a sync otherwise.
    """
    started = int(time.time())
    while True:
        pending = [await connectors.failures.get()]
        while not connectors.failures.empty():
            pending.append(connectors.failures.get_nowait())
        await first_sync.wait()
        while not client.client.rooms:
            rooms_changed.clear()
            await rooms_changed.wait()
        # Failures that came while it waited for a room go in the same round.
        while not connectors.failures.empty():
            pending.append(connectors.failures.get_nowait())
        for name, reason in pending:
            for room_id in list(client.client.rooms):
                await outbox.post(
                    RoomID(room_id),
                    queue_texts.mcp_failed(name, reason),
                    notice=True,
                    key=f"mcp-failed-{name}-{started}-{room_id}",
                )


async def announce_replacement(client: MatrixClient, db: Connection, outbox: Outbox) -> None:
    """Tell each room, once, that the bot's device was replaced (its keys were lost) and
    whether the old one was deleted (`connect.retire_device` left both in the ledger)."""
    old = db.get_meta(REPLACED_META)
    if not old:
        return
    for room_id in list(client.client.rooms):
        await outbox.post(
            RoomID(room_id),
            texts.device_replaced(old, client.device_id, db.get_meta(REMOVAL_META) or None),
            notice=True,
            key=f"replaced-{old}-{room_id}",
        )
    db.set_meta(REPLACED_META, "")


async def announce_unconfined(client: MatrixClient, outbox: Outbox) -> None:
    """Tell each room, once (a fixed key), that shell commands run without the sandbox."""
    for room_id in list(client.client.rooms):
        await outbox.post(
            RoomID(room_id), texts.sandbox_off(), notice=True, key=f"sandbox-off-{room_id}"
        )


async def report_model(agent: Engine, db: Connection, client: MatrixClient, outbox: Outbox) -> None:
    """A deprecated or retired model is logged at every start, and said once in each room;
    a refused API key is said on the console at once (the banner has just said "connected";
    the first task would be refused, kept and the queue paused, and only the room told)."""
    status = await agent.model_status()
    if status.refused is not None:
        log.error(
            "model.access_refused",
            error=f"the Messages API refused the API key ({status.refused})",
            fix="set a valid ANTHROPIC_API_KEY (or [agent] api_key_file) and restart; "
            "messages wait in the queue until then",
        )
    notice = status.notice()
    if notice is None:
        return
    log.warning(
        "model.deprecated",
        model=status.name,
        lifecycle=status.lifecycle,
        retires=status.retires,
        replacement=status.replacement,
    )
    rooms = list(client.client.rooms)
    key = f"model-ending-{status.name}-{status.lifecycle}"
    # No room yet (a first start): said at a later start, once the owner's room exists.
    if not rooms or not db.first_notice(key):
        return
    for room_id in rooms:
        await outbox.post(
            RoomID(room_id), queue_texts.model_ending(notice), notice=True, key=f"{key}-{room_id}"
        )


def banner(
    config: Config, session: Session, first_sync_s: float | None, invited: Sequence[str] = ()
) -> str:
    """What a newcomer needs to see once the bot is connected (`invited`: owners who have
    not yet accepted the DM init opened for them)."""
    owners = ", ".join(config.matrix.owners)
    took = f" (first sync {first_sync_s:.2f}s)" if first_sync_s is not None else ""
    # The private homeserver's owner account: where its password is, at every start (the
    # printout of `init` that showed it scrolled away long ago).
    owner_password = config.state_dir / OWNER_PASSWORD_FILE
    sign_in = (
        f"  sign in as {config.matrix.owners[0]}: password in {owner_password}\n"
        if config.local_homeserver.enabled and owner_password.exists()
        else ""
    )
    return (
        f"dispatch-matrix {__version__}: connected{took}\n"
        f"  bot:    {session.user_id}  device {session.device_id}\n"
        f"  server: {session.homeserver}\n"
        f"  owners: {owners}\n"
        f"  state:  {config.state_dir}\n"
        f"{sign_in}"
        f"{_how_to_talk(session.user_id, invited)}"
        f"It answers only encrypted messages from its owners. Stop with Ctrl-C."
    )


def _how_to_talk(bot: str, invited: Sequence[str]) -> str:
    if invited:
        return (
            f"To talk to it: in Element, as {', '.join(invited)}, accept the invite from {bot}\n"
            "(an encrypted DM), and send a message. "
        )
    return (
        f"To talk to it: sign in to Element as an owner, start a chat with {bot}\n"
        "(Start chat → enter the id → Go), and send a message. "
    )
