"""Keeping the computer awake while tasks run: the inhibitor's command, held across
back-to-back tasks and released when the queue is empty, never in a task's way, and a
failure logged once."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness.workbench import FakeRoom
from structlog.testing import capture_logs

from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.queue import texts
from dispatch_matrix.queue.awake import KeepAwake, inhibitor_argv, keep_awake_check
from dispatch_matrix.queue.worker import Worker
from dispatch_matrix.store import Database, Task, TaskState


def tools(*names: str) -> Callable[[str], str | None]:
    return lambda name: f"/usr/bin/{name}" if name in names else None


LINUX_ARGV = [
    "systemd-inhibit",
    "--what=sleep:idle",
    "--who=dispatch-matrix",
    "--why=working on #3",
    "--mode=block",
    "tail",
    "--pid=4242",
    "-f",
    "/dev/null",
]


@pytest.mark.parametrize(
    "platform, found, argv",
    [
        ("linux", tools("systemd-inhibit", "tail"), LINUX_ARGV),
        ("darwin", tools("caffeinate"), ["caffeinate", "-i", "-w", "4242"]),
        ("linux", tools("tail"), None),
        ("linux", tools("systemd-inhibit"), None),
        ("darwin", tools("systemd-inhibit", "tail"), None),
        ("freebsd14", tools("systemd-inhibit", "caffeinate", "tail"), None),
    ],
)
def test_the_inhibitor_command(
    platform: str, found: Callable[[str], str | None], argv: list[str] | None
) -> None:
    assert inhibitor_argv(platform, "working on #3", 4242, found) == argv


@pytest.mark.parametrize(
    "enabled, platform, found, ok, says",
    [
        (True, "linux", tools("systemd-inhibit", "tail"), True, "systemd-inhibit holds off"),
        (True, "darwin", tools("caffeinate"), True, "caffeinate holds off"),
        (True, "linux", tools(), False, "neither systemd-inhibit nor caffeinate"),
        (False, "linux", tools(), True, "off (agent.keep_awake = false)"),
    ],
)
def test_doctor_says_whether_the_computer_can_be_kept_awake(
    enabled: bool, platform: str, found: Callable[[str], str | None], ok: bool, says: str
) -> None:
    passed, what, fix = keep_awake_check(enabled, platform, found)
    assert passed is ok and says in what
    assert bool(fix) is not ok


class FakeChild:
    """An inhibitor that runs until terminated, or until `fail` ends it by itself."""

    def __init__(self) -> None:
        self.returncode: int | None = None
        self.terminated = 0
        self._ended = asyncio.Event()
        self._stderr = b""

    def terminate(self) -> None:
        self.terminated += 1
        self.returncode = -15
        self._ended.set()

    def fail(self, stderr: bytes) -> None:
        self._stderr = stderr
        self.returncode = 1
        self._ended.set()

    async def communicate(self) -> tuple[bytes | None, bytes | None]:
        await self._ended.wait()
        return None, self._stderr


class FakeRunner:
    """Records each command started; `gate` holds a start back (a slow or hung spawn)."""

    def __init__(self, error: OSError | None = None) -> None:
        self.started: list[list[str]] = []
        self.children: list[FakeChild] = []
        self.error = error
        self.gate: asyncio.Event | None = None

    async def __call__(self, argv: list[str]) -> FakeChild:
        self.started.append(argv)
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        child = FakeChild()
        self.children.append(child)
        return child


def linux(runner: FakeRunner, changes: list[bool] | None = None, **kw: Any) -> KeepAwake:
    return KeepAwake(
        spawn=runner,
        platform="linux",
        which=tools("systemd-inhibit", "tail"),
        pid=4242,
        on_change=changes.append if changes is not None else None,
        **kw,
    )


async def until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not check():
            await asyncio.sleep(0.001)


async def test_held_once_and_released() -> None:
    runner, changes = FakeRunner(), []
    awake = linux(runner, changes)
    awake.hold("working on #3")
    awake.hold("working on #4")  # already starting: no second inhibitor
    await until(lambda: awake.held)
    assert runner.started == [LINUX_ARGV]
    awake.release()
    await until(lambda: not awake.held)
    assert runner.children[0].terminated == 1
    assert changes == [True, False]
    # Held again for the next burst of work: a new inhibitor.
    awake.hold("working on #5")
    await until(lambda: awake.held)
    assert len(runner.started) == 2 and "--why=working on #5" in runner.started[1]
    await awake.close()
    assert not awake.held and runner.children[1].terminated == 1


async def test_released_while_starting_lets_go_at_once() -> None:
    runner = FakeRunner()
    runner.gate = asyncio.Event()
    awake = linux(runner)
    awake.hold("working on #1")
    await until(lambda: bool(runner.started))
    awake.release()
    runner.gate.set()
    await until(lambda: bool(runner.children) and runner.children[0].terminated == 1)
    await until(lambda: not awake.held)


async def test_off_by_config_starts_nothing() -> None:
    runner = FakeRunner()
    awake = linux(runner, enabled=False)
    awake.hold("working on #1")
    await asyncio.sleep(0)
    assert runner.started == [] and not awake.held and not awake.available


@pytest.mark.parametrize("how", ["no tool", "spawn fails", "exits by itself"])
async def test_a_failure_is_logged_once_and_not_tried_again(how: str) -> None:
    runner = FakeRunner(
        error=FileNotFoundError(2, "No such file") if how == "spawn fails" else None
    )
    with capture_logs() as logged:
        if how == "no tool":
            awake = KeepAwake(spawn=runner, platform="linux", which=tools(), pid=1)
        else:
            awake = linux(runner)
        awake.hold("working on #1")
        if how == "exits by itself":
            await until(lambda: bool(runner.children))
            runner.children[0].fail(b"Failed to connect to bus: No such file or directory")
        await until(lambda: not awake.available)
        for n in range(2, 5):
            awake.hold(f"working on #{n}")
            awake.release()
        await asyncio.sleep(0)
    warnings = [e for e in logged if e["event"] == "awake.unavailable"]
    assert len(warnings) == 1, logged
    if how == "exits by itself":
        assert "Failed to connect to bus" in warnings[0]["reason"]
    assert len(runner.started) == (0 if how == "no tool" else 1)
    assert not awake.held


class Answers:
    """Answers each task; the first one waits for `go`, so the test sees it running."""

    def __init__(self, awake: KeepAwake) -> None:
        self.awake = awake
        self.held_while: list[bool] = []
        self.go = asyncio.Event()

    async def answer(self, task: Task, io: Any) -> str:
        if task.id == 1:
            await self.go.wait()
        self.held_while.append(self.awake.held)
        return f"done: {task.body}"


async def test_the_worker_holds_one_across_back_to_back_tasks_and_releases_when_idle(
    tmp_path: Path,
) -> None:
    db = Database.open(tmp_path / "d.db")
    runner = FakeRunner()
    awake = linux(runner)
    agent = Answers(awake)
    room = FakeRoom()
    worker = Worker(db, agent, room, approval_timeout_s=60, outage_first_s=30, awake=awake)
    for n, body in enumerate(("first", "second", "third"), start=1):
        db.add_task(EventID(f"${n}"), RoomID("!r"), UserID("@me"), body, n)
    runner_task = asyncio.create_task(worker.run())
    await until(lambda: awake.held)
    agent.go.set()
    await room.wait_message("done: third", timeout=10)
    await until(lambda: not awake.held)
    runner_task.cancel()
    assert agent.held_while == [True, True, True]
    assert len(runner.started) == 1, "one inhibitor for the three tasks"
    assert runner.children[0].terminated == 1
    assert "--why=working on #1" in runner.started[0]


async def test_a_hung_inhibitor_start_never_delays_a_task(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "d.db")
    runner = FakeRunner()
    runner.gate = asyncio.Event()  # never opened: the inhibitor never starts
    awake = linux(runner)
    agent = Answers(awake)
    agent.go.set()
    room = FakeRoom()
    worker = Worker(db, agent, room, approval_timeout_s=60, outage_first_s=30, awake=awake)
    db.add_task(EventID("$1"), RoomID("!r"), UserID("@me"), "only", 1)
    runner_task = asyncio.create_task(worker.run())
    await room.wait_message("done: only", timeout=10)
    runner_task.cancel()
    task = db.task(1)
    assert task is not None and task.state is TaskState.DONE
    assert agent.held_while == [False]


@pytest.mark.skipif(shutil.which("systemd-inhibit") is None, reason="no systemd-inhibit")
async def test_the_real_inhibitor_is_held_or_its_failure_seen(tmp_path: Path) -> None:
    """On this computer, as it is: logind takes it (held until released), or there is no
    bus (a container) and the failure is seen, not taken for a hold."""
    awake = KeepAwake(platform="linux")
    awake.hold("a test")
    await until(lambda: awake.held or not awake.available)
    await awake.close()
    assert not awake.held


@pytest.mark.parametrize(
    "enabled, available, held, says",
    [
        (True, True, True, "held off while I work"),
        (True, True, False, "allowed"),
        (True, False, False, "cannot be held off here"),
        (False, True, False, "`agent.keep_awake = false`"),
    ],
)
def test_status_says_whether_one_is_held(
    enabled: bool, available: bool, held: bool, says: str
) -> None:
    assert says in texts.awake_line(enabled, available, held)
    assert says in texts.status(
        None, None, 0, False, 1.0, 0, awake=texts.awake_line(enabled, available, held)
    )
