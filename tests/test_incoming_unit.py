"""An owner's file is saved once per event, also when its event is read again after a crash
(its sync token was not saved): the decision table, then `IncomingFiles` and the router's
file path with the real ledger, a real folder and a stand-in homeserver that counts
downloads. A crash is the state it leaves on disk (the ledger, the inbox), made directly."""

from __future__ import annotations

import errno
import functools
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from nio.crypto.attachments import encrypt_attachment

from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.matrix import attachments
from dispatch_matrix.matrix.attachments import AttachmentError, NotSaved, part_of
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.handlers import Gate, Tasks
from dispatch_matrix.matrix.inbound import Message
from dispatch_matrix.matrix.incoming import FileStep, IncomingFiles, next_step
from dispatch_matrix.matrix.outbox import Outbox
from dispatch_matrix.matrix.router import Router
from dispatch_matrix.store import Database

ROOM = RoomID("!room:x")
OWNER = UserID("@me:x")
DATA = b"col_a,col_b\n1,2\n" * 40
DAY = "2026-12-05"


@pytest.mark.parametrize(
    ("task_known", "saved", "on_disk", "expected"),
    [
        # The event became a task: whatever is on disk, nothing is fetched or written.
        (True, 640, 640, FileStep.DONE),
        (True, None, None, FileStep.DONE),
        # Saved whole and still there: used as it is.
        (False, 640, 640, FileStep.KEEP),
        (False, 0, 0, FileStep.KEEP),
        # Never claimed, or claimed and cut short by a crash (no size recorded).
        (False, None, None, FileStep.FETCH),
        # Renamed into place, then a crash before its size was recorded: fetched again onto
        # the same path (one file still).
        (False, None, 640, FileStep.FETCH),
        # Saved, then removed or changed by someone: fetched again.
        (False, 640, None, FileStep.FETCH),
        (False, 640, 12, FileStep.FETCH),
    ],
)
def test_next_step(
    task_known: bool, saved: int | None, on_disk: int | None, expected: FileStep
) -> None:
    assert next_step(task_known, saved, on_disk) is expected


class Downloaded:
    def __init__(self, body: bytes) -> None:
        self.body = body


class FakeNio:
    """The homeserver's media repository: one encrypted file, downloads counted."""

    def __init__(self, ciphertext: bytes) -> None:
        self.ciphertext = ciphertext
        self.downloads = 0

    async def download(self, mxc: str) -> Downloaded:
        self.downloads += 1
        return Downloaded(self.ciphertext)


class FakeClient:
    def __init__(self, nio: FakeNio) -> None:
        self.client = nio
        self.user_id = "@bot:x"


@functools.cache
def encrypted() -> tuple[bytes, dict[str, Any]]:
    """DATA encrypted as a phone encrypts an attachment (once: every event sends it)."""
    return encrypt_attachment(DATA)


def content(name: str = "figures.csv", caption: str | None = None) -> dict[str, Any]:
    keys = encrypted()[1]
    return {
        "msgtype": "m.file",
        "body": caption or name,
        "filename": name,
        "info": {"mimetype": "text/csv", "size": len(DATA)},
        "file": {"url": "mxc://x/" + name, **{k: keys[k] for k in ("key", "iv", "hashes")}},
    }


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.db = Database.open(tmp_path / "ledger.db")
        self.nio = FakeNio(encrypted()[0])
        self.inbox = tmp_path / "inbox"
        # What the owner is told, and the tasks made: the router's file path reads them.
        self.posts, self.queue = Posts(), Queue(self.db)
        self.files = IncomingFiles(
            cast(MatrixClient, FakeClient(self.nio)),
            self.db,
            self.inbox,
            1 << 20,
            lambda: DAY,
            outbox=cast(Outbox, self.posts),
            intake=cast(Tasks, self.queue),
        )

    def on_disk(self) -> list[str]:
        """Every file in the inbox (hidden temporary parts included), by its path there."""
        return sorted(
            str(path.relative_to(self.inbox)) for path in self.inbox.rglob("*") if path.is_file()
        )


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    made = Setup(tmp_path)
    yield made
    made.db.close()


async def test_a_file_taken_twice_is_fetched_and_saved_once(setup: Setup) -> None:
    file = content()
    first = await setup.files.take("$e1", file)
    # A crash before the task was recorded: the same event is read again.
    again = await setup.files.take("$e1", file)
    assert first is not None and again is not None
    assert again.path == first.path == setup.inbox / DAY / "figures.csv"
    assert again.size == first.size == len(DATA) and again.mimetype == "text/csv"
    assert setup.nio.downloads == 1
    assert setup.on_disk() == [f"{DAY}/figures.csv"]
    assert first.path.read_bytes() == DATA


async def test_an_event_that_is_a_task_already_fetches_and_writes_nothing(setup: Setup) -> None:
    file = content()
    first = await setup.files.take("$e1", file)
    assert first is not None
    setup.db.add_task(EventID("$e1"), ROOM, OWNER, "(sent figures.csv)", 1, [])
    assert await setup.files.take("$e1", file) is None
    assert setup.nio.downloads == 1
    assert setup.on_disk() == [f"{DAY}/figures.csv"]


async def test_a_part_left_by_a_crash_mid_download_is_replaced_not_kept(setup: Setup) -> None:
    file = content()
    # The first reading claimed its path and died while writing: half a file, under the
    # temporary name, and no size recorded.
    claim = setup.db.claim_file("$e1", setup.inbox / DAY, "figures.csv")
    claim.path.parent.mkdir(parents=True)
    part_of(claim.path).write_bytes(DATA[:100])
    taken = await setup.files.take("$e1", file)
    assert taken is not None and taken.path == claim.path
    assert setup.on_disk() == [f"{DAY}/figures.csv"], "the part is gone, no second copy"
    assert claim.path.read_bytes() == DATA
    claimed = setup.db.file_claim("$e1")
    assert claimed is not None and claimed.size == len(DATA)


async def test_a_file_renamed_in_place_but_not_recorded_is_fetched_onto_itself(
    setup: Setup,
) -> None:
    file = content()
    claim = setup.db.claim_file("$e1", setup.inbox / DAY, "figures.csv")
    claim.path.parent.mkdir(parents=True)
    claim.path.write_bytes(DATA)
    taken = await setup.files.take("$e1", file)
    assert taken is not None and taken.path == claim.path
    assert setup.nio.downloads == 1
    assert setup.on_disk() == [f"{DAY}/figures.csv"]


async def test_two_events_with_one_name_get_two_files(setup: Setup) -> None:
    file = content()
    # A file of the owner's own already has the name, and a claim is never shared.
    (setup.inbox / DAY).mkdir(parents=True)
    (setup.inbox / DAY / "figures.csv").write_bytes(b"mine")
    one = await setup.files.take("$e1", file)
    two = await setup.files.take("$e2", file)
    assert one is not None and two is not None
    assert [one.path.name, two.path.name] == ["figures-1.csv", "figures-2.csv"]
    assert (setup.inbox / DAY / "figures.csv").read_bytes() == b"mine", "never overwritten"


async def test_a_claim_keeps_its_folder_across_midnight(tmp_path: Path) -> None:
    made = Setup(tmp_path)
    file = content()
    claim = made.db.claim_file("$e1", made.inbox / "2026-12-04", "figures.csv")
    # Read again the next day: the file goes where the first reading said, not today's.
    taken = await made.files.take("$e1", file)
    assert taken is not None and taken.path == claim.path
    assert made.on_disk() == ["2026-12-04/figures.csv"]
    made.db.close()


def refuse_sync(handle: int) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


async def test_a_full_disk_leaves_no_file_and_says_so(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file system takes the bytes into its cache and refuses them at the sync, as a
    # full disk with delayed allocation does: the part was on disk when it failed.
    monkeypatch.setattr(attachments.os, "fsync", refuse_sync)
    with pytest.raises(NotSaved) as raised:
        await setup.files.take("$e1", content())
    assert raised.value.full
    assert raised.value.message == f"the disk holding {setup.inbox / DAY} is full"
    assert setup.on_disk() == []
    monkeypatch.undo()
    # Space is back: the same event (read again, or `!retry`) saves it, once.
    taken = await setup.files.take("$e1", content())
    assert taken is not None and setup.on_disk() == [f"{DAY}/figures.csv"]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A file system of 1 MB of its own (needs root to mount; skipped otherwise)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_real_full_disk_leaves_no_part_behind(tiny_disk: Path) -> None:
    target = tiny_disk / "big.bin"
    with pytest.raises(OSError) as raised:
        attachments.write_whole(target, b"\0" * (2 << 20), tiny_disk)
    assert raised.value.errno == errno.ENOSPC
    assert list(tiny_disk.iterdir()) == []


# -- the router's file path ----------------------------------------------------------------


class Gatekeeper:
    holding = 0

    def devices_changed(self, users: list[str]) -> None:
        pass

    async def admit(self, event: Any, private: bool, *, explain: bool) -> bool:
        return True


class Queue:
    """The intake's part: tasks recorded in the real ledger, by event id, once."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.calls = 0

    async def message(
        self,
        event_id: EventID,
        room_id: RoomID,
        sender: UserID,
        body: str,
        origin_ts: int,
        reply_to: EventID | None = None,
        attachments: list[dict[str, object]] | None = None,
    ) -> None:
        self.calls += 1
        self.db.add_task(event_id, room_id, sender, body, origin_ts, attachments)


class Posts:
    def __init__(self) -> None:
        self.sent: dict[str, str] = {}

    async def post(self, room_id: str, text: str, *, key: str | None = None, **_: Any) -> str:
        # The outbox sends a key once.
        assert key is not None, "a refusal read again must not be sent twice"
        self.sent.setdefault(key, text)
        return "$posted"


def router_for(setup: Setup) -> Router:
    return Router(
        cast(MatrixClient, FakeClient(setup.nio)),
        setup.db,
        cast(Tasks, setup.queue),
        cast(Gate, Gatekeeper()),
        cast(Outbox, setup.posts),
        owners=frozenset({OWNER}),
        shared_rooms=frozenset(),
        undecryptable_grace_s=60,
        not_before_ms=0,
        files=setup.files,
    )


def file_message(file: dict[str, Any]) -> Message:
    return Message(
        ROOM, EventID("$e1"), OWNER, file["body"], 1, True, "key", msgtype="m.file", content=file
    )


async def test_the_router_reading_a_file_again_makes_one_task_on_one_file(setup: Setup) -> None:
    posts, queue = setup.posts, setup.queue
    router = router_for(setup)
    message = file_message(content(caption="sum the columns"))
    await router._take(message)
    await router._take(message)
    task = setup.db.task_by_event("$e1")
    assert task is not None and task.body == "sum the columns"
    assert [a["path"] for a in task.attachments] == [str(setup.inbox / DAY / "figures.csv")]
    assert setup.db.count_tasks() == {"queued": 1}
    assert queue.calls == 1, "the second reading stopped before the intake"
    assert setup.nio.downloads == 1 and setup.on_disk() == [f"{DAY}/figures.csv"]
    assert posts.sent == {}


async def test_the_router_answers_a_full_disk_in_one_line_once(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attachments.os, "fsync", refuse_sync)
    posts, queue = setup.posts, setup.queue
    router = router_for(setup)
    message = file_message(content())
    await router._take(message)
    await router._take(message)
    assert posts.sent == {
        "file-$e1": f"📎 I could not save that file: the disk holding {setup.inbox / DAY} is "
        "full. Free some space there and send it again."
    }
    assert "\n" not in posts.sent["file-$e1"]
    assert queue.calls == 0 and setup.db.count_tasks() == {}
    assert setup.on_disk() == []


async def test_a_file_refused_before_fetching_claims_no_name(setup: Setup) -> None:
    huge = {**content(), "info": {"mimetype": "text/csv", "size": 2 << 20}}
    with pytest.raises(AttachmentError, match="over my 1.0 MB limit"):
        await setup.files.take("$huge", huge)
    assert setup.db.file_claim("$huge") is None and setup.nio.downloads == 0
    taken = await setup.files.take("$e1", content())
    assert taken is not None and taken.path.name == "figures.csv"


# -- links the agent may plant in the inbox (it lies in the agent's writable workdir) --------


async def test_a_link_planted_at_the_temporary_name_is_not_followed(
    setup: Setup, tmp_path: Path
) -> None:
    """The sandboxed agent can write in the inbox: a link at the temporary name a file is
    written under must not make the daemon (outside the sandbox) write through it."""
    outside = tmp_path / "dotfile"
    outside.write_bytes(b"keep me")
    (setup.inbox / DAY).mkdir(parents=True)
    part_of(setup.inbox / DAY / "figures.csv").symlink_to(outside)
    taken = await setup.files.take("$e1", content())
    assert outside.read_bytes() == b"keep me", "written through the planted link"
    assert taken is not None and not taken.path.is_symlink()
    assert taken.path.read_bytes() == DATA
    assert setup.on_disk() == [f"{DAY}/figures.csv"]


async def test_a_dangling_link_with_the_files_name_is_replaced_not_followed(
    setup: Setup, tmp_path: Path
) -> None:
    made_by_link = tmp_path / "autostart.desktop"
    (setup.inbox / DAY).mkdir(parents=True)
    (setup.inbox / DAY / "figures.csv").symlink_to(made_by_link)
    taken = await setup.files.take("$e1", content())
    assert not made_by_link.exists()
    assert taken is not None and not taken.path.is_symlink()
    assert taken.path.read_bytes() == DATA


@pytest.mark.parametrize("linked", ["inbox", f"inbox/{DAY}"])
async def test_a_folder_on_the_way_that_is_a_link_is_refused(
    setup: Setup, tmp_path: Path, linked: str
) -> None:
    """A dated folder (or the inbox) replaced by a link elsewhere: nothing is written
    there; the owner is told the file was not saved."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = tmp_path / linked
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(NotSaved):
        await setup.files.take("$e1", content())
    assert list(elsewhere.rglob("*")) == []


# -- what the event says about its file may be anything --------------------------------------


@pytest.mark.parametrize(
    "odd",
    [
        {"info": {"mimetype": "text/csv", "size": "12 MB"}},
        {"info": {"mimetype": "text/csv", "size": -5}},
        {"info": "a string"},
        {"info": {"mimetype": ["text/csv"], "size": len(DATA)}},
        {"file": "mxc://x/figures.csv"},
        {"file": {"url": "mxc://x/figures.csv", "key": "k", "iv": 1, "hashes": None}},
        {"filename": 12, "body": {"not": "text"}},
    ],
)
async def test_a_file_event_with_odd_fields_is_answered_not_dropped(
    setup: Setup, odd: dict[str, Any]
) -> None:
    """Whatever an event says of its file, the owner gets a file or one line why: never a
    silent loss (an exception out of the router's handler drops the event unanswered)."""
    posts = setup.posts
    router = router_for(setup)
    await router._take(file_message({**content(), **odd}))
    task = setup.db.task_by_event("$e1")
    refused = posts.sent.get("file-$e1", "")
    assert (task is not None) != refused.startswith("📎 I could not take that file"), (
        task,
        posts.sent,
    )


async def test_a_saved_file_swapped_for_a_link_is_fetched_again_not_kept(
    setup: Setup, tmp_path: Path
) -> None:
    """Read again after a crash, a saved file the agent replaced by a link to another file
    of the same size is not taken as the owner's: the task would point the model at it."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * len(DATA))
    first = await setup.files.take("$e1", content())
    assert first is not None
    first.path.unlink()
    first.path.symlink_to(secret)
    again = await setup.files.take("$e1", content())
    assert again is not None and not again.path.is_symlink()
    assert again.path.read_bytes() == DATA and setup.nio.downloads == 2
    assert secret.read_bytes() == b"s" * len(DATA)
