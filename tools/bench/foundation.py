#!/usr/bin/env python3
"""Foundation benchmark: start-up time, idle memory and reply latency of dispatch-matrix,
with a bare matrix-nio echo bot on the same homeserver as the baseline.

Everything runs on loopback: a private Synapse (SQLite, in a temporary folder, on a free port),
the fake Messages API (no scripted turns: it answers ``echo: <text>`` at once), the bot as a
real `dispatch-matrix run` process, and the owner as a matrix-js-sdk (Rust crypto) client in
permissive device-isolation mode. It measures, it does not judge: there are no thresholds.

    .venv/bin/python tools/bench/foundation.py [--messages 20] [--idle-seconds 60]
        [--startup-runs 3] [--out tools/bench/results/foundation.json]

See tools/bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BENCH = Path(__file__).resolve().parent
for extra in (ROOT / "tools", ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from fake_messages_api import FakeMessagesAPI  # noqa: E402
from harness.bot import BotConfig, BotProcess  # noqa: E402
from harness.jsclient import JsClient, check_installed  # noqa: E402
from product_env import bot_python  # noqa: E402

from dispatch_matrix import __version__  # noqa: E402
from dispatch_matrix.app.homeserver import LocalSynapse, free_port  # noqa: E402

NIO_BOT = BENCH / "nio_echo_bot.py"
FIRST_SYNC = re.compile(r"first sync ([0-9.]+)s")
CONNECT_TIMEOUT = 120.0
REPLY_TIMEOUT = 60.0


def say(text: str = "") -> None:
    print(text, flush=True)


# -- accounts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    user_id: str
    password: str
    localpart: str


class Accounts:
    """Registers fresh users on the benchmark's Synapse."""

    def __init__(self, synapse: LocalSynapse) -> None:
        self.synapse = synapse
        self.count = 0

    def new(self, prefix: str) -> Account:
        self.count += 1
        localpart = f"{prefix}{self.count}-{secrets.token_hex(3)}"
        password = secrets.token_urlsafe(12)
        return Account(self.synapse.register(localpart, password), password, localpart)


# -- processes -----------------------------------------------------------------------------------


class Reaper:
    """Every process the benchmark started, stopped on the way out (even on Ctrl-C or error).

    Async stops run first, newest first (graceful); `kill_all` is the synchronous last resort:
    it SIGKILLs, by the process id recorded at start, only children that have not exited.
    """

    def __init__(self) -> None:
        self.stops: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        # name, pid, own session (kill the group)?, has-it-exited
        self.children: list[tuple[str, int, bool, Callable[[], bool]]] = []

    def add(self, name: str, stop: Callable[[], Awaitable[Any]]) -> None:
        self.stops.append((name, stop))

    def track(self, name: str, pid: int, group: bool, exited: Callable[[], bool]) -> None:
        self.children.append((name, pid, group, exited))

    async def stop_all(self) -> None:
        while self.stops:
            name, stop = self.stops.pop()
            try:
                await asyncio.wait_for(stop(), 30)
            except BaseException as err:  # noqa: BLE001 - keep cleaning up
                print(f"[cleanup] stopping {name}: {err!r}", file=sys.stderr, flush=True)

    def kill_all(self) -> None:
        for name, pid, group, exited in self.children:
            if exited():
                continue
            print(f"[cleanup] kill -9 {name} ({pid})", file=sys.stderr, flush=True)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if group:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)


REAPER = Reaper()


async def stop_bot(bot: BotProcess) -> float | None:
    """SIGTERM and wait (kill -9 after 15 s); returns the graceful stop time in seconds."""
    if bot.process is None or bot.process.returncode is not None:
        return None
    started = time.monotonic()
    try:
        code = await bot.stop(15)
    except (TimeoutError, AssertionError):
        await bot.kill9()
        say(f"  ! {bot.config.user_id} did not stop within 15 s after SIGTERM: killed")
        return None
    took = time.monotonic() - started
    if code != 0:
        say(f"  ! {bot.config.user_id} exited {code} on SIGTERM")
    return took


@dataclass
class NioBot:
    """tools/bench/nio_echo_bot.py as a child process in its own session."""

    homeserver: str
    account: Account
    store: Path
    # More arguments for nio_echo_bot.py (e.g. --timeline-limit for a catch-up).
    extra: tuple[str, ...] = ()
    process: asyncio.subprocess.Process | None = None
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def spawn(self) -> None:
        env = {**os.environ, "NIO_ECHO_PASSWORD": self.account.password}
        self.process = await asyncio.create_subprocess_exec(
            bot_python(),
            str(NIO_BOT),
            "--homeserver",
            self.homeserver,
            "--user-id",
            self.account.user_id,
            "--store",
            str(self.store),
            *self.extra,
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

    async def wait_connected(self, timeout: float) -> str:
        async def wait() -> str:
            async with self._changed:
                while True:
                    line = next((x for x in self.stdout if "connected" in x), None)
                    if line is not None:
                        return line
                    if self.process is not None and self.process.returncode is not None:
                        raise RuntimeError(f"nio bot exited:\n{self.output()}")
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise RuntimeError(f"nio bot not connected in {timeout}s:\n{self.output()}") from None

    def output(self) -> str:
        return "\n".join(["--- stdout", *self.stdout[-40:], "--- stderr", *self.stderr[-40:]])

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 15)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)


async def start_js(homeserver: str, account: Account, name: str) -> JsClient:
    """The owner as Element would be: its device cross-signed (dispatch-matrix obeys only
    cross-signed owner devices by default), but in the permissive device-isolation mode
    (strict=False), since the nio baseline's device is not cross-signed."""
    client = await JsClient.start(
        homeserver,
        account.user_id,
        account.password,
        strict=False,
        name=name,
        # A long run outpaces a busy owner's syncs; a gap would hide answers from it.
        timeline_limit=500,
    )
    proc = client.proc
    REAPER.track(f"node {name}", proc.pid, False, lambda: proc.returncode is not None)
    REAPER.add(f"node {name}", client.close)
    await client.bootstrap_cross_signing(account.password)
    return client


# -- measurements --------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """pid and every process below it (from /proc/*/stat)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def memory(pid: int) -> dict[str, Any]:
    """VmRSS and VmHWM (peak RSS) of a process tree, in MiB, with a per-process breakdown."""
    processes: list[dict[str, Any]] = []
    for each in descendants(pid):
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)

        def kib(key: str, fields: dict[str, str] = fields) -> int:
            return int(fields.get(key, "0 kB").split()[0])

        processes.append(
            {
                "pid": each,
                "name": fields.get("Name", "").strip(),
                "rss_mib": round(kib("VmRSS") / 1024, 1),
                "hwm_mib": round(kib("VmHWM") / 1024, 1),
                "threads": int(fields.get("Threads", "0").strip() or 0),
            }
        )
    return {
        "rss_mib": round(sum(p["rss_mib"] for p in processes), 1),
        "hwm_mib": round(sum(p["hwm_mib"] for p in processes), 1),
        "processes": processes,
    }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): a value that was actually observed."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 1),
        "p90": round(percentile(values, 90), 1),
        "max": round(max(values), 1),
        "min": round(min(values), 1),
        "mean": round(statistics.fmean(values), 1),
    }


async def timed_start(bot: BotProcess) -> dict[str, Any]:
    """Spawn `dispatch-matrix run` and time it until the "connected" line."""
    started = time.monotonic()
    await bot.spawn()
    proc = bot.process
    assert proc is not None
    REAPER.track(f"bot {bot.config.user_id}", proc.pid, True, lambda: proc.returncode is not None)
    REAPER.add(f"bot {bot.config.user_id}", lambda: stop_bot(bot))
    line = await bot.wait_stdout(lambda text: "connected" in text, CONNECT_TIMEOUT)
    wall = time.monotonic() - started
    match = FIRST_SYNC.search(line)
    return {
        "wall_s": round(wall, 3),
        "bot_first_sync_s": float(match.group(1)) if match else None,
        "line": line.strip(),
    }


_IMPORT_PROBE = (
    "import re, sys; import {module}; "
    "status = open('/proc/self/status').read(); "
    "sys.stdout.write(re.search(r'VmRSS:\\s+(\\d+)', status).group(1))"
)


async def import_cost(module: str) -> dict[str, float]:
    """Wall time and RSS of `python -c "import <module>"`: the interpreter and imports alone,
    before a bot does anything."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        bot_python(),
        "-c",
        _IMPORT_PROBE.format(module=module),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    wall = time.monotonic() - started
    kib = int(out.decode().strip() or 0)
    return {"wall_s": round(wall, 3), "rss_mib": round(kib / 1024, 1)}


def import_summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    return {
        "runs": runs,
        "wall_median_s": round(statistics.median(r["wall_s"] for r in runs), 3),
        "rss_median_mib": round(statistics.median(r["rss_mib"] for r in runs), 1),
    }


async def heaviest_imports(module: str, top: int = 10) -> dict[str, float]:
    """From one run under `-X importtime`: the heaviest imports, cumulative seconds, each
    attributed to its first importer (depth 0 is the module, depth 1 what it imports)."""
    proc = await asyncio.create_subprocess_exec(
        bot_python(),
        "-X",
        "importtime",
        "-c",
        f"import {module}",
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    heaviest: list[tuple[str, float]] = []
    for line in err.decode(errors="replace").splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line)
        if match and len(match.group(2)) <= 2:
            heaviest.append((match.group(3), int(match.group(1)) / 1e6))
    heaviest.sort(key=lambda item: -item[1])
    return {name: round(t, 3) for name, t in heaviest[:top]}


async def open_dm(owner: JsClient, bot_user: str) -> str:
    room = await owner.create_dm(bot_user)
    await owner.wait_join(room, bot_user, timeout=60)
    return str(room)


async def one_reply(owner: JsClient, room: str, bot_user: str, label: str) -> dict[str, Any]:
    """Send one message; time from send_text returning to the matching answer, decrypted."""
    token = f"{label}-{secrets.token_hex(4)}"
    before = time.monotonic()
    sent = await owner.send_text(room, f"benchmark message {token}")
    after_send = time.monotonic()
    answer = await owner.wait_message(
        room, sender=bot_user, contains=token, after_event_id=sent, timeout=REPLY_TIMEOUT
    )
    arrived = time.monotonic()
    return {
        "label": label,
        "sent_event": sent,
        "answer_event": answer["event_id"],
        "send_ms": round((after_send - before) * 1000, 1),
        "latency_ms": round((arrived - after_send) * 1000, 1),
        "was_encrypted": bool(answer["was_encrypted"]),
        "decryption_failed": bool(answer["decryption_failed"]),
        "body": answer["body"],
    }


async def add_server_deltas(owner: JsClient, room: str, samples: list[dict[str, Any]]) -> None:
    """origin_server_ts(answer) - origin_server_ts(message): the bot's turnaround as the
    homeserver saw it (no client-side sync or decryption in it)."""
    stamps = {m["event_id"]: m["origin_server_ts"] for m in await owner.messages(room)}
    for sample in samples:
        a, b = stamps.get(sample["answer_event"]), stamps.get(sample["sent_event"])
        sample["server_delta_ms"] = (a - b) if a is not None and b is not None else None


async def latency_run(
    owner: JsClient,
    room: str,
    bot_user: str,
    name: str,
    messages: int,
    idle_seconds: float,
    pid: int,
) -> dict[str, Any]:
    """Warm-up answer, idle wait + RSS, then `messages` timed round trips, one at a time."""
    say(f"  warm-up message to {name} …")
    warm = await one_reply(owner, room, bot_user, f"{name}-warmup")
    say(f"  first answer after {warm['latency_ms']:.0f} ms; idling {idle_seconds:.0f} s …")
    await asyncio.sleep(idle_seconds)
    idle = memory(pid)
    say(f"  idle RSS {idle['rss_mib']} MiB; {messages} timed messages …")
    samples = []
    for i in range(messages):
        samples.append(await one_reply(owner, room, bot_user, f"{name}-{i + 1}"))
    after = memory(pid)
    await add_server_deltas(owner, room, [warm, *samples])
    failures = await owner.decryption_failures(settle=1.0)
    latencies = [s["latency_ms"] for s in samples]
    say(
        f"  p50 {statistics.median(latencies):.0f} ms, max {max(latencies):.0f} ms; "
        f"RSS after {after['rss_mib']} MiB"
    )
    return {
        "warmup": warm,
        "idle_seconds": idle_seconds,
        "idle_memory": idle,
        "memory_after_messages": after,
        "latency_ms": summary(latencies),
        "send_ms": summary([s["send_ms"] for s in samples]),
        "server_delta_ms": summary(
            [s["server_delta_ms"] for s in samples if s.get("server_delta_ms") is not None]
        ),
        "all_encrypted": all(s["was_encrypted"] for s in [warm, *samples]),
        "owner_decryption_failures": failures,
        "samples": samples,
    }


# -- the phases ----------------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    synapse: LocalSynapse
    accounts: Accounts
    api: FakeMessagesAPI
    folder: Path

    def bot_config(self, bot: Account, owner: Account) -> BotConfig:
        config = BotConfig(
            folder=self.folder / "bots" / bot.localpart,
            homeserver=self.synapse.url,
            user_id=bot.user_id,
            password=bot.password,
            owners=[owner.user_id],
            api_url=self.api.url,
        )
        config.write()
        return config

    def bot_process(self, config: BotConfig) -> BotProcess:
        # The harness config is tuned for tests (5 s long-poll, debug log); the benchmark
        # runs the shipped defaults unless told otherwise (the environment wins over the file).
        env = {
            "DISPATCH_MATRIX__SYNC_TIMEOUT_MS": str(self.args.bot_sync_timeout_ms),
            "DISPATCH_LOG__LEVEL": self.args.bot_log_level,
        }
        return BotProcess(config, env=env)

    async def startup(self) -> dict[str, Any]:
        """First start (password login, fresh state) and restart (restored login), N each."""
        fresh, restart, stops, imports = [], [], [], []
        for run in range(1, self.args.startup_runs + 1):
            config = self.bot_config(self.accounts.new("startbot"), self.accounts.new("startowner"))
            bot = self.bot_process(config)
            fresh.append(await timed_start(bot))
            stops.append(await stop_bot(bot))
            bot = self.bot_process(config)
            restart.append(await timed_start(bot))
            stops.append(await stop_bot(bot))
            imports.append(await import_cost("dispatch_matrix.app.daemon"))
            say(
                f"  run {run}: first start {fresh[-1]['wall_s']:.2f} s "
                f"(bot: {fresh[-1]['bot_first_sync_s']}), "
                f"restart {restart[-1]['wall_s']:.2f} s (bot: {restart[-1]['bot_first_sync_s']})"
            )
        floor = import_summary(imports)
        floor["importtime_cumulative_s"] = await heaviest_imports("dispatch_matrix.app.daemon")
        heavy = ", ".join(
            f"{name} {t:.2f} s" for name, t in list(floor["importtime_cumulative_s"].items())[:3]
        )
        say(
            f"  import dispatch_matrix.app.daemon alone: {floor['wall_median_s']:.2f} s, "
            f"{floor['rss_median_mib']:.1f} MiB (median); heaviest: {heavy}"
        )
        return {
            "runs": self.args.startup_runs,
            "imports_alone": floor,
            "first_start": fresh,
            "restart": restart,
            "first_start_median": medians(fresh),
            "restart_median": medians(restart),
            "graceful_stop_s": summary([s for s in stops if s is not None]),
        }

    async def dispatch(self) -> dict[str, Any]:
        bot_account, owner_account = self.accounts.new("bot"), self.accounts.new("owner")
        config = self.bot_config(bot_account, owner_account)
        bot = self.bot_process(config)
        start = await timed_start(bot)
        say(f"  dispatch-matrix connected in {start['wall_s']:.2f} s: {start['line']}")
        owner = await start_js(self.synapse.url, owner_account, "owner-dispatch")
        room = await open_dm(owner, bot_account.user_id)
        result = await latency_run(
            owner,
            room,
            bot_account.user_id,
            "dispatch",
            self.args.messages,
            self.args.idle_seconds,
            bot.pid,
        )
        result["start"] = start
        result["graceful_stop_s"] = await stop_bot(bot)
        # One more restart, now that the bot has a DM and a conversation to restore.
        bot = self.bot_process(config)
        result["restart_with_history"] = await timed_start(bot)
        await stop_bot(bot)
        say(f"  restart with history: {result['restart_with_history']['wall_s']:.2f} s")
        result["log_warnings"] = [
            r
            for r in bot.log_events()
            if str(r.get("level", "")).lower() in ("warning", "error", "critical")
        ]
        result["stderr_tail"] = bot.stderr[-20:]
        result["api_requests"] = len(self.api.requests)
        await owner.close()
        return result

    async def nio(self) -> dict[str, Any]:
        bot_account, owner_account = self.accounts.new("niobot"), self.accounts.new("nioowner")
        bot = NioBot(self.synapse.url, bot_account, self.folder / "nio" / bot_account.localpart)
        started = time.monotonic()
        await bot.spawn()
        proc = bot.process
        assert proc is not None
        REAPER.track("nio echo bot", proc.pid, True, lambda: proc.returncode is not None)
        REAPER.add("nio echo bot", bot.stop)
        line = await bot.wait_connected(CONNECT_TIMEOUT)
        match = FIRST_SYNC.search(line)
        start = {
            "wall_s": round(time.monotonic() - started, 3),
            "bot_first_sync_s": float(match.group(1)) if match else None,
            "line": line.strip(),
        }
        say(f"  nio echo bot connected in {start['wall_s']:.2f} s: {start['line']}")
        owner = await start_js(self.synapse.url, owner_account, "owner-nio")
        room = await open_dm(owner, bot_account.user_id)
        result = await latency_run(
            owner,
            room,
            bot_account.user_id,
            "nio",
            self.args.messages,
            self.args.idle_seconds,
            bot.pid,
        )
        result["start"] = start
        await bot.stop()
        result["stderr"] = bot.stderr[-20:]
        await owner.close()
        runs = [await import_cost("nio") for _ in range(self.args.startup_runs)]
        result["imports_alone"] = import_summary(runs)
        return result


def medians(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    walls = [r["wall_s"] for r in runs]
    own = [r["bot_first_sync_s"] for r in runs if r["bot_first_sync_s"] is not None]
    return {
        "wall_s": round(statistics.median(walls), 3) if walls else None,
        "bot_first_sync_s": round(statistics.median(own), 3) if own else None,
    }


# -- machine facts and output --------------------------------------------------------------------


def revision() -> dict[str, Any]:
    """Which code was measured: HEAD and the files that differ from it (read-only git)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        )
        return done.stdout if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--untracked-files=no", "--", "dispatch_matrix")
    return {
        "head": git("rev-parse", "HEAD").strip(),
        "subject": git("log", "-1", "--format=%s").strip(),
        "package_files_changed": [line[3:] for line in changed.splitlines() if line.strip()],
    }


@dataclass
class CpuMeter:
    """CPU time the whole machine spent vs. what this benchmark and its (waited-for) children
    spent: the difference is other work that competed with the measurements."""

    started_wall: float = field(default_factory=time.monotonic)
    started_busy: float = 0.0
    started_ours: float = 0.0

    @staticmethod
    def busy() -> float:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def ours() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def start(self) -> CpuMeter:
        self.started_wall, self.started_busy, self.started_ours = (
            time.monotonic(),
            self.busy(),
            self.ours(),
        )
        return self

    def report(self) -> dict[str, float]:
        wall = time.monotonic() - self.started_wall
        busy = self.busy() - self.started_busy
        ours = self.ours() - self.started_ours
        other = max(0.0, busy - ours)
        cpus = os.cpu_count() or 1
        return {
            "wall_s": round(wall, 1),
            "machine_busy_cpu_s": round(busy, 1),
            "benchmark_cpu_s": round(ours, 1),
            "other_cpu_s": round(other, 1),
            "other_share_of_machine": round(other / (wall * cpus), 3) if wall else 0.0,
        }


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_total = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = round(int(line.split()[1]) / 1024 / 1024, 1)
    versions: dict[str, str] = {}
    for dist in ("matrix-nio", "matrix-synapse", "vodozemac", "anthropic", "aiohttp"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[dist] = version(dist)
    node = shutil.which("node")
    return {
        "nproc": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model,
        "mem_total_gib": mem_total,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "node": node,
        "dispatch_matrix": __version__,
        "packages": versions,
        "loadavg_at_start": list(os.getloadavg()),
    }


def _sec(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


def _mib(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} MiB"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f} ms"


def table(results: dict[str, Any]) -> str:
    """The figures side by side: dispatch-matrix and the nio baseline."""
    s, d, n = results["startup"], results["dispatch"], results["nio"]
    first, again = s["first_start_median"], s["restart_median"]
    runs = s["runs"]
    count = d["latency_ms"]["n"]
    rows: list[tuple[str, str, str]] = [
        (
            f"run -> connected, first start (median of {runs})",
            _sec(first["wall_s"]),
            _sec(n["start"]["wall_s"]) + " (1 run)",
        ),
        (
            "  the bot's own 'first sync' figure",
            _sec(first["bot_first_sync_s"]),
            _sec(n["start"]["bot_first_sync_s"]),
        ),
        (f"run -> connected, restart (median of {runs})", _sec(again["wall_s"]), "n/a"),
        ("  the bot's own 'first sync' figure", _sec(again["bot_first_sync_s"]), "n/a"),
        ("restart with 1 DM + history (1 run)", _sec(d["restart_with_history"]["wall_s"]), "n/a"),
        (
            "  the bot's own 'first sync' figure",
            _sec(d["restart_with_history"]["bot_first_sync_s"]),
            "n/a",
        ),
        (
            "python -c 'import <package>' alone (median)",
            _sec(s["imports_alone"]["wall_median_s"]),
            _sec(n["imports_alone"]["wall_median_s"]) + " (nio)",
        ),
        ("graceful stop, SIGTERM -> exit (median)", _sec(s["graceful_stop_s"].get("p50")), "-"),
        (
            f"idle RSS after {d['idle_seconds']:.0f} s",
            _mib(d["idle_memory"]["rss_mib"]),
            _mib(n["idle_memory"]["rss_mib"]),
        ),
        (
            "  RSS of 'import <package>' alone",
            _mib(s["imports_alone"]["rss_median_mib"]),
            _mib(n["imports_alone"]["rss_median_mib"]) + " (nio)",
        ),
        (
            "  peak RSS (VmHWM) so far",
            _mib(d["idle_memory"]["hwm_mib"]),
            _mib(n["idle_memory"]["hwm_mib"]),
        ),
        (
            "RSS after the timed messages",
            _mib(d["memory_after_messages"]["rss_mib"]),
            _mib(n["memory_after_messages"]["rss_mib"]),
        ),
        (
            "first answer (cold: olm/megolm setup)",
            _ms(d["warmup"]["latency_ms"]),
            _ms(n["warmup"]["latency_ms"]),
        ),
    ]
    for key in ("p50", "p90", "max"):
        rows.append(
            (
                f"reply latency {key} (N={count})",
                _ms(d["latency_ms"][key]),
                _ms(n["latency_ms"][key]),
            )
        )
    rows += [
        (
            "  server-side turnaround p50",
            _ms(d["server_delta_ms"].get("p50")),
            _ms(n["server_delta_ms"].get("p50")),
        ),
        ("  owner send_text call p50", _ms(d["send_ms"]["p50"]), _ms(n["send_ms"]["p50"])),
    ]
    headers = ("", "dispatch-matrix", "nio echo bot")
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(3)]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    check_installed()
    facts = machine()
    code = revision()
    say(f"synapse: configuring in {folder / 'synapse'} …")
    synapse = LocalSynapse(folder / "synapse", port=free_port())
    await asyncio.to_thread(synapse.configure)
    REAPER.add("synapse", lambda: asyncio.to_thread(synapse.stop))
    started = time.monotonic()
    try:
        await asyncio.to_thread(synapse.start)
    finally:
        hs = synapse.process
        if hs is not None:
            REAPER.track("synapse", hs.pid, True, lambda: hs.poll() is not None)
    say(f"synapse: up at {synapse.url} in {time.monotonic() - started:.1f} s")
    api = FakeMessagesAPI().start()
    REAPER.add("fake messages api", lambda: asyncio.to_thread(api.stop))
    accounts = Accounts(synapse)
    b = Bench(args, synapse, accounts, api, folder)

    say(f"\n[1/3] start-up: {args.startup_runs} first starts and {args.startup_runs} restarts")
    startup = await b.startup()
    say("\n[2/3] dispatch-matrix: warm-up, idle, latency")
    dispatch = await b.dispatch()
    say("\n[3/3] matrix-nio echo bot: warm-up, idle, latency")
    nio = await b.nio()
    return {
        "benchmark": "foundation",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).as_posix(), *sys.argv]),
        "settings": {
            "messages": args.messages,
            "idle_seconds": args.idle_seconds,
            "startup_runs": args.startup_runs,
            "bot_sync_timeout_ms": args.bot_sync_timeout_ms,
            "bot_log_level": args.bot_log_level,
            "nio_sync_timeout_ms": 30000,
            "owner_client": "matrix-js-sdk Rust crypto, cross-signed, strict=False "
            "(AllDevicesIsolationMode)",
            "messages_api": "tools/fake_messages_api.py, default echo responder, no delay",
            "percentiles": "p50 = median; p90 = nearest rank",
        },
        "machine": {**facts, "loadavg_at_end": list(os.getloadavg())},
        "revision": code,
        "startup": startup,
        "dispatch": dispatch,
        "nio": nio,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20, help="timed round trips per bot")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="idle wait before RSS")
    parser.add_argument("--startup-runs", type=int, default=3, help="first starts and restarts")
    parser.add_argument(
        "--out", type=Path, default=BENCH / "results" / "foundation.json", help="JSON results"
    )
    parser.add_argument(
        "--bot-sync-timeout-ms",
        type=int,
        default=30_000,
        help="dispatch-matrix long-poll (the shipped default; tests use 5000)",
    )
    parser.add_argument(
        "--bot-log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="dispatch-matrix log level (the shipped default; tests use debug)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.startup_runs < 1 or args.idle_seconds < 0:
        parser.error("--messages and --startup-runs must be >= 1, --idle-seconds >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench-foundation-"))

    async def run() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        meter = CpuMeter().start()
        try:
            results = await bench(args, folder)
        finally:
            await REAPER.stop_all()
        # Everything is stopped and waited for: the children's CPU time is in os.times().
        results["cpu"] = meter.report()
        return results

    code = 1
    keep = args.keep
    try:
        results = asyncio.run(run())
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        say("\n" + table(results))
        say(
            f"\nmachine: {results['machine']['nproc']} CPUs, {results['machine']['cpu_model']}, "
            f"Python {results['machine']['python']}"
        )
        cpu = results["cpu"]
        say(
            f"cpu: this benchmark {cpu['benchmark_cpu_s']:.0f} s, other processes "
            f"{cpu['other_cpu_s']:.0f} s over {cpu['wall_s']:.0f} s wall "
            f"({cpu['other_share_of_machine']:.0%} of the machine)"
        )
        if cpu["other_share_of_machine"] > 0.05:
            say("  ! other work competed with the measurements: rerun on a quiet machine")
        rev = results["revision"]
        dirty = " + uncommitted changes" if rev["package_files_changed"] else ""
        say(f"code: {rev['head'][:12]}{dirty}")
        say(f"results: {args.out}")
        code = 0
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted: stopped everything it started", file=sys.stderr)
        code = 130
    except BaseException:
        keep = True  # the Synapse log and the bots' state explain the failure
        raise
    finally:
        REAPER.kill_all()
        if keep:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
