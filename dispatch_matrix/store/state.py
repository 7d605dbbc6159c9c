"""The state folder: its layout, its privacy, its single-instance lock, our local secrets.

Everything the daemon keeps lives under one folder with mode 0700 and files 0600: the SQLite
ledger, nio's crypto store, the key that encrypts that store, cross-signing keys and logs.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from dispatch_matrix.core.errors import AlreadyRunning, StateError


def write_private(path: Path, data: str) -> None:
    """Write a file readable only by us, atomically (temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


@dataclass
class StateFolder:
    """Paths inside the state folder, and the operations that keep it private."""

    root: Path
    _lock: IO[str] | None = field(default=None, repr=False)

    @property
    def db_path(self) -> Path:
        return self.root / "dispatch.db"

    @property
    def crypto_dir(self) -> Path:
        return self.root / "crypto"

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def lock_path(self) -> Path:
        return self.root / "dispatch.lock"

    def ensure(self) -> StateFolder:
        """Create the folder tree (0700) if missing; refuse a path that is not a folder."""
        if self.root.exists() and not self.root.is_dir():
            raise StateError(f"state folder {self.root} is not a folder", fix="set [store] path")
        try:
            for folder in (self.root, self.crypto_dir, self.secrets_dir, self.log_dir):
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                folder.chmod(0o700)
        except OSError as err:
            raise StateError(
                f"cannot create state folder {self.root}: {err.strerror}",
                fix="choose a writable [store] path",
            ) from err
        return self

    def privacy_problems(self) -> list[str]:
        """Files or folders in the state folder that others could read."""
        problems = []
        if not self.root.exists():
            return [f"{self.root} does not exist"]
        for path in [self.root, *self.root.rglob("*")]:
            if path.is_symlink() or "homeserver" in path.relative_to(self.root).parts[:1]:
                continue
            if path == self.root / "README.md":
                continue  # a checkout's store/README.md: public, and git writes it 0644
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                problems.append(f"{path} is mode {mode:04o}")
        return problems

    def lock(self) -> None:
        """Take the single-instance lock, or raise AlreadyRunning naming the holder."""
        handle = self.lock_path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            # The holder writes its pid just after it takes the lock: it may not be there yet.
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise AlreadyRunning(
                f"another dispatch-matrix{pid} is already running on {self.root}",
                fix="stop it first, or give this one its own [store] path",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.lock_path.chmod(0o600)
        self._lock = handle

    def unlock(self) -> None:
        """Release the lock (also released by the OS when the process dies)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def pickle_key(self) -> str:
        """The key that encrypts nio's crypto store: random, made once, kept 0600."""
        path = self.secrets_dir / "crypto-store.key"
        if not path.exists():
            write_private(path, secrets.token_urlsafe(48))
        return path.read_text().strip()
