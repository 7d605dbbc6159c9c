"""Routes what a sync brought: accept or reject invites, admit owner messages as tasks.

Every decision goes through the pure gate in `trust.py`; every refusal is logged with its
reason. A message is acknowledged (written to the ledger) before its sync token is saved.
"""

from __future__ import annotations

from collections.abc import Callable

from nio import SyncResponse

from .. import logs
from ..errors import HomeserverError
from ..store import Database
from .client import MatrixClient
from .inbound import Invite, Message, Unreadable, read_sync
from .trust import may_command, may_join

log = logs.get(__name__)


class Router:
    """Turns sync responses into joins, rejections and queued tasks."""

    def __init__(
        self,
        client: MatrixClient,
        db: Database,
        owners: frozenset[str],
        on_task: Callable[[], None],
        not_before_ms: int,
    ) -> None:
        self._client = client
        self._db = db
        self._owners = owners
        self._on_task = on_task
        # Messages older than the bot's first start are history, not tasks.
        self._not_before_ms = not_before_ms

    async def handle(self, response: SyncResponse) -> None:
        """Act on one sync response."""
        items = read_sync(response, self._client.user_id)
        if items:
            log.debug("sync.items", kinds=[type(item).__name__ for item in items])
        for item in items:
            try:
                await self._route(item)
            except Exception:
                # A bug in handling one event must not stop the bot hearing every later one
                # (a crash would re-read the same event at restart, forever).
                log.exception("router.item_failed", item=type(item).__name__, room=item.room_id)

    async def _route(self, item: Invite | Message | Unreadable) -> None:
        if isinstance(item, Invite):
            await self._invite(item)
        elif isinstance(item, Message):
            self._message(item)
        elif isinstance(item, Unreadable):
            log.warning(
                "matrix.undecryptable",
                room=item.room_id,
                event_id=item.event_id,
                sender=item.sender,
                session=item.session_id,
            )

    async def _invite(self, invite: Invite) -> None:
        verdict = may_join(invite, self._owners)
        try:
            if verdict.allowed:
                await self._client.join(invite.room_id)
                log.info("room.joined", room=invite.room_id, inviter=invite.inviter)
            else:
                await self._client.reject(invite.room_id)
                log.info(
                    "room.invite_rejected",
                    room=invite.room_id,
                    inviter=invite.inviter,
                    reason=verdict.reason,
                )
        except HomeserverError as err:
            # The invite stays pending and comes back in a later sync.
            log.warning("room.invite_failed", room=invite.room_id, error=err.message)

    def _message(self, message: Message) -> None:
        if message.origin_ts < self._not_before_ms:
            log.debug("message.history_skipped", event_id=message.event_id)
            return
        verdict = may_command(message, self._owners)
        if not verdict.allowed:
            log.info(
                "message.ignored",
                room=message.room_id,
                event_id=message.event_id,
                sender=message.sender,
                reason=verdict.reason,
            )
            return
        task = self._db.add_task(
            message.event_id, message.room_id, message.sender, message.body, message.origin_ts
        )
        if task is None:
            log.debug("message.duplicate", event_id=message.event_id)
            return
        log.info("task.queued", task=task.short_id, room=task.room_id, event_id=task.event_id)
        self._on_task()
