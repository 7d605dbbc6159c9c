"""Our state: the state folder (its layout, privacy, lock and local secrets, `state.py`) and
the one SQLite file in it (`db.py`: the connection and the one migration sequence).

`Database` is that connection with the tables of the layers below the features: the task
ledger and transcript (queue, agent), the outbox, Megolm replay indexes, events waiting for
their keys, threads and owners' rooms (matrix). A feature's tables live in its own package
and take the `Connection`.

Imports `core` only."""

from dispatch_matrix.store.db import Connection
from dispatch_matrix.store.ledger import LedgerQueries
from dispatch_matrix.store.models import Task, TaskState
from dispatch_matrix.store.outbox import OutboxQueries
from dispatch_matrix.store.replay import ReplayQueries
from dispatch_matrix.store.rooms import RoomQueries
from dispatch_matrix.store.threads import ThreadQueries
from dispatch_matrix.store.undecrypted import UndecryptedQueries


class Database(
    LedgerQueries,
    OutboxQueries,
    ReplayQueries,
    UndecryptedQueries,
    RoomQueries,
    ThreadQueries,
):
    """Our SQLite file with the base layers' tables; one connection, used from the event
    loop's thread."""


__all__ = ["Connection", "Database", "LedgerQueries", "Task", "TaskState"]
