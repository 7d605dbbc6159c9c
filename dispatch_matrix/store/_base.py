"""The one thing every part of the store shares: the connection and its transactions."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dispatch_matrix.store.models import TranscriptRow


class Base:
    """Holds the SQLite connection; the query mixins build on it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._depth = 0
        # Writes that ride with the next transaction (`stage`), by key.
        self._staged: dict[object, tuple[str, tuple[Any, ...]]] = {}
        # Per conversation: the row id the kept rows start after, and the parsed rows after
        # it, oldest first (see `transcript_rows`).
        self._rows: dict[int, tuple[int, list[TranscriptRow]]] = {}

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
