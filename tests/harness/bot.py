"""The bot under test as a real process: `dispatch-matrix run` with its own config and state.

Tests drive it as a user would: through the homeserver, the Messages API stand-in, and
signals. The process runs in its own process group so a crash test can kill -9 it whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def console_script() -> str:
    """The installed `dispatch-matrix` script beside this interpreter, or beside the one
    DISPATCH_MATRIX_PYTHON names (the benchmarks run the bot without the test packages)."""
    python = os.environ.get("DISPATCH_MATRIX_PYTHON") or sys.executable
    return str(Path(python).with_name("dispatch-matrix"))


# The API key every test bot is given: what no room message or log line may show.
API_KEY = "sk-ant-test-not-a-real-key-000000"


@dataclass
class BotConfig:
    """What a test bot's config file says."""

    folder: Path
    homeserver: str
    user_id: str
    password: str
    owners: list[str]
    api_url: str
    model: str = "claude-sonnet-4-6"
    max_retries: int = 3
    extra: str = ""
    matrix_extra: str = ""
    # More [agent] keys (e.g. `sandbox = "none"`); by default the OS sandbox is on, as for users.
    agent_extra: str = ""
    workdir: Path | None = None
    # The one-time welcome in a new DM: off for tests about everything else, whose first
    # message from the bot is the answer they wait for (tests/test_welcome_e2e.py turns it on).
    welcome: bool = False
    # The asleep notice (delayed events): off for tests about everything else, whose rooms
    # would otherwise also get "stopped" notices (tests/test_asleep_e2e.py turns it on).
    asleep: bool = False
    # The sync long poll: short in tests, so a message is seen within seconds of a restart.
    sync_timeout_ms: int = 5000

    @property
    def path(self) -> Path:
        return self.folder / "config.toml"

    @property
    def state(self) -> Path:
        return self.folder / "state"

    def write(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        workdir = self.workdir or (self.folder / "work")
        workdir.mkdir(parents=True, exist_ok=True)
        owners = ", ".join(json.dumps(owner) for owner in self.owners)
        self.path.write_text(
            f"""
[matrix]
homeserver = {json.dumps(self.homeserver)}
user_id = {json.dumps(self.user_id)}
password = {json.dumps(self.password)}
owners = [{owners}]
sync_timeout_ms = {self.sync_timeout_ms}
welcome = {json.dumps(self.welcome)}
asleep_notice = {json.dumps(self.asleep)}
{self.matrix_extra}

[agent]
model = {json.dumps(self.model)}
workdir = {json.dumps(str(workdir))}
allowed_roots = [{json.dumps(str(workdir))}]
base_url = {json.dumps(self.api_url)}
api_key = "{API_KEY}"
max_retries = {self.max_retries}
{self.agent_extra}

[store]
path = "state"

[log]
level = "debug"
{self.extra}
"""
        )
        return self.path


@dataclass
class BotProcess:
    """A running (or stopped) `dispatch-matrix run`."""

    config: BotConfig
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def log_file(self) -> Path:
        return self.config.state / "logs" / "dispatch.jsonl"

    async def spawn(self, *args: str) -> None:
        """Start the process without waiting for it to connect."""
        # The tests' own environment must not leak a real key into the bot.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
        # Every bot is a new interpreter: where the environment forbids writing bytecode,
        # each one compiled the SDK and nio again (an import of the daemon: 4.7 s of CPU
        # from source, 2.6 s from cached bytecode, measured here). Let the first bot write
        # the cache (into the package folders, which git ignores); every later process
        # reads it, `status` and `doctor` included.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.update(self.env)
        self.stdout, self.stderr = [], []
        self.process = await asyncio.create_subprocess_exec(
            console_script(),
            *(args or ("run", "--config", str(self.config.path))),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        assert self.process.stdout and self.process.stderr
        self._readers = [
            asyncio.create_task(self._read(self.process.stdout, self.stdout)),
            asyncio.create_task(self._read(self.process.stderr, self.stderr)),
        ]

    async def _read(self, stream: asyncio.StreamReader, into: list[str]) -> None:
        async for raw in stream:
            async with self._changed:
                into.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def start(self, timeout: float = 60) -> BotProcess:
        """Start and wait until the bot says it is connected."""
        await self.spawn()
        await self.wait_stdout(lambda line: "connected" in line, timeout)
        return self

    async def wait_stdout(self, match: Callable[[str], bool], timeout: float = 30) -> str:
        """Wait for a stdout line that matches; fails with the output if the bot exits."""

        def found() -> str | None:
            return next((line for line in self.stdout if match(line)), None)

        async def wait() -> str:
            async with self._changed:
                while True:
                    line = found()
                    if line is not None:
                        return line
                    if self.process is not None and self.process.returncode is not None:
                        raise AssertionError(
                            f"bot exited {self.process.returncode}:\n{self.output()}"
                        )
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"bot did not print the line in {timeout}s:\n{self.output()}"
            ) from None

    def output(self) -> str:
        return "\n".join(["--- stdout", *self.stdout[-60:], "--- stderr", *self.stderr[-60:]])

    def log_events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The bot's JSON log records (optionally only those with this event name)."""
        if not self.log_file.exists():
            return []
        records = []
        for line in self.log_file.read_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if name is None or record.get("event") == name:
                    records.append(record)
        return records

    async def wait_log(
        self,
        name: str,
        timeout: float = 30,
        count: int = 1,
        where: Callable[[dict[str, Any]], bool] = lambda r: True,
    ) -> list[dict[str, Any]]:
        """Wait until the log holds `count` records of an event (the log is a file: poll it)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = [r for r in self.log_events(name) if where(r)]
            if len(found) >= count:
                return found
            if self.process is not None and self.process.returncode is not None:
                raise AssertionError(f"bot exited before logging {name}:\n{self.output()}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no {name} in the log within {timeout}s:\n{self.output()}")
            # The log is a file another process writes; there is no event to wait on.
            await asyncio.sleep(0.05)

    async def wait_exit(self, timeout: float = 30) -> int:
        """Wait for the process to end; returns its exit code."""
        assert self.process is not None
        code = await asyncio.wait_for(self.process.wait(), timeout)
        await asyncio.gather(*self._readers, return_exceptions=True)
        return code

    async def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait: the graceful stop a service manager does."""
        if self.process is None or self.process.returncode is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        return await self.wait_exit(timeout)

    async def kill9(self) -> None:
        """kill -9 of the bot's whole process group, as a crash or power cut would."""
        if self.process is None or self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        await self.wait_exit(10)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid
