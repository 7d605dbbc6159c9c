"""The SQLite file: its one connection, the schema's migrations, transactions, and the
small tables every layer shares (meta, one-time notices, the Matrix session).

WAL with synchronous=FULL: a row committed here survives a kill -9 or a power cut, which is
what lets the bot acknowledge a task in the room only after it is on disk. Calls are short
local transactions, made on the event loop thread; nothing here touches the network.

The schema's history is one ordered list (`_MIGRATIONS`), the feature packages' tables
included: a database's `user_version` counts the steps it has taken, so the steps are never
reordered or split by owner, only appended. The queries live with their users: the two
layers below the features in this package (`ledger`: the queue's and the agent's;
`matrix_tables`: the Matrix layer's), composed into `Database`; each feature's tables in its
own package (`voice.tables`, `schedule.tables`, `identity.tables`, `agent.tables`), as
classes that take a `Connection`.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from dispatch_matrix.core.errors import StateError

_MIGRATIONS = [
    # 1: the ledger, the transcript, the outbox, the Matrix session.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE session (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        homeserver TEXT NOT NULL, user_id TEXT NOT NULL,
        device_id TEXT NOT NULL, access_token TEXT NOT NULL, created_at REAL NOT NULL
    );
    CREATE TABLE sync_state (
        id INTEGER PRIMARY KEY CHECK (id = 1), next_batch TEXT NOT NULL, saved_at REAL NOT NULL
    );
    CREATE TABLE tasks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        room_id TEXT NOT NULL, sender TEXT NOT NULL, body TEXT NOT NULL,
        origin_ts INTEGER NOT NULL, state TEXT NOT NULL,
        created_at REAL NOT NULL, started_at REAL, finished_at REAL,
        result TEXT, error TEXT
    );
    CREATE INDEX tasks_by_state ON tasks (state, id);
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY AUTOINCREMENT, started_at REAL NOT NULL, closed_at REAL
    );
    CREATE TABLE transcript (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id INTEGER NOT NULL REFERENCES conversations (id),
        task_id INTEGER REFERENCES tasks (id),
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX transcript_by_conversation ON transcript (conversation_id, id);
    CREATE TABLE outbox (
        txn_id TEXT PRIMARY KEY,
        room_id TEXT NOT NULL, event_type TEXT NOT NULL, content TEXT NOT NULL,
        task_id INTEGER REFERENCES tasks (id),
        event_id TEXT, created_at REAL NOT NULL, sent_at REAL
    );
    CREATE TABLE usage (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id INTEGER REFERENCES tasks (id), model TEXT NOT NULL,
        input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
        cache_creation_input_tokens INTEGER NOT NULL, cache_read_input_tokens INTEGER NOT NULL,
        at REAL NOT NULL
    );
    """,
    # 2: pinned identities of owners; notices already given (so each is given once).
    """
    CREATE TABLE identities (
        user_id TEXT PRIMARY KEY, master_key TEXT NOT NULL,
        pinned_at REAL NOT NULL, how TEXT NOT NULL
    );
    CREATE TABLE notices (key TEXT PRIMARY KEY, at REAL NOT NULL);
    """,
    # 3: encrypted events we could not read yet, kept to retry when their keys arrive.
    """
    CREATE TABLE undecrypted (
        event_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, sender TEXT NOT NULL,
        source TEXT NOT NULL, first_seen REAL NOT NULL, gave_up_at REAL
    );
    """,
    # 4: the reaction that shows a task's state on the owner's message; agent steps taken.
    """
    ALTER TABLE tasks ADD COLUMN status_reaction TEXT;
    ALTER TABLE tasks ADD COLUMN steps INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: every approval asked in the room: what, its fingerprint, the answer and who gave it.
    """
    CREATE TABLE approvals (
        id INTEGER PRIMARY KEY AUTOINCREMENT, task_id INTEGER REFERENCES tasks (id),
        subject TEXT NOT NULL, fingerprint TEXT NOT NULL, approved INTEGER NOT NULL,
        decided_by TEXT NOT NULL, at REAL NOT NULL
    );
    """,
    # 6: files an owner sent with a task (JSON list of {path, mimetype, size, name}).
    """
    ALTER TABLE tasks ADD COLUMN attachments TEXT;
    """,
    # 7: summaries that replace older turns in requests (the turns stay in the transcript);
    # usage looked up by day and by task.
    """
    CREATE TABLE summaries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id INTEGER NOT NULL REFERENCES conversations (id),
        covers_up_to INTEGER NOT NULL, text TEXT NOT NULL, created_at REAL NOT NULL
    );
    CREATE INDEX summaries_by_conversation ON summaries (conversation_id, id);
    CREATE INDEX usage_by_time ON usage (at);
    CREATE INDEX usage_by_task ON usage (task_id, at);
    """,
    # 8: owners' voice messages until their transcript is queued (kept for `!retry`).
    """
    CREATE TABLE voice_messages (
        event_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, sender TEXT NOT NULL,
        origin_ts INTEGER NOT NULL, content TEXT NOT NULL, state TEXT NOT NULL,
        audio_path TEXT, transcript TEXT, error TEXT, attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL, updated_at REAL NOT NULL
    );
    CREATE INDEX voice_by_state ON voice_messages (state, updated_at)
    """,
    # 9: schedules (reminders, recurring tasks, follow-ups); each fire, keyed by schedule and
    # due time; the `!reminders` list messages that a ❌ on them cancels.
    """
    CREATE TABLE schedules (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        title TEXT NOT NULL, prompt TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('at', 'cron', 'every')), spec TEXT NOT NULL,
        room_id TEXT NOT NULL, owner TEXT NOT NULL,
        origin_task INTEGER REFERENCES tasks (id),
        anchor REAL NOT NULL, next_at REAL,
        state TEXT NOT NULL CHECK (state IN ('active', 'done', 'cancelled')),
        fired_count INTEGER NOT NULL DEFAULT 0, last_fired_at REAL,
        created_at REAL NOT NULL
    );
    CREATE INDEX schedules_by_next ON schedules (state, next_at);
    CREATE TABLE fires (
        key TEXT PRIMARY KEY,
        schedule_id INTEGER NOT NULL REFERENCES schedules (id),
        due_at REAL NOT NULL, fired_at REAL NOT NULL, late_s REAL NOT NULL,
        event_id TEXT, task_id INTEGER REFERENCES tasks (id)
    );
    CREATE TABLE schedule_entries (
        event_id TEXT PRIMARY KEY, room_id TEXT NOT NULL,
        schedule_id INTEGER NOT NULL REFERENCES schedules (id)
    );
    CREATE INDEX tasks_by_finish ON tasks (finished_at);
    """,
    # 10: the part of a request's cache writes made with the 1-hour lifetime (priced 2x input,
    # the 5-minute ones 1.25x); included in cache_creation_input_tokens.
    """
    ALTER TABLE usage ADD COLUMN cache_write_1h INTEGER NOT NULL DEFAULT 0;
    """,
    # 11: the Megolm message index of every decrypted event, so a replay is refused also
    # after a restart.
    """
    CREATE TABLE megolm_indexes (
        sender_key TEXT NOT NULL, session_id TEXT NOT NULL, message_index INTEGER NOT NULL,
        event_id TEXT NOT NULL, room_id TEXT NOT NULL, seen_at REAL NOT NULL,
        PRIMARY KEY (sender_key, session_id, message_index)
    ) WITHOUT ROWID;
    """,
    # 12: owners' DMs the bot opened or joined, and whether it welcomed them (once).
    """
    CREATE TABLE owner_rooms (
        room_id TEXT PRIMARY KEY, owner TEXT NOT NULL, opened_by TEXT NOT NULL,
        entered_at REAL NOT NULL, welcomed_at REAL, welcome_event TEXT
    ) WITHOUT ROWID;
    """,
    # 13: what an owner's message replies to, as the model is told it (the task and the
    # start of its text); the bot's events found by event id, as a reply names them.
    """
    ALTER TABLE tasks ADD COLUMN reply_note TEXT;
    CREATE INDEX outbox_by_event ON outbox (event_id);
    """,
    # 14: owners' messages written in a thread, so their answers go to it.
    """
    CREATE TABLE threads (event_id TEXT PRIMARY KEY, root TEXT NOT NULL) WITHOUT ROWID;
    """,
    # 15: owners' messages from an identity the bot does not trust yet, held (not run) until
    # the operator trusts it; `message` is the decrypted event as the router read it.
    """
    CREATE TABLE held_messages (
        event_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, sender TEXT NOT NULL,
        master_key TEXT, message TEXT NOT NULL, held_at REAL NOT NULL
    );
    """,
    # 16: the Claude Code engine's session per conversation; how each usage row was paid
    # (NULL: the API engine; "plan" or "api" from Claude Code).
    """
    CREATE TABLE engine_sessions (
        conversation INTEGER PRIMARY KEY REFERENCES conversations (id),
        session_id TEXT NOT NULL, running_task INTEGER, updated_at REAL NOT NULL
    );
    ALTER TABLE usage ADD COLUMN billing TEXT;
    """,
    # 17: owners' messages handled as a command or an approval's answer, by event id, so a
    # sync read again (after a crash, or a failed handling) runs none of them twice.
    """
    CREATE TABLE commands_run (
        event_id TEXT PRIMARY KEY, name TEXT NOT NULL, at REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 18: owners' messages the trust gate could not judge yet (the homeserver failed the key
    # query), in the order they came; `message` is the decrypted event as the router read it.
    """
    CREATE TABLE unjudged (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,
        room_id TEXT NOT NULL, message TEXT NOT NULL, first_seen REAL NOT NULL
    );
    """,
    # 19: where each owner's file is saved, claimed by its event id before a byte is fetched
    # (`size`: NULL until the file is there whole), so an event read again after a crash
    # neither fetches nor writes its file a second time.
    """
    CREATE TABLE files_taken (
        event_id TEXT PRIMARY KEY, path TEXT NOT NULL UNIQUE, size INTEGER,
        claimed_at REAL NOT NULL
    ) WITHOUT ROWID;
    """,
]


@dataclass(frozen=True)
class Session:
    """The bot's login: one device for the bot's whole life."""

    homeserver: str
    user_id: str
    device_id: str
    access_token: str


def _refuse_newer(version: int) -> None:
    """A schema this version does not know: its tables mean what a later version says, and
    reading or writing them with this one's queries could lose tasks, so nothing is touched."""
    if version > len(_MIGRATIONS):
        raise StateError(
            f"the state folder was written by a newer dispatch-matrix (its schema is "
            f"version {version}, this one knows up to {len(_MIGRATIONS)})",
            fix="upgrade dispatch-matrix to the version that wrote it (or newer)",
        )


class Connection:
    """The SQLite connection, used from the event loop's thread: its transactions, staged
    writes and the shared small tables. The tables of every layer build on it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._depth = 0
        # Writes that ride with the next transaction (`stage`), by key.
        self._staged: dict[object, tuple[str, tuple[Any, ...]]] = {}

    @classmethod
    def open(cls, path: Path) -> Self:
        """Open (creating if needed) and migrate the database at `path`; a file that is not
        one of ours, or that a newer dispatch-matrix wrote, is a StateError."""
        new = not path.exists()
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            if new:
                path.chmod(0o600)
            # Before anything is written (even the journal mode, in the file's header).
            _refuse_newer(conn.execute("PRAGMA user_version").fetchone()[0])
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            db = cls(conn)
            db._migrate()
        except sqlite3.DatabaseError as err:
            conn.close()
            if isinstance(err, sqlite3.OperationalError):
                raise  # a full disk, a read-only folder, a lock: said where it struck
            raise StateError(
                f"the ledger {path} cannot be read as a database ({err})",
                fix="restore the state folder from a backup; or move the file aside to start "
                "afresh (the bot logs in as a new device, and its queue and history are gone)",
            ) from err
        except StateError:
            conn.close()
            raise
        return db

    def close(self) -> None:
        """Commit what is staged, and close the connection."""
        self.flush_staged()
        self._conn.close()

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            with self.tx() as conn:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")

    # -- transactions ----------------------------------------------------------------------

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: committed on exit, rolled back on error.

        A `tx()` inside another joins it (as a savepoint, so its own error undoes only its
        part): writes that belong together are committed, and synced, once. Nothing may
        await inside a transaction: the connection is the event loop's, shared by all.
        """
        if self._depth:
            name = f"sp{self._depth}"
            self._conn.execute(f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield self._conn
            except BaseException:
                self._conn.execute(f"ROLLBACK TO {name}")
                self._conn.execute(f"RELEASE {name}")
                raise
            finally:
                self._depth -= 1
            self._conn.execute(f"RELEASE {name}")
            return
        self._conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        staged, self._staged = self._staged, {}
        try:
            for sql, params in staged.values():
                self._conn.execute(sql, params)
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            self._staged = {**staged, **self._staged}
            raise
        finally:
            self._depth = 0
        self._conn.execute("COMMIT")

    def stage(self, sql: str, params: tuple[Any, ...], key: object = None) -> None:
        """A write that rides with the next transaction, whoever's, instead of costing a
        sync of its own: only for one whose loss in a crash before then is harmless (what
        it records had no effect yet, or may be done again). A newer write with the same
        `key` replaces one still staged. Inside a transaction it is part of that one."""
        if self._depth:
            self._conn.execute(sql, params)
        else:
            self._staged[object() if key is None else key] = (sql, params)

    @property
    def staged(self) -> bool:
        """Whether writes wait for the next transaction."""
        return bool(self._staged)

    def flush_staged(self) -> None:
        """Commit what is staged now (before closing)."""
        if self._staged:
            with self.tx():
                pass

    def read(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        """Run a query that writes nothing (outside a transaction, it sees what is
        committed; inside one, that one's writes too)."""
        return self._conn.execute(sql, params)

    # -- meta ------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """A value of the key-value table, or None."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set a value of the key-value table."""
        with self.tx() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def instance_id(self) -> str:
        """A random id of this ledger, made at its creation."""
        value = self.get_meta("instance_id")
        if value is None:
            value = uuid.uuid4().hex[:12]
            self.set_meta("instance_id", value)
        return value

    # -- rules the owner allowed "always" --------------------------------------------------

    def learned_rules(self) -> list[str]:
        """Allow rules added by "always" answers, oldest first."""
        return list(json.loads(self.get_meta("learned_rules") or "[]"))

    def add_learned_rule(self, rule: str) -> None:
        """Keep one more learned allow rule (once)."""
        rules = self.learned_rules()
        if rule not in rules:
            self.set_meta("learned_rules", json.dumps([*rules, rule]))

    # -- one-time notices -----------------------------------------------------------------

    def first_notice(self, key: str) -> bool:
        """True the first time a notice key is seen, False ever after."""
        with self.tx() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO notices (key, at) VALUES (?, ?)", (key, time.time())
            )
        return cursor.rowcount == 1

    def forget_notices(self, prefix: str) -> None:
        """Allow notices starting with `prefix` to be given again."""
        with self.tx() as conn:
            conn.execute("DELETE FROM notices WHERE key LIKE ?", (prefix + "%",))

    # -- the Matrix session ----------------------------------------------------------------

    def session(self) -> Session | None:
        """The saved login, if any."""
        row = self._conn.execute("SELECT * FROM session WHERE id = 1").fetchone()
        if row is None:
            return None
        return Session(row["homeserver"], row["user_id"], row["device_id"], row["access_token"])

    def save_session(self, session: Session) -> None:
        """Save the login (replacing any earlier one)."""
        with self.tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO session VALUES (1, ?, ?, ?, ?, ?)",
                (
                    session.homeserver,
                    session.user_id,
                    session.device_id,
                    session.access_token,
                    time.time(),
                ),
            )

    def sync_token(self) -> str | None:
        """The sync token whose events are all in the ledger."""
        row = self._conn.execute("SELECT next_batch FROM sync_state WHERE id = 1").fetchone()
        return None if row is None else str(row[0])

    def save_sync_token(self, token: str, *, staged: bool = False) -> None:
        """Record that every event before `token` is in the ledger; `staged`, with the next
        transaction (a crash before it re-reads a little more, which event ids make harmless)."""
        sql, params = "INSERT OR REPLACE INTO sync_state VALUES (1, ?, ?)", (token, time.time())
        if staged:
            self.stage(sql, params, key="sync_token")
            return
        with self.tx() as conn:
            conn.execute(sql, params)
