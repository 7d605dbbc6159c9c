"""Queue benchmark: reply latency one message at a time, and how fast a backlog sent while
the bot was stopped is worked through, by dispatch-matrix and by a bare matrix-nio echo bot
on the same homeserver.

    .venv/bin/python tools/bench/backlog.py [--replies 20] [--backlog 500] \\
        [--bots dispatch,nio] [--profile DIR]

Brings up its own Synapse (relaxed limits: both bots exempt), the stand-in Messages API
(zero-delay echo), each bot as a real process and a cross-signed matrix-js-sdk owner per bot
(strict device isolation for dispatch-matrix, as Element is moving to; permissive for the nio
bot, whose device is not cross-signed); stops all of them on the way out. Writes
tools/bench/results/backlog.json. A measurement, not a test: nothing is asserted.

The catch-up: the bot is stopped, `--backlog` messages are sent, the bot is started again;
timed from the spawn of its process to the owner's client holding an answer to every
message (also split at the bot's `connected` line), and every answer is counted, so a lost
or doubled one shows. Both page back through the gap the first sync leaves with /messages
(the nio bot answers the newest few, which that sync carries, first). `--profile DIR`
runs py-spy (when installed) on the bot for the catch-up and writes a speedscope profile
and its top frames there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tools"), str(ROOT / "tools/bench"), str(ROOT)]

from fake_messages_api import FakeMessagesAPI  # noqa: E402
from foundation import Account, Accounts, NioBot  # noqa: E402
from harness.bot import BotConfig, BotProcess  # noqa: E402
from harness.jsclient import JsClient  # noqa: E402

from dispatch_matrix.app.homeserver import LocalSynapse, free_port  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 1),
        "p90": round(percentile(values, 0.9), 1),
        "max": round(max(values), 1),
    }


class Bot:
    """One bot under measurement: how to start it (returns its pid once connected), stop it."""

    def __init__(
        self,
        name: str,
        user_id: str,
        start: Callable[[], Awaitable[int]],
        stop: Callable[[], Awaitable[None]],
    ) -> None:
        self.name, self.user_id, self._start, self._stop = name, user_id, start, stop
        self.running = False

    async def start(self) -> int:
        pid = await self._start()
        self.running = True
        return pid

    async def stop(self) -> None:
        if self.running:
            await self._stop()
        self.running = False


async def replies(owner: JsClient, room: str, bot: Bot, count: int) -> list[float]:
    """Round trips one at a time: sent → the answer decrypted at the owner's client."""
    took: list[float] = []
    for n in range(count):
        token = secrets.token_hex(4)
        began = time.monotonic()
        sent = await owner.send_text(room, f"reply probe {n} {token}")
        await owner.wait_message(room, sender=bot.user_id, contains=token, after_event_id=sent)
        took.append((time.monotonic() - began) * 1000)
    return took


class Profiler:
    """py-spy on one process while it works; nothing when py-spy is not installed."""

    def __init__(self, folder: Path | None, label: str) -> None:
        self.folder, self.label = folder, label
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, pid: int) -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if self.folder is None or not Path(spy).exists():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
            "--output", str(self.folder / f"{self.label}.txt"),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(2)  # SIGINT: py-spy writes its output and exits
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), 30)


async def catch_up(
    owner: JsClient, room: str, bot: Bot, count: int, profile: Path | None
) -> dict[str, Any]:
    """Stop the bot, send `count` messages, start it; until the last one is answered."""
    await bot.stop()
    tag = secrets.token_hex(3)
    for n in range(count):
        await owner.send_text(room, f"backlog {tag} {n:04d}")
    spawned = time.monotonic()
    pid = await bot.start()
    connected = time.monotonic()
    profiler = Profiler(profile, bot.name)
    await profiler.start(pid)
    # Every answer, not only the last: the nio bot answers the newest few first.
    for n in range(count):
        mark = f"backlog {tag} {n:04d}"
        await owner.wait_message(room, sender=bot.user_id, contains=mark, timeout=3600)
    finished = time.monotonic()
    await profiler.stop()
    answers: Counter[str] = Counter()
    for event in await owner.messages(room):
        body = str((event.get("content") or {}).get("body", ""))
        if event.get("sender") == bot.user_id and f"backlog {tag} " in body:
            answers[body.rsplit(f"backlog {tag} ", 1)[1][:4]] += 1
    return {
        "tasks": count,
        "spawn_to_connected_s": round(connected - spawned, 2),
        "connected_to_last_answer_s": round(finished - connected, 2),
        "spawn_to_last_answer_s": round(finished - spawned, 2),
        "tasks_per_s": round(count / (finished - spawned), 2),
        "answered": len(answers),
        "answered_twice": sum(1 for c in answers.values() if c > 1),
    }


async def dispatch_bot(
    synapse: LocalSynapse, api: FakeMessagesAPI, folder: Path
) -> tuple[Bot, JsClient, str]:
    bot_pw, owner_pw = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    bot_id = synapse.register("bot", bot_pw)
    owner_id = synapse.register("owner", owner_pw)
    config = BotConfig(folder / "bot", synapse.url, bot_id, bot_pw, [owner_id], api.url)
    config.write()
    text = config.path.read_text().replace('level = "debug"', 'level = "info"')
    config.path.write_text(text.replace("sync_timeout_ms = 5000", "sync_timeout_ms = 30000"))
    process: list[BotProcess] = []

    async def start() -> int:
        process[:] = [await BotProcess(config).start()]
        assert process[0].process is not None
        return process[0].process.pid

    async def stop() -> None:
        await process[0].stop()

    bot = Bot("dispatch", bot_id, start, stop)
    await bot.start()
    owner = await JsClient.start(synapse.url, owner_id, owner_pw, strict=True, name="owner")
    await owner.bootstrap_cross_signing(owner_pw)
    room = await owner.create_dm(bot_id)
    await owner.wait_join(room, bot_id)
    return bot, owner, room


async def nio_bot(synapse: LocalSynapse, folder: Path) -> tuple[Bot, JsClient, str]:
    accounts = Accounts(synapse)
    bot_account, owner_account = accounts.new("niobot"), accounts.new("nioowner")
    holder: list[NioBot] = []

    async def start() -> int:
        nio = NioBot(synapse.url, bot_account, folder / "nio")
        await nio.spawn()
        await nio.wait_connected(120)
        holder[:] = [nio]
        return nio.pid

    async def stop() -> None:
        await holder[0].stop()

    bot = Bot("nio", bot_account.user_id, start, stop)
    await bot.start()
    owner = await owner_client(synapse, owner_account)
    room = await owner.create_dm(bot_account.user_id)
    await owner.wait_join(room, bot_account.user_id)
    return bot, owner, room


async def owner_client(synapse: LocalSynapse, account: Account) -> JsClient:
    owner = await JsClient.start(
        synapse.url, account.user_id, account.password, strict=False, name="owner-nio"
    )
    await owner.bootstrap_cross_signing(account.password)
    return owner


async def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    synapse = LocalSynapse(folder / "synapse", port=free_port())
    synapse.configure()
    synapse.start()
    api = FakeMessagesAPI().start()
    opened: list[tuple[Bot, JsClient]] = []
    figures: dict[str, Any] = {}
    try:
        for name in args.bots:
            if name == "dispatch":
                bot, owner, room = await dispatch_bot(synapse, api, folder)
            else:
                bot, owner, room = await nio_bot(synapse, folder)
            opened.append((bot, owner))
            await owner.send_text(room, "warm-up")
            await owner.wait_message(room, sender=bot.user_id, contains="warm-up", timeout=120)
            took = await replies(owner, room, bot, args.replies)
            print(f"{name}: reply p50 {statistics.median(took):.0f} ms", flush=True)
            result = await catch_up(owner, room, bot, args.backlog, args.profile)
            print(f"{name}: catch-up {json.dumps(result)}", flush=True)
            figures[name] = {"reply_ms": summary(took), "catch_up": result}
            if name == "dispatch":
                figures[name]["catch_up"]["model_requests_total"] = len(api.requests)
            await bot.stop()
        if "dispatch" in figures and "nio" in figures:
            ours, theirs = figures["dispatch"], figures["nio"]
            figures["ratio"] = {
                "reply_p50": round(ours["reply_ms"]["p50"] / theirs["reply_ms"]["p50"], 2),
                "catch_up_tasks_per_s": round(
                    ours["catch_up"]["tasks_per_s"] / theirs["catch_up"]["tasks_per_s"], 2
                ),
            }
        return figures
    finally:
        for bot, owner in reversed(opened):
            await owner.close()
            await bot.stop()
        api.stop()
        synapse.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=20)
    parser.add_argument("--backlog", type=int, default=500)
    parser.add_argument("--bots", type=lambda s: s.split(","), default=["dispatch", "nio"])
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "tools/bench/results/backlog.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dm-bench-queue-") as tmp:
        figures = asyncio.run(run(args, Path(tmp)))
    result = {
        "benchmark": "backlog",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["tools/bench/backlog.py", *sys.argv[1:]]),
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_at_start": load_before,
            "loadavg_at_end": os.getloadavg(),
        },
        **figures,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
