"""The tables the Matrix layer writes: what the bot sends, and what it must remember of
the room across a restart.

- `outbox` (`OutboxQueries`): every event the bot decided to send, its transaction id fixed
  before the first attempt, and what became of it (sent with an event id, or dropped). The
  queue uses it too: the status reactions a task shows (the mirror marks one it redacted),
  the bot's event an owner's reply names, whether an event was an approval question.
- `megolm_indexes` (`ReplayQueries`): the first event seen at each Megolm message index, so
  a replayed event is refused also after a restart.
- `undecrypted` (`UndecryptedQueries`): encrypted events the bot could not read yet, kept to
  retry when their room keys arrive.
- `unjudged` (`UnjudgedQueries`): owners' messages, reactions and votes the trust gate could
  not judge yet (the homeserver failed it), judged again at the next sync.
- `files_taken` (`FileQueries`): the path each owner's file claimed, by event id, and its
  size once saved whole, so an event read again saves its file once.
- `threads` (`ThreadQueries`): which thread an owner's message was written in, so its
  answers go to that thread.
- `owner_rooms` (`RoomQueries`): the owners' DMs the bot entered, and whether it has
  welcomed the owner there.

Each class is one table's queries on the `Connection`; `Database` composes them, and a part
takes only the class it uses.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.store.db import Connection

# -- the outbox ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxItem:
    """A message we decided to send, with the transaction id fixed before the first try."""

    txn_id: str
    room_id: RoomID
    event_type: str
    content: dict[str, object]
    task_id: int | None
    event_id: str | None


def _outbox(row: sqlite3.Row) -> OutboxItem:
    return OutboxItem(
        txn_id=row["txn_id"],
        room_id=RoomID(row["room_id"]),
        event_type=row["event_type"],
        content=json.loads(row["content"]),
        task_id=row["task_id"],
        event_id=row["event_id"],
    )


class OutboxQueries(Connection):
    """The outbox: every event the bot decided to send, with its transaction id fixed
    before the first attempt, and what became of it (sent with an event id, or dropped)."""

    def enqueue_outgoing(
        self,
        room_id: RoomID,
        event_type: str,
        content: dict[str, Any],
        task_id: int | None = None,
        key: str | None = None,
    ) -> OutboxItem:
        """Record a message to send, fixing its transaction id before the first attempt.

        With a `key` the transaction id is derived from it: recording the same key again
        returns the first record (and its event id once sent), so a step repeated after a
        crash sends nothing twice.
        """
        # The ledger's own id keeps keys from two ledgers (a lost and a new store) apart.
        txn_id = f"dm-{self.instance_id()}-{key}" if key else "dm-" + uuid.uuid4().hex
        with self.tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO outbox (txn_id, room_id, event_type, content, task_id,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (txn_id, room_id, event_type, json.dumps(content), task_id, time.time()),
            )
            row = conn.execute("SELECT * FROM outbox WHERE txn_id = ?", (txn_id,)).fetchone()
        return _outbox(row)

    def unsent(self) -> list[OutboxItem]:
        """Messages recorded but not yet confirmed sent, oldest first."""
        rows = self._conn.execute(
            "SELECT * FROM outbox WHERE event_id IS NULL ORDER BY created_at"
        ).fetchall()
        return [_outbox(row) for row in rows]

    def reactions_shown(self, task_id: int) -> list[tuple[str, str, str]]:
        """The task's status reactions now in the room: (txn_id, event_id, emoji), oldest
        first. A reaction leaves this list when it is redacted (`mark_sent(txn, "")`)."""
        rows = self._conn.execute(
            "SELECT txn_id, event_id, content FROM outbox WHERE task_id = ? AND"
            " event_type = 'm.reaction' AND event_id IS NOT NULL AND event_id != ''"
            " ORDER BY created_at",
            (task_id,),
        ).fetchall()
        shown = []
        for txn_id, event_id, content in rows:
            relation = json.loads(content).get("m.relates_to") or {}
            shown.append((str(txn_id), str(event_id), str(relation.get("key", ""))))
        return shown

    def sent_event(self, event_id: str) -> OutboxItem | None:
        """The bot's own event with this event id (what an owner's reply names), if any."""
        if not event_id:
            return None
        row = self._conn.execute(
            "SELECT * FROM outbox WHERE event_id = ? LIMIT 1", (event_id,)
        ).fetchone()
        return None if row is None else _outbox(row)

    def was_question(self, event_id: str) -> bool:
        """Whether the bot's event was an approval question (open or closed)."""
        row = self._conn.execute(
            "SELECT 1 FROM outbox WHERE event_id = ? AND txn_id LIKE '%.ask.%'", (event_id,)
        ).fetchone()
        return row is not None

    def count_reactions(self, task_id: int) -> int:
        """How many status reactions the task has had recorded (sent, dropped or pending)."""
        row = self._conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE task_id = ? AND event_type = 'm.reaction'",
            (task_id,),
        ).fetchone()
        return int(row[0])

    def mark_sent(self, txn_id: str, event_id: str) -> None:
        """Record the homeserver's event id for a sent message."""
        with self.tx() as conn:
            conn.execute(
                "UPDATE outbox SET event_id = ?, sent_at = ? WHERE txn_id = ?",
                (event_id, time.time(), txn_id),
            )


# -- replay: Megolm message indexes seen ---------------------------------------------------


class ReplayQueries(Connection):
    """The first event seen at each Megolm message index: what makes replay protection
    survive a restart.

    A Megolm session encrypts each message under a new index; the (sender key, session id,
    message index) of an authentic event is unique. A second event with the same triple and
    another event id is a replay (a hostile homeserver re-injecting an owner's old message).
    """

    def claim_megolm_index(
        self, sender_key: str, session_id: str, index: int, event_id: str, room_id: str
    ) -> str | None:
        """The event id recorded at this index before, if any; when there was none,
        `event_id` is recorded there, committed before this returns."""
        with self.tx() as conn:
            row = conn.execute(
                "SELECT event_id FROM megolm_indexes"
                " WHERE sender_key = ? AND session_id = ? AND message_index = ?",
                (sender_key, session_id, index),
            ).fetchone()
            if row is not None:
                return str(row[0])
            conn.execute(
                "INSERT INTO megolm_indexes VALUES (?, ?, ?, ?, ?, ?)",
                (sender_key, session_id, index, event_id, room_id, time.time()),
            )
        return None

    def megolm_index(self, sender_key: str, session_id: str, index: int) -> str | None:
        """The event id recorded at this index, if any."""
        row = self._conn.execute(
            "SELECT event_id FROM megolm_indexes"
            " WHERE sender_key = ? AND session_id = ? AND message_index = ?",
            (sender_key, session_id, index),
        ).fetchone()
        return None if row is None else str(row[0])

    def record_megolm_indexes(self, claims: list[tuple[str, str, int, str, str]]) -> None:
        """Record (sender key, session id, index, event id, room id) claims found free, in
        one transaction; an index recorded meanwhile keeps its first event."""
        now = time.time()
        with self.tx() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO megolm_indexes VALUES (?, ?, ?, ?, ?, ?)",
                [(*claim, now) for claim in claims],
            )


# -- events waiting for their keys ---------------------------------------------------------


class UndecryptedQueries(Connection):
    """Encrypted events the bot could not read yet, kept to retry when their room keys
    arrive (the late keys of `matrix.late_keys`), or until it gives up on them."""

    def hold_undecrypted(
        self, event_id: str, room_id: str, sender: str, source: dict[str, Any]
    ) -> None:
        """Keep an unreadable event to retry (once per event id)."""
        with self.tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO undecrypted VALUES (?, ?, ?, ?, ?, NULL)",
                (event_id, room_id, sender, json.dumps(source), time.time()),
            )

    def waiting_undecrypted(self) -> list[tuple[str, str, dict[str, Any], float]]:
        """Events still waiting: (room id, sender, source, first seen), oldest first."""
        rows = self._conn.execute(
            "SELECT * FROM undecrypted WHERE gave_up_at IS NULL ORDER BY first_seen"
        ).fetchall()
        return [(r["room_id"], r["sender"], json.loads(r["source"]), r["first_seen"]) for r in rows]

    def resolve_undecrypted(self, event_id: str, gave_up: bool) -> None:
        """Stop waiting for an event: read at last, or given up on."""
        with self.tx() as conn:
            if gave_up:
                conn.execute(
                    "UPDATE undecrypted SET gave_up_at = ? WHERE event_id = ?",
                    (time.time(), event_id),
                )
            else:
                conn.execute("DELETE FROM undecrypted WHERE event_id = ?", (event_id,))

    def forget_undecrypted(self, event_id: str, room_id: str) -> bool:
        """Drop a kept event of `room_id` unread (an owner deleted it); whether one was kept."""
        with self.tx() as conn:
            gone = conn.execute(
                "DELETE FROM undecrypted WHERE event_id = ? AND room_id = ?", (event_id, room_id)
            ).rowcount
        return gone > 0


# -- messages waiting for the trust gate ---------------------------------------------------


class UnjudgedQueries(Connection):
    """Owners' events (messages, reactions, poll votes) the trust gate could not judge yet
    (`matrix.unjudged`), kept in the order they came until it can. Each is the decrypted
    event as JSON, in a form `matrix.unjudged` versions: the store knows no Matrix type."""

    def keep_unjudged(
        self, event_id: str, room_id: str, message: str, *, replace: bool = False
    ) -> None:
        """Keep an event to judge again (once per event id; its first place is kept);
        `replace`: an event kept already is kept in its place with the new `message`."""
        update = "UPDATE SET message = excluded.message" if replace else "NOTHING"
        with self.tx() as conn:
            conn.execute(
                "INSERT INTO unjudged (event_id, room_id, message, first_seen)"
                f" VALUES (?, ?, ?, ?) ON CONFLICT (event_id) DO {update}",
                (event_id, room_id, message, time.time()),
            )

    def unjudged(self) -> list[tuple[str, str, str]]:
        """The events waiting: (event id, room id, event), in the order they came."""
        rows = self._conn.execute(
            "SELECT event_id, room_id, message FROM unjudged ORDER BY seq"
        ).fetchall()
        return [(str(row[0]), str(row[1]), str(row[2])) for row in rows]

    def unjudged_rooms(self) -> set[str]:
        """The rooms with an event waiting."""
        rows = self._conn.execute("SELECT DISTINCT room_id FROM unjudged").fetchall()
        return {str(row[0]) for row in rows}

    def judged(self, event_id: str) -> None:
        """An event was judged (and its verdict acted on): it waits no more."""
        with self.tx() as conn:
            conn.execute("DELETE FROM unjudged WHERE event_id = ?", (event_id,))

    def forget_unjudged(self, event_id: str, room_id: str) -> bool:
        """Drop a waiting event of `room_id` unjudged (its sender deleted it); whether one
        waited."""
        with self.tx() as conn:
            gone = conn.execute(
                "DELETE FROM unjudged WHERE event_id = ? AND room_id = ?", (event_id, room_id)
            ).rowcount
        return gone > 0


# -- owners' files -------------------------------------------------------------------------


@dataclass(frozen=True)
class FileClaim:
    """Where an owner's file goes (claimed by its event), and its size once saved whole."""

    path: Path
    size: int | None


class FileQueries(Connection):
    """Owners' files by event id (`matrix.incoming`): the path each claimed before a byte
    was fetched, and its size once it was saved whole."""

    def file_claim(self, event_id: str) -> FileClaim | None:
        """The claim an event made, if it made one."""
        row = self._conn.execute(
            "SELECT path, size FROM files_taken WHERE event_id = ?", (event_id,)
        ).fetchone()
        return None if row is None else FileClaim(Path(row["path"]), row["size"])

    def claim_file(
        self, event_id: str, folder: Path, name: str, *, anew: bool = False
    ) -> FileClaim:
        """Claim a path in `folder` for an event's file, committed: `name`, or `name-1`,
        `name-2`… when a file there or another event's claim has it. An event claims once:
        a second call returns its first claim, unless `anew` (its claim is moved to a new
        path in `folder`, not yet saved: the inbox moved)."""
        stem, suffix = Path(name).stem, Path(name).suffix
        with self.tx() as conn:
            row = conn.execute(
                "SELECT path, size FROM files_taken WHERE event_id = ?", (event_id,)
            ).fetchone()
            if row is not None and not anew:
                return FileClaim(Path(row["path"]), row["size"])
            conn.execute("DELETE FROM files_taken WHERE event_id = ?", (event_id,))
            counter = 0
            path = folder / name
            while (
                path.exists()
                or conn.execute("SELECT 1 FROM files_taken WHERE path = ?", (str(path),)).fetchone()
            ):
                counter += 1
                path = folder / f"{stem}-{counter}{suffix}"
            conn.execute(
                "INSERT INTO files_taken (event_id, path, size, claimed_at) VALUES (?, ?, NULL, ?)",
                (event_id, str(path), time.time()),
            )
        return FileClaim(path, None)

    def file_saved(self, event_id: str, size: int) -> None:
        """The event's file is at its claimed path, whole, `size` bytes."""
        with self.tx() as conn:
            conn.execute("UPDATE files_taken SET size = ? WHERE event_id = ?", (size, event_id))


# -- threads -------------------------------------------------------------------------------


class ThreadQueries(Connection):
    """Owners' messages written in a thread, and the thread's root event: every answer to
    such a message goes to that thread, and the answer may come after a restart, when
    nothing in memory remembers it."""

    def note_thread(self, event_id: EventID, root: EventID) -> None:
        """Record that `event_id` was written in the thread rooted at `root`."""
        with self.tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO threads (event_id, root) VALUES (?, ?)", (event_id, root)
            )

    def thread_of(self, event_id: str) -> EventID | None:
        """The root of the thread `event_id` was written in; None: the main timeline."""
        row = self._conn.execute(
            "SELECT root FROM threads WHERE event_id = ?", (event_id,)
        ).fetchone()
        return EventID(row["root"]) if row is not None else None


# -- owners' rooms -------------------------------------------------------------------------


@dataclass(frozen=True)
class OwnerRoom:
    """A DM with an owner: who opened it (`bot`: init, `owner`: their invite)."""

    room_id: RoomID
    owner: UserID
    opened_by: str
    welcomed: bool


class RoomQueries(Connection):
    """The owners' DMs the bot has a word to say in: the one `init` opened for each owner,
    and each one it joined at an owner's invite; and whether it has welcomed the owner there.

    A row is written when the bot enters the room (init's create, or a join), and
    `welcomed_at` once the welcome is sent, so a restart never welcomes twice. DMs from
    before this table have no row, and so no late welcome.
    """

    def add_owner_room(self, room_id: RoomID, owner: UserID, opened_by: str) -> None:
        """Record a DM the bot entered (a second record of the same room changes nothing)."""
        with self.tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO owner_rooms (room_id, owner, opened_by, entered_at)"
                " VALUES (?, ?, ?, ?)",
                (room_id, owner, opened_by, time.time()),
            )

    def owner_rooms(self) -> list[OwnerRoom]:
        """Every recorded DM, oldest first."""
        rows = self._conn.execute("SELECT * FROM owner_rooms ORDER BY entered_at").fetchall()
        return [
            OwnerRoom(
                RoomID(r["room_id"]),
                UserID(r["owner"]),
                r["opened_by"],
                r["welcomed_at"] is not None,
            )
            for r in rows
        ]

    def unwelcomed_rooms(self) -> list[OwnerRoom]:
        """DMs still waiting for their welcome."""
        return [room for room in self.owner_rooms() if not room.welcomed]

    def mark_welcomed(self, room_id: RoomID, event_id: str) -> None:
        """The welcome went out (committed before anything else is decided about it)."""
        with self.tx() as conn:
            conn.execute(
                "UPDATE owner_rooms SET welcomed_at = ?, welcome_event = ? WHERE room_id = ?",
                (time.time(), event_id, room_id),
            )
