"""Owners' messages from an identity the bot has not trusted yet: held, told, then run.

When an owner resets their cross-signing identity, the bot stops obeying it (trust on first
use pinned the old one). Their message is not dropped: it is held in the store, and the
owner is told, in a notice their new device can read (`side_notice`), what happened and the
one command that fixes it. Once `dispatch-matrix trust` pins the new identity (while a
message is held, the pins of its senders are read at every sync, so no restart is needed;
a restart works the same), each held message is routed again in order, through the same
gate as any message. While nothing is held, a sync costs this module nothing: the count of
held messages is kept in memory (loaded at start), and a release is tried only when
something that could free one happened (`release_due`).

Why run rather than only name them: the operator explicitly trusted, on the computer, the
very identity that signed them; they are what the owner asked for minutes ago, and "send it
again" is the friction being removed. A held message is only named (never run) when the
identity trusted is not the one it came under, its device no longer passes the gate, or it
waited longer than `MAX_HOLD_S` (a day-old order is no longer what the owner expects; one
never trusted within that time is named then too).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.identity import texts
from dispatch_matrix.identity.gate import DeviceTrust, UserKeys
from dispatch_matrix.identity.side_notice import send_readable_by
from dispatch_matrix.identity.tables import IdentityTables
from dispatch_matrix.matrix.inbound import Message

if TYPE_CHECKING:
    from dispatch_matrix.matrix.client import MatrixClient
    from dispatch_matrix.matrix.outbox import Outbox

log = logs.get(__name__)

# Held longer than this, a message is named, not run.
MAX_HOLD_S = 24 * 3600
PREVIEW_CHARS = 40


class Release(enum.Enum):
    """What to do with a held message now."""

    WAIT = "wait"  # its identity is still not trusted
    RUN = "run"
    NAME = "name"  # tell the owner it was not run


def release_action(
    device: DeviceTrust | None,
    allowed_now: bool,
    held_master: str | None,
    pinned_master: str | None,
    age_s: float,
    max_age_s: float = MAX_HOLD_S,
) -> Release:
    """Whether a held message runs now, waits, or is named (pure).

    `device` is the sending device's standing against the pin now, `allowed_now` the gate's
    verdict on the message now; `held_master` the identity it came under.
    """
    if device is DeviceTrust.IDENTITY_CHANGED:
        # Never trusted within a day: named (bounds the store and the re-checks while held).
        return Release.WAIT if age_s <= max_age_s else Release.NAME
    if allowed_now and held_master is not None and held_master == pinned_master:
        return Release.RUN if age_s <= max_age_s else Release.NAME
    return Release.NAME


def release_due(
    *,
    first_look: bool,
    devices_changed: bool,
    keys_fetched: bool,
    pins_changed: bool,
    oldest_age_s: float,
    max_age_s: float = MAX_HOLD_S,
) -> bool:
    """Whether the held messages are worth judging again now (pure): at the first look of
    a run; after a device-list or cross-signing change, or a fresh fetch of an owner's keys
    (a device's standing may differ); when a held sender's pin changed (`dispatch-matrix
    trust` or pairing, in another process); when the oldest one outgrew `max_age_s` (it is
    named then). Anything else leaves every verdict as it was."""
    return first_look or devices_changed or keys_fetched or pins_changed or oldest_age_s > max_age_s


def preview(text: str, chars: int = PREVIEW_CHARS) -> str:
    """The start of a message, quoted, on one line."""
    flat = " ".join(text.split())
    return f"«{flat[:chars]}…»" if len(flat) > chars else f"«{flat}»"


def fingerprint(master_key: str | None) -> str:
    """A master key as people compare it: groups of four characters."""
    if not master_key:
        return "(none published)"
    return " ".join(master_key[i : i + 4] for i in range(0, len(master_key), 4))


def _encode(message: Message) -> str:
    return json.dumps(dataclasses.asdict(message))


def _decode(raw: str) -> Message:
    fields: dict[str, Any] = json.loads(raw)
    return Message(**fields)


class IdentityView(Protocol):
    """What holding reads of `Identities`: published keys, a device's standing, the pin."""

    async def keys(self, user_id: str, refresh: bool = False) -> UserKeys: ...

    async def judge(self, user_id: str, sender_key: str | None) -> DeviceTrust: ...

    def pinned(self, user_id: str) -> str | None: ...


NoticeSender = Callable[[RoomID, dict[str, Any], dict[str, set[str]]], Awaitable[object]]
Route = Callable[[Message], Awaitable[None]]
Judge = Callable[[Message, DeviceTrust | None], bool]
Post = Callable[[RoomID, str], Awaitable[object]]


class HeldMessages:
    """Holds owners' messages from an untrusted identity, and releases them once trusted."""

    def __init__(
        self,
        tables: IdentityTables,
        identities: IdentityView,
        send_readable: NoticeSender,
        post: Post,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._tables = tables
        self._identities = identities
        self._send_readable = send_readable
        self._post = post
        self._clock = clock
        rows = tables.held_messages()
        # How many messages are held; kept in memory so that a sync with none held costs
        # nothing.
        self.count = len(rows)
        # When the oldest held message was held (None: none held).
        self._oldest: float | None = min((row[3] for row in rows), default=None)
        # Held senders' pins at the last look (None: not looked at in this run yet).
        self._pins: dict[str, str | None] | None = None

    @classmethod
    def in_room(
        cls,
        client: MatrixClient,
        outbox: Outbox,
        tables: IdentityTables,
        identities: IdentityView,
    ) -> HeldMessages:
        """Held messages as the daemon keeps them: the notice of a hold sent readable by the
        owner's new devices too (`side_notice`), what a release names posted as a notice."""
        return cls(
            tables,
            identities,
            lambda room, content, devices: send_readable_by(client, room, content, devices),
            lambda room, text: outbox.post(room, text, notice=True),
        )

    async def hold(self, message: Message) -> None:
        """Hold `message` and, once per identity change per room, tell its sender on every
        device of theirs (the new ones included) what happened and how to fix it."""
        keys = await self._identities.keys(message.sender)
        master = keys.master_key
        if not self._tables.hold_message(
            message.event_id, message.room_id, message.sender, master, _encode(message)
        ):
            return
        self.count += 1
        now = self._clock()
        self._oldest = now if self._oldest is None else min(self._oldest, now)
        log.info(
            "message.held",
            room=message.room_id,
            event_id=message.event_id,
            sender=message.sender,
            master=master,
        )
        if not self._tables.first_notice(f"identity:{message.sender}:{master}:{message.room_id}"):
            return
        text = texts.identity_changed(message.sender, fingerprint(master), preview(message.body))
        content = _notice_content(text, message.event_id)
        # Every device the owner's account publishes, the untrusted new ones included: the
        # one-off session carries this notice only.
        devices: dict[str, set[str]] = {str(message.sender): set(keys.devices)}
        try:
            await self._send_readable(message.room_id, content, devices)
        except HomeserverError as err:
            # Told at the owner's next message instead.
            self._tables.forget_notices(f"identity:{message.sender}:{master}:{message.room_id}")
            log.warning("trust.notice_failed", room=message.room_id, error=err.message)

    async def release(
        self,
        route: Route,
        judge: Judge,
        *,
        devices_changed: bool = False,
        keys_fetched: bool = False,
    ) -> None:
        """Run, or name, the held messages whose sender's identity is now trusted (or can no
        longer be); the others keep waiting. Looked at only while some are held, and only
        when something that could free one happened (`release_due`)."""
        if not self.count:
            return
        rows = self._tables.held_messages()
        pins = {sender: self._identities.pinned(sender) for sender in {row[0] for row in rows}}
        due = release_due(
            first_look=self._pins is None,
            devices_changed=devices_changed,
            keys_fetched=keys_fetched,
            pins_changed=self._pins is not None and pins != self._pins,
            oldest_age_s=self._clock() - (self._oldest or self._clock()),
        )
        if not rows or not due:
            self.count = len(rows)
            return
        try:
            await self._release(rows, route, judge)
        except HomeserverError as err:
            # Keys could not be fetched, say: tried again at the next sync, which goes on.
            log.warning("held.release_failed", error=err.message)
            # Not looked at, as far as the next sync is concerned: it tries again.
            self._pins = None
            return
        self._pins = pins

    async def _release(
        self, rows: list[tuple[str, str | None, str, float]], route: Route, judge: Judge
    ) -> None:
        named: dict[tuple[RoomID, UserID], list[str]] = {}
        kept: list[float] = []
        for sender, held_master, raw, held_at in rows:
            message = _decode(raw)
            device = await self._identities.judge(sender, message.sender_key)
            action = release_action(
                device,
                judge(message, device),
                held_master,
                self._identities.pinned(sender),
                self._clock() - held_at,
            )
            if action is Release.WAIT:
                kept.append(held_at)
                continue
            log.info(
                "message.released",
                event_id=message.event_id,
                action=action.value,
                waited_s=round(self._clock() - held_at, 1),
            )
            if action is Release.RUN:
                # Routed before it is released: a crash between runs it at most once (the
                # intake knows each event id it took).
                await route(message)
            else:
                named.setdefault((message.room_id, message.sender), []).append(
                    preview(message.body)
                )
            self._tables.release_held(message.event_id)
            self.count -= 1
        # Held meanwhile (by a message routed above), if any: about now.
        if self.count > len(kept):
            kept.append(self._clock())
        self._oldest = min(kept, default=None)
        for (room_id, _sender), previews in named.items():
            await self._post(room_id, texts.held_named(previews))


def _notice_content(text: str, reply_to: EventID) -> dict[str, Any]:
    # The outbox's shape of a message: Markdown as HTML beside the body, a rich reply.
    from dispatch_matrix.matrix.outbox import as_reply, text_content

    return as_reply(text_content(text, notice=True), reply_to)
