#!/usr/bin/env python3
"""Restart time, idle RSS against the libraries' floor, and idle CPU of dispatch-matrix.

The functions are for reuse (the lead's scripts, other benchmarks); importing this module
does nothing but define them:

- `tree_cpu_seconds(pid)`: utime + stime of a process and every live descendant, plus what
  their reaped children left in cutime + cstime, in seconds (from /proc/PID/stat).
- `idle_cpu(pid, seconds)`: the share of one CPU that tree used over a window (async).
- `tree_rss_mib(pid)`: VmRSS of the same tree, summed, in MiB.
- `floor_rss_mib(modules)`: VmRSS of a process that only imports `modules` and sleeps.

- `answer_after_wake(...)`: a process stopped (SIGSTOP, what a laptop's sleep does to it)
  while a message arrives, then continued: seconds from SIGCONT to the answer.

Run as a script it brings up a private Synapse, the fake Messages API and a bot with an
owner and an encrypted DM (one answered message), then times `--restarts` restarts
(spawn → the stdout line containing "connected"), idles `--idle-seconds` with the shipped
defaults (30 s long-poll, info log) and reads the bot's CPU and RSS, and reads the floor's
RSS (`import nio, anthropic`). Then the two waits a user feels after a fault, `--wakes`
times each: the answer to a message sent while the bot was stopped for `--asleep-seconds`
(longer than a long poll, so the request it had open has ended), after SIGCONT, for the bot
and for a bare nio echo bot in the same run (the ratio is the goal's figure); and the
answer to a message sent while the Messages API was down for `--api-away-seconds` (the
bot has told the owner it is unavailable), after the API is back (no echo-bot counterpart:
it calls no API; the shipped probe runs every `[agent] outage_probe_s`). It prints the
figures and the load average; it asserts nothing (the tests assert what cuts these waits
short: tests/test_ops_e2e.py).

    .venv/bin/python tools/bench/idle.py [--restarts 5] [--idle-seconds 300] [--wakes 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from product_env import bot_python, use_product_python
from stage import run_staged, set_stage

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    return text[text.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """pid and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of pid's tree, reaped children included."""
    total = 0
    for each in descendants(pid):
        try:
            fields = _stat_fields(each)
        except OSError:
            continue
        # utime, stime, cutime, cstime are fields 14-17 of stat; index 0 here is field 3.
        total += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return total / _TICKS


async def idle_cpu(pid: int, seconds: float) -> dict[str, float]:
    """CPU the tree of pid used over the next `seconds`: seconds and percent of one CPU."""
    before, started = tree_cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    used, wall = tree_cpu_seconds(pid) - before, time.monotonic() - started
    return {"window_s": round(wall, 1), "cpu_s": round(used, 3), "percent": 100 * used / wall}


def tree_rss_mib(pid: int) -> float:
    """VmRSS of pid and its descendants, summed, in MiB."""
    kib = 0
    for each in descendants(pid):
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                kib += int(line.split()[1])
    return kib / 1024


def floor_rss_mib(modules: tuple[str, ...] = ("nio", "anthropic"), python: str = "") -> float:
    """RSS of a process that imports `modules` and then only sleeps (read from outside)."""
    code = f"import sys, time; import {', '.join(modules)}; print('up', flush=True); time.sleep(60)"
    with subprocess.Popen(
        [python or bot_python(), "-c", code], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            proc.stdout.readline()
            return tree_rss_mib(proc.pid)
        finally:
            proc.kill()


async def answer_after_wake(
    pid: int, owner: Any, room: str, bot_user: str, asleep_s: float, timeout: float = 120
) -> float:
    """Stop `pid` (SIGSTOP), send a message, keep it stopped `asleep_s`, continue it: the
    seconds from SIGCONT to the answer that names the message. `owner` is a JsClient."""
    token = f"wake-{secrets.token_hex(4)}"
    os.kill(pid, signal.SIGSTOP)
    try:
        sent = await owner.send_text(room, f"benchmark message {token}")
        # The fault's length: a benchmark reproduces the sleep, a test would not wait it out.
        await asyncio.sleep(asleep_s)
    finally:
        os.kill(pid, signal.SIGCONT)
    woke = time.monotonic()
    await owner.wait_message(
        room, sender=bot_user, contains=token, after_event_id=sent, timeout=timeout
    )
    return time.monotonic() - woke


async def answer_after_api_back(
    api: Any, owner: Any, room: str, bot_user: str, away_s: float, timeout: float = 180
) -> float:
    """Stop the Messages API stand-in `api`, send a message, wait for the bot to say the
    API is unavailable and `away_s` more, start the API again: the seconds from then to the
    answer that names the message."""
    token = f"outage-{secrets.token_hex(4)}"
    await asyncio.to_thread(api.stop)
    try:
        sent = await owner.send_text(room, f"benchmark message {token}")
        await owner.wait_message(
            room, sender=bot_user, contains="unavailable", after_event_id=sent, timeout=timeout
        )
        await asyncio.sleep(away_s)
    finally:
        await asyncio.to_thread(api.start)
    back = time.monotonic()
    await owner.wait_message(
        room, sender=bot_user, contains=token, after_event_id=sent, timeout=timeout
    )
    return time.monotonic() - back


async def _nio_wakes(stage: Any, folder: Path, args: argparse.Namespace) -> list[float]:
    """The same wake, `args.wakes` times, for a bare nio echo bot with its own DM."""
    import foundation as f

    bench = stage.bench
    account = bench.accounts.new("wakenio")
    nio = f.NioBot(bench.synapse.url, account, folder / "nio" / account.localpart)
    await nio.spawn()
    proc = nio.process
    assert proc is not None
    f.REAPER.track("nio echo bot", proc.pid, True, lambda: proc.returncode is not None)
    f.REAPER.add("nio echo bot", nio.stop)
    try:
        await nio.wait_connected(f.CONNECT_TIMEOUT)
        room = await f.open_dm(stage.owner, account.user_id)
        await f.one_reply(stage.owner, room, account.user_id, "nio-warmup")
        wakes = []
        for _ in range(args.wakes):
            wakes.append(
                await answer_after_wake(
                    nio.pid, stage.owner, room, account.user_id, args.asleep_seconds
                )
            )
            f.say(f"  nio echo bot: answer {wakes[-1]:.2f} s after waking")
        return wakes
    finally:
        await nio.stop()


# -- the script ----------------------------------------------------------------------------------


async def _bench(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    # Imported here so that importing this module stays free of the harness's side effects.
    import foundation as f

    stage = await set_stage(args, folder, bot_name="idlebot", owner_name="idleowner")
    owner, room, bot_user = stage.owner, stage.room, stage.bot_user
    restarts = []
    for _ in range(args.restarts):
        bot = stage.bot()
        restarts.append((await f.timed_start(bot))["wall_s"])
        await f.stop_bot(bot)
        f.say(f"  restart → connected {restarts[-1]:.2f} s (load {os.getloadavg()[0]:.2f})")
    bot = stage.bot()
    await f.timed_start(bot)
    await f.one_reply(owner, room, bot_user, "before-idle")
    # The answer's decorations (reaction, receipt, presence) settle before the window opens.
    await asyncio.sleep(15)
    load_before = os.getloadavg()
    cpu = await idle_cpu(bot.pid, args.idle_seconds)
    rss = tree_rss_mib(bot.pid)
    wakes, api_backs = [], []
    for _ in range(args.wakes):
        wakes.append(await answer_after_wake(bot.pid, owner, room, bot_user, args.asleep_seconds))
        f.say(f"  dispatch-matrix: answer {wakes[-1]:.2f} s after waking")
    for _ in range(args.wakes):
        api_backs.append(
            await answer_after_api_back(
                stage.bench.api, owner, room, bot_user, args.api_away_seconds
            )
        )
        f.say(f"  dispatch-matrix: answer {api_backs[-1]:.2f} s after the API was back")
    await f.stop_bot(bot)
    nio_wakes = await _nio_wakes(stage, folder, args) if args.wakes else []
    await owner.close()
    floors = [await asyncio.to_thread(floor_rss_mib) for _ in range(3)]
    wake = statistics.median(wakes) if wakes else None
    nio_wake = statistics.median(nio_wakes) if nio_wakes else None
    return {
        "asleep_s": args.asleep_seconds,
        "answer_after_wake_s": [round(w, 3) for w in wakes],
        "nio_answer_after_wake_s": [round(w, 3) for w in nio_wakes],
        "answer_after_wake_ratio": round(wake / nio_wake, 2) if wake and nio_wake else None,
        "api_away_s": args.api_away_seconds,
        "answer_after_api_back_s": [round(b, 3) for b in api_backs],
        "restart_s": restarts,
        "restart_median_s": statistics.median(restarts) if restarts else None,
        "idle_cpu": cpu,
        "idle_rss_mib": round(rss, 1),
        "floor_rss_mib": round(statistics.median(floors), 1),
        "rss_ratio": round(rss / statistics.median(floors), 3),
        "loadavg_before_idle": load_before,
        "loadavg_end": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=300.0)
    parser.add_argument("--wakes", type=int, default=3, help="0 skips the fault figures")
    parser.add_argument("--asleep-seconds", type=float, default=40.0)
    parser.add_argument("--api-away-seconds", type=float, default=12.0)
    parser.add_argument("--bot-sync-timeout-ms", type=int, default=30_000)
    parser.add_argument("--bot-log-level", default="info")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    use_product_python()
    folder = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    results = run_staged(lambda: _bench(args, folder), folder)
    for key, value in results.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
