#!/usr/bin/env python3
"""Restart time, idle RSS against the libraries' floor, and idle CPU of dispatch-matrix.

The functions are for reuse (the lead's scripts, other benchmarks); importing this module
does nothing but define them:

- `tree_cpu_seconds(pid)`: utime + stime of a process and every live descendant, plus what
  their reaped children left in cutime + cstime, in seconds (from /proc/PID/stat).
- `idle_cpu(pid, seconds)`: the share of one CPU that tree used over a window (async).
- `tree_rss_mib(pid)`: VmRSS of the same tree, summed, in MiB.
- `floor_rss_mib(modules)`: VmRSS of a process that only imports `modules` and sleeps.

Run as a script it brings up a private Synapse, the fake Messages API and a bot with an
owner and an encrypted DM (one answered message), then times `--restarts` restarts
(spawn → the stdout line containing "connected"), idles `--idle-seconds` with the shipped
defaults (30 s long-poll, info log) and reads the bot's CPU and RSS, and reads the floor's
RSS (`import nio, anthropic`). It prints the figures and the load average; it asserts
nothing.

    .venv/bin/python tools/bench/idle.py [--restarts 5] [--idle-seconds 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
    await f.stop_bot(bot)
    await owner.close()
    floors = [await asyncio.to_thread(floor_rss_mib) for _ in range(3)]
    return {
        "restart_s": restarts,
        "restart_median_s": statistics.median(restarts),
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
