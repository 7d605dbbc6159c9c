"""Faults of the machine, told apart from bugs: a full disk under the state folder.

A write the ledger refuses (SQLite's "database or disk is full", or ENOSPC from a plain
file) can surface from any long-lived task. The daemon then stops with one clear line
rather than a traceback: what is on disk is consistent (every write is a transaction, and
the sync token is saved only after the events it covers), so a restart once there is room
re-reads whatever was not recorded and carries on.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from dispatch_matrix.core.errors import DiskFull


def leaves(error: BaseException) -> Iterator[BaseException]:
    """The errors inside (nested) exception groups, or the error itself."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaves(inner)
    else:
        yield error


# SQLite's codes for a write the file system refused for room. SQLITE_IOERR_SHMSIZE is how
# opening a WAL database on a full disk fails: the shared-memory file beside it cannot grow
# (it reads "disk I/O error", which other I/O faults also read, so the name decides).
_SQLITE_FULL = frozenset({"SQLITE_FULL", "SQLITE_IOERR_SHMSIZE"})


def is_disk_full(error: BaseException) -> bool:
    """Whether one error means the file system is out of space (pure)."""
    if isinstance(error, sqlite3.Error):
        name = getattr(error, "sqlite_errorname", "")
        return "disk is full" in str(error) or name in _SQLITE_FULL
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full(error: BaseException, folder: Path) -> DiskFull | None:
    """The clear error for a full disk, when `error` (or one it groups) is one. It names
    the state `folder`, unless the refused write was of a file outside it (a `/tmp` that
    filled up), and says a quota when the disk has room but the user's share is used up."""
    full = [leaf for leaf in leaves(error) if is_disk_full(leaf)]
    if not full:
        return None
    where = f"the state folder {folder}"
    filename = getattr(full[0], "filename", None)
    if isinstance(filename, str | Path) and str(filename):
        written = Path(filename).absolute()
        if not written.is_relative_to(folder.absolute()):
            where = str(written.parent)
    quota = isinstance(full[0], OSError) and full[0].errno == errno.EDQUOT
    said = (
        f"your disk quota is used up for {where}" if quota else f"the disk holding {where} is full"
    )
    return DiskFull(
        f"{said}; stopped before anything was half-written",
        fix="free some space there; on restart it carries on where it stopped",
    )
