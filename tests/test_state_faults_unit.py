"""A state folder the bot cannot use is one line with its fix and exit code 3 (4 when a
running bot holds it), from every command that opens it: a ledger written by a newer
dispatch-matrix used to crash `run`, `status` and `doctor` with 'internal error
(OperationalError: no such table: meta)' after migrating nothing; a ledger that is no
database at all with 'internal error (DatabaseError: file is not a database)'."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path

import pytest

from dispatch_matrix import cli
from dispatch_matrix.core.errors import AlreadyRunning, HomeserverError, StateError
from dispatch_matrix.matrix.failures import RequestRefused, is_keys_clash
from dispatch_matrix.store import Database
from dispatch_matrix.store.state import StateFolder

CONFIG = """
[matrix]
homeserver = "http://127.0.0.1:9"
user_id = "@bot:localhost"
password = "pw"
owners = ["@me:localhost"]
"""


def newer_ledger(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 999")


def not_a_database(path: Path) -> None:
    path.write_text("garbage, not SQLite\n" * 100)


def test_a_ledger_from_a_newer_version_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "dispatch.db"
    newer_ledger(path)
    before = path.read_bytes()
    with pytest.raises(StateError) as refused:
        Database.open(path)
    assert refused.value.message == (
        "the state folder was written by a newer dispatch-matrix (its schema is version 999, "
        f"this one knows up to {_known(tmp_path / 'fresh')})"
    )
    assert refused.value.fix == "upgrade dispatch-matrix to the version that wrote it (or newer)"
    assert path.read_bytes() == before


def test_a_ledger_that_is_no_database_is_refused_with_the_way_out(tmp_path: Path) -> None:
    path = tmp_path / "dispatch.db"
    not_a_database(path)
    with pytest.raises(StateError) as refused:
        Database.open(path)
    assert refused.value.message == (
        f"the ledger {path} cannot be read as a database (file is not a database)"
    )
    assert refused.value.fix is not None and "restore the state folder" in refused.value.fix


def test_a_ledger_of_this_version_opens_again(tmp_path: Path) -> None:
    Database.open(tmp_path / "dispatch.db").close()
    Database.open(tmp_path / "dispatch.db").close()


def _known(folder: Path) -> int:
    folder.mkdir()
    db = Database.open(folder / "dispatch.db")
    try:
        return int(db._conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


@pytest.mark.parametrize("spoil", [newer_ledger, not_a_database])
@pytest.mark.parametrize("command", ["status", "doctor"])
def test_each_command_says_a_spoilt_ledger_in_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    spoil: object,
    command: str,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    StateFolder(tmp_path).ensure()
    spoil(tmp_path / "dispatch.db")  # type: ignore[operator]
    extra = ["--no-api"] if command == "doctor" else []
    code = cli.main([command, "--config", str(config), *extra])
    out, err = capsys.readouterr()
    assert "internal error" not in out + err
    if command == "status":
        assert code == 3
        assert err.count("\n") == 1, err
        assert "newer dispatch-matrix" in err or "cannot be read as a database" in err, err
    else:
        # doctor lists it as the ledger's check, and goes on with the others.
        assert code == 1
        said = ("newer dispatch-matrix", "cannot be read as a database")
        [line] = [x for x in out.splitlines() if any(words in x for words in said)]
        assert line.startswith("✗ "), out
        assert "– login not checked: the ledger cannot be read" in out


def test_a_folder_a_running_bot_holds_names_its_pid(tmp_path: Path) -> None:
    running = StateFolder(tmp_path).ensure()
    running.lock()
    try:
        with pytest.raises(AlreadyRunning) as refused:
            StateFolder(tmp_path).lock()
    finally:
        running.unlock()
    assert f"another dispatch-matrix (pid {os.getpid()}) is already running" in (
        refused.value.message
    )
    assert refused.value.exit_code == 4


def test_a_holder_that_has_not_written_its_pid_yet_is_still_named_plainly(
    tmp_path: Path,
) -> None:
    # It used to say "another dispatch-matrix (pid another process)".
    folder = StateFolder(tmp_path).ensure()
    with folder.lock_path.open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(AlreadyRunning) as refused:
            StateFolder(tmp_path).lock()
    assert refused.value.message == f"another dispatch-matrix is already running on {tmp_path}"


@pytest.mark.parametrize(
    ("error", "clash"),
    [
        (
            RequestRefused(
                "keys/upload failed: M_UNKNOWN One time key signed_curve25519:AAAAAAAAABo "
                'already exists. Old key: {"key": "…"}; new key: {…}',
                "M_UNKNOWN",
            ),
            True,
        ),
        (RequestRefused("keys/upload failed: M_FORBIDDEN", "M_FORBIDDEN"), False),
        (RequestRefused("createRoom failed: M_ROOM_IN_USE alias already exists", "M_X"), False),
        (HomeserverError("One time key already exists"), False),  # not the server's refusal
    ],
)
def test_is_keys_clash(error: HomeserverError, clash: bool) -> None:
    assert is_keys_clash(error) is clash
