"""Our state: the state folder (its layout, privacy, lock and local secrets, `state.py`) and
the one SQLite file in it (`db.py`: the connection, the one migration sequence, and the
small tables every layer shares: meta, notices, the Matrix session).

`Database` is that connection with the tables of the two layers below the features, one
module each: the task ledger and its rows (`ledger.py`: tasks, approvals, the transcript,
summaries, usage; written by the queue and the agent) and the tables the Matrix layer
writes (`matrix_tables.py`: the outbox, Megolm replay indexes, events waiting for their
keys, messages waiting for the trust gate, owners' files, threads, owners' rooms). A
feature's tables live in its own package and take the `Connection`.

Imports `core` only."""

from dispatch_matrix.store.db import Connection
from dispatch_matrix.store.ledger import LedgerQueries, Task, TaskState
from dispatch_matrix.store.matrix_tables import (
    FileQueries,
    OutboxQueries,
    ReplayQueries,
    RoomQueries,
    ThreadQueries,
    UndecryptedQueries,
    UnjudgedQueries,
)


class Database(
    LedgerQueries,
    OutboxQueries,
    ReplayQueries,
    UndecryptedQueries,
    UnjudgedQueries,
    RoomQueries,
    ThreadQueries,
    FileQueries,
):
    """Our SQLite file with the base layers' tables; one connection, used from the event
    loop's thread."""


__all__ = ["Connection", "Database", "LedgerQueries", "Task", "TaskState"]
