"""Routes what a sync brought: accept or reject invites, admit owner messages as tasks.

Every decision goes through the trust gate it is given (`handlers.Gate`, identity's); what
passes goes to the handlers it is given (`Tasks`, the queue's; `VoiceLane`, voice's; an
owner's file to `IncomingFiles`), so the router knows no feature. A message is acknowledged
(written to the ledger) before its sync token is saved; a message, reaction or poll vote the
gate cannot judge now (the homeserver failed it) waits in the ledger, in its room's order,
and is judged again at the next sync (`unjudged.py`), then acted on as if judged on time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from enum import Enum

from nio import SyncResponse

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import HomeserverError
from dispatch_matrix.core.ids import RoomID
from dispatch_matrix.matrix import texts
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.fetching import FileNotFetched
from dispatch_matrix.matrix.handlers import Gate, Tasks, VoiceLane
from dispatch_matrix.matrix.inbound import (
    MALFORMED,
    Inbound,
    Invite,
    Message,
    Reaction,
    Redaction,
    Unreadable,
    Vote,
    from_event,
    news_of,
    read_sync,
)
from dispatch_matrix.matrix.incoming import IncomingFiles
from dispatch_matrix.matrix.late_keys import LateKeys
from dispatch_matrix.matrix.outbox import Outbox
from dispatch_matrix.matrix.privacy import RoomWatch
from dispatch_matrix.matrix.replay import ReplayGuard
from dispatch_matrix.matrix.unjudged import Unjudged, Waiting
from dispatch_matrix.store import Database

log = logs.get(__name__)

_FILE_TYPES = ("m.image", "m.file", "m.audio", "m.video")


class Router:
    """Turns sync responses into joins, rejections and queued tasks."""

    def __init__(
        self,
        client: MatrixClient,
        db: Database,
        tasks: Tasks,
        gate: Gate,
        outbox: Outbox,
        *,
        owners: frozenset[str],
        shared_rooms: frozenset[str],
        undecryptable_grace_s: float,
        not_before_ms: int,
        files: IncomingFiles,
        voice: VoiceLane | None = None,
        replays: ReplayGuard | None = None,
        joined: Callable[[RoomID, str], None] | None = None,
        rooms_changed: Sequence[Callable[[], None]] = (),
    ) -> None:
        self._client = client
        self._db = db
        self._intake = tasks
        self._gate = gate
        self._outbox = outbox
        self._owners = owners
        self._allowed_shared_rooms = shared_rooms
        # Voice messages go to transcription rather than into the inbox as files.
        self._voice = voice
        # Refuses an event at a Megolm index another event used (a replay), also after a
        # restart; what it refused arrives here undecryptable and is dropped unanswered.
        self._replays = replays
        # Told of each DM joined at an owner's invite (the welcome, sent once, waits on it).
        self._joined = joined
        # Told after a sync that changed some room's state (members, encryption): the
        # welcome and the news that waits for a room look again then, not at every sync.
        self._rooms_changed = tuple(rooms_changed)
        # The first sync of a run brings every room's full state.
        self._first = True
        # Room keys came (nio stored them) and no retry has run since: a sync that failed
        # before its retry is read again without them (nio decrypts an Olm message once).
        self._keys_came = False
        self._late = LateKeys(
            client,
            db,
            undecryptable_grace_s,
            self._read_late,
            self._gave_up,
            refused=self._replayed,
            claimed=self._flush_claims,
        )
        # Messages older than the bot's first start are history, not tasks.
        self._not_before_ms = not_before_ms
        # Owners' messages, reactions and votes the gate could not judge (the homeserver
        # failed it): judged again at each sync, before what the sync brought, in room order.
        # An admitted file message (`files`: saved into the inbox once per event, then a
        # task) is tried beside the sync's handling; one whose file the homeserver failed for
        # now waits there too, in the same order, and is fetched again when its next try is
        # due.
        self._unjudged = Unjudged(db, self._admit, self._settle, fetch=files.fetch, tell=files.tell)
        self._watch = RoomWatch(db, self._owners, client.user_id, self._notice)

    async def handle(self, response: SyncResponse, since: str | None) -> bool:
        """Act on one sync response (`since`: the token it was asked with); whether it
        held anything to act on (not only the bot's own events). Each part is called only
        when the sync brought something for it (`SyncNews`): an idle sync, or one with a
        single owner message, touches none of the housekeeping."""
        first = self._first
        news = news_of(response, first=first)
        self._keys_came = self._keys_came or news.room_keys
        if first and self._replays is not None:
            # The crypto machine is made once, at the login, before the first sync.
            self._replays.ensure(self._client.client.olm)
        if news.devices_changed:
            self._gate.devices_changed(list(news.devices_changed))
        if self._gate.holding:
            await self._gate.release_held(
                self._message, self.room_private, devices_changed=bool(news.devices_changed)
            )
        if news.rooms_changed:
            await self._watch_rooms(news.rooms_changed)
            for told in self._rooms_changed:
                told()
        gapped = await self._gaps(news.gapped, since) if news.gapped else []
        if self._unjudged.rooms:
            # Before this sync's messages, which came after them.
            await self._unjudged.retry()
        items = gapped + read_sync(response, self._client.user_id)
        if items:
            log.debug("sync.items", kinds=[type(item).__name__ for item in items])
            # Outside the per-item guard: a claim that cannot be committed fails the whole
            # sync, which is then read again. (Nothing to act on, nothing to commit yet: the
            # claims of events read later ride with their flush.)
            self._flush_claims()
        for item in items:
            try:
                await self._route(item)
            except Exception:
                # A bug in handling one event must not stop the bot hearing every later one
                # (a crash would re-read the same event at restart, forever).
                log.exception("router.item_failed", item=type(item).__name__, room=item.room_id)
        late = self._late.due_at
        # At a run's first sync too: the last run may have died between nio storing a key
        # and the retry it owed.
        if late is not None and (self._keys_came or first or time.time() >= late):
            await self._late.retry()
        self._keys_came = False
        # Not before: a first sync that failed is read again, as a first.
        self._first = False
        return bool(items)

    async def _watch_rooms(self, rooms: Iterable[str]) -> None:
        """Tell the owners at once when a room they command the bot in stops being private
        (or is private again), before any message of this sync is judged."""
        for room_id in rooms:
            room = self._client.client.rooms.get(room_id)
            if room is None:
                continue
            members = set(room.users) | set(room.invited_users)
            allowed = room_id in self._allowed_shared_rooms
            try:
                await self._watch.check(RoomID(room_id), members, allowed)
            except HomeserverError as err:
                log.warning("room.notice_failed", room=room_id, error=err.message)

    async def _notice(self, room_id: RoomID, text: str, key: str) -> None:
        await self._outbox.post(room_id, text, notice=True, key=key)

    async def _gaps(self, gapped: dict[str, str], since: str | None) -> list[Inbound]:
        """Events a gapped ("limited") timeline left out (`gapped`: room → its prev_batch),
        so none is lost after downtime."""
        found: list[Inbound] = []
        if since is None:
            return found
        for room_id, prev_batch in gapped.items():
            events = await self._client.backfill(room_id, prev_batch, since)
            log.info("sync.gap_filled", room=room_id, events=len(events))
            for event in events:
                if event.sender == self._client.user_id:
                    continue
                item = from_event(RoomID(room_id), event)
                if item is not None:
                    found.append(item)
        return found

    async def _read_late(self, item: Waiting) -> None:
        """An event read once its room key came: routed as it would have been on time."""
        if isinstance(item, Reaction):
            await self._reaction(item)
        elif isinstance(item, Vote):
            await self._vote(item)
        else:
            await self._message(item)

    async def _gave_up(self, item: Unreadable) -> None:
        if item.sender not in self._owners:
            return
        when = datetime.fromtimestamp(item.origin_ts / 1000, UTC).strftime("%H:%M UTC")
        await self._outbox.post(
            item.room_id, texts.unreadable(when), reply_to=item.event_id, notice=True
        )

    def _flush_claims(self) -> None:
        """Commit the Megolm indexes of what was decrypted, before acting on any of it."""
        if self._replays is not None:
            self._replays.flush()

    def _replayed(self, event_id: str) -> bool:
        return self._replays is not None and self._replays.refused(event_id) is not None

    async def _route(self, item: Inbound) -> None:
        if isinstance(item, Unreadable) and self._replayed(item.event_id):
            # Logged as message.replayed when it was refused; no task, no answer, no notice.
            return
        if isinstance(item, Reaction):
            await self._reaction(item)
        elif isinstance(item, Vote):
            await self._vote(item)
        elif isinstance(item, Invite):
            await self._invite(item)
        elif isinstance(item, Message):
            await self._message(item)
        elif isinstance(item, Unreadable):
            await self._late.hold(item)
        elif (
            isinstance(item, Redaction)
            and item.sender in self._owners
            and self.room_private(item.room_id)
        ):
            # Redactions travel unencrypted; one from an owner's account can only drop a
            # queued task of theirs, or an event still waiting for the gate or its keys,
            # never start anything.
            self._unjudged.deleted(item.redacts, item.room_id)
            self._late.deleted(item.redacts, item.room_id)
            await self._intake.redacted(item.redacts)
            if self._voice is not None:
                await self._voice.redacted(item.redacts)

    async def _invite(self, invite: Invite) -> None:
        refusal = self._gate.invite_refusal(invite)
        try:
            if refusal is None:
                await self._client.join(invite.room_id)
                log.info("room.joined", room=invite.room_id, inviter=invite.inviter)
                if self._joined is not None:
                    self._joined(invite.room_id, invite.inviter)
            else:
                await self._client.reject(invite.room_id)
                log.info(
                    "room.invite_rejected",
                    room=invite.room_id,
                    inviter=invite.inviter,
                    reason=refusal,
                )
        except HomeserverError as err:
            # The invite stays pending and comes back in a later sync.
            log.warning("room.invite_failed", room=invite.room_id, error=err.message)

    async def _reaction(self, reaction: Reaction) -> None:
        """A reaction may answer an approval question: the same gate as a command, and the
        same wait when the gate cannot judge it yet."""
        if reaction.sender not in self._owners:
            return
        await self._judge(reaction)

    async def _vote(self, vote: Vote) -> None:
        """A poll vote may answer an approval question: the same gate as a command, and
        only on the open question's poll (the approvals decide that)."""
        if vote.sender not in self._owners:
            log.info("vote.ignored", room=vote.room_id, event_id=vote.event_id, sender=vote.sender)
            return
        await self._judge(vote)

    def waiting(self) -> bool:
        """Whether an owner's event waits for the gate (judged again at the next sync)."""
        return bool(self._unjudged.rooms)

    def room_private(self, room_id: str) -> bool:
        """Whether the room's members (joined or invited) are only the bot and owners."""
        if room_id in self._allowed_shared_rooms:
            return True
        room = self._client.client.rooms.get(room_id)
        if room is None:
            return False
        members = set(room.users) | set(room.invited_users)
        return members <= (self._owners | {self._client.user_id})

    async def _message(self, message: Message) -> None:
        if message.origin_ts < self._not_before_ms:
            log.debug("message.history_skipped", event_id=message.event_id)
            return
        await self._judge(message)

    async def _judge(self, item: Waiting) -> None:
        """An owner's message, reaction or vote: judged by the gate, then settled; or kept
        to judge at the next sync when the gate cannot judge it now, or when an earlier
        event of its room waits (one order per room, whatever the kind)."""
        if (
            item.sender in self._owners
            and self._unjudged.waits(item.room_id)
            and not (self._unjudged.file_first(item.room_id) and self._goes_ahead(item))
        ):
            # Not judged before the one waiting: it must not overtake it. (A stranger's is
            # refused at once: it has no order to keep, and must not fill the ledger.)
            self._unjudged.keep(item, "behind")
            return
        try:
            admitted = await self._admit(item)
        except HomeserverError as err:
            # No verdict (the owner's keys could not be fetched): neither dropped nor obeyed.
            self._unjudged.keep(item, err.message)
            return
        try:
            await self._settle(item, admitted)
        except FileNotFetched as waits:
            # Admitted, but its file must wait (the media repository failed it for now):
            # neither refused nor overtaken by what the owner sent after it.
            if isinstance(item, Message):
                await self._unjudged.wait_for_file(item, waits.error)

    def _goes_ahead(self, item: Waiting) -> bool:
        """Whether an owner's event passes a file of its room waiting for its download: a
        reaction or a vote (an approval's answer, a ❌ on a reminder: never work), a stop
        command, a text answering an open question (the intake's). The file's download may
        fail for hours; the task running meanwhile must stay answerable and stoppable.
        Work, edits and other files keep the room's order."""
        if isinstance(item, Reaction | Vote):
            return True
        if item.msgtype != "m.text" or item.replaces is not None or item.voice:
            return False
        return self._intake.goes_ahead(RoomID(item.room_id), item.body, item.reply_to)

    async def _admit(self, item: Waiting) -> bool:
        private = self.room_private(item.room_id)
        return await self._gate.admit(item, private, explain=explains_refusal(item, private))

    async def _settle(self, item: Waiting, admitted: bool) -> None:
        """Act on the gate's verdict, the same whether it came on time or late."""
        action = after_verdict(item, admitted, self.room_private(item.room_id))
        if action is AfterVerdict.OBEY:
            await self._obey(item)
        elif action is AfterVerdict.PLAINTEXT_ANSWER and not isinstance(item, Message):
            # Element's ✅ goes unencrypted: never obeyed, but the owner learns what works.
            target = item.ballot.poll if isinstance(item, Vote) else item.reacts_to
            await self._intake.plaintext_answer(item.room_id, target, item.event_id)

    async def _obey(self, item: Waiting) -> None:
        """An admitted event: a reaction or vote goes to the intake (it may answer an
        approval), a message is taken."""
        if isinstance(item, Reaction):
            await self._intake.reaction(item.reacts_to, item.key, item.sender)
        elif isinstance(item, Vote):
            await self._intake.vote(item.room_id, item.ballot, item.sender, item.event_id)
        else:
            await self._take(item)

    async def _take(self, message: Message) -> None:
        """An admitted message: work, a command, an edit, a file, a voice message…"""
        if message.thread_root is not None:
            # Before anything answers it: every reply to this message goes to its thread.
            self._db.note_thread(message.event_id, message.thread_root)
        if message.replaces is not None:
            await self._intake.edit(message.replaces, message.body, message.event_id)
        elif message.msgtype == MALFORMED:
            log.warning("message.malformed", event_id=message.event_id)
            await self._intake.malformed(message.event_id, message.room_id)
        elif self._voice is not None and message.voice:
            await self._voice.receive(message)
        elif message.msgtype in _FILE_TYPES:
            # Tried beside the sync's handling: one that hangs waits in its room's order.
            await self._unjudged.first_try(message)
        elif message.msgtype != "m.text":
            await self._intake.not_text(message.event_id, message.room_id)
        else:
            await self._intake.message(
                message.event_id,
                message.room_id,
                message.sender,
                message.body,
                message.origin_ts,
                reply_to=message.reply_to,
            )


class AfterVerdict(Enum):
    """What an owner's judged event does."""

    # Admitted: taken as work or a command, or given to the approvals as an answer.
    OBEY = "obey"
    # Refused for being unencrypted in a private room: the approvals say once what works.
    PLAINTEXT_ANSWER = "plaintext_answer"
    NOTHING = "nothing"


def after_verdict(item: Waiting, admitted: bool, private: bool) -> AfterVerdict:
    """What an owner's event does once the gate judged it (pure): obeyed when admitted; a
    refused reaction or vote sent unencrypted in a private room gets the plaintext answer."""
    if admitted:
        return AfterVerdict.OBEY
    if not isinstance(item, Message) and private and not item.was_encrypted:
        return AfterVerdict.PLAINTEXT_ANSWER
    return AfterVerdict.NOTHING


def explains_refusal(item: Waiting, private: bool) -> bool:
    """Whether the gate tells the owner why it refused the event (pure): a message or a vote
    (from an unverified session, say) is explained once; a reaction never (the approvals
    answer an unencrypted one, see `after_verdict`), nor an unencrypted vote in a private
    room (the same)."""
    if isinstance(item, Reaction):
        return False
    if isinstance(item, Vote):
        return not (private and not item.was_encrypted)
    return True
