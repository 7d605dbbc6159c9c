#!/usr/bin/env python3
"""Sandbox cost: wall time of one `bash` tool call running `true`, with and without the OS
sandbox (bubblewrap on Linux), through the real tool (spec from disk, launch, process group,
output capture), as the agent calls it.

    .venv/bin/python tools/bench/sandbox_cost.py [--calls 100] [--rounds 3]
        [--out tools/bench/results/sandbox_cost.json]

Calls alternate between the two modes in rounds, so a change in machine load skews both
alike. The context is a daemon's: one root, the usual hidden paths (state folder, config,
credentials, runtime sockets). It measures, it does not judge.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dispatch_matrix.tools import ToolContext, ToolRegistry, check_sandbox  # noqa: E402
from dispatch_matrix.tools.sandbox import Sandbox  # noqa: E402
from dispatch_matrix.tools.sandbox_host import Confinement, default_hidden  # noqa: E402
from dispatch_matrix.tools.shell import BashTool  # noqa: E402


async def timed_calls(tools: ToolRegistry, ctx: ToolContext, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        result = await tools.run("bash", {"command": "true"}, ctx)
        times.append((time.perf_counter() - started) * 1000)
        assert not result.is_error, result.content
    return times


async def run(args: argparse.Namespace, folder: Path) -> dict[str, object]:
    work, state = folder / "work", folder / "state"
    work.mkdir()
    state.mkdir()
    (state / "config.toml").write_text("[matrix]\n")
    hidden = (state, state / "config.toml", *default_hidden(Path.home(), os.getuid()))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(Path.home())}
    ctx = ToolContext(
        workdir=work, allowed_roots=(work,), bash_timeout_s=120, denied_paths=hidden, env=env
    )
    sandboxed = check_sandbox("auto")
    modes = {
        "without": ToolRegistry([BashTool(Confinement(Sandbox.NONE))]),
        "with": ToolRegistry([BashTool(sandboxed)]),
    }
    for tools in modes.values():  # warm-up: imports, page cache
        await timed_calls(tools, ctx, 5)
    samples: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.rounds):
        for name, tools in modes.items():
            samples[name] += await timed_calls(tools, ctx, args.calls)
    figures: dict[str, object] = {"sandbox": sandboxed.describe(), "calls_per_mode": 0}
    for name, times in samples.items():
        figures[f"{name}_sandbox_ms"] = {
            "median": round(statistics.median(times), 2),
            "p90": round(statistics.quantiles(times, n=10)[-1], 2),
            "min": round(min(times), 2),
        }
        figures["calls_per_mode"] = len(times)
    with_ms = figures["with_sandbox_ms"]
    without_ms = figures["without_sandbox_ms"]
    assert isinstance(with_ms, dict) and isinstance(without_ms, dict)
    figures["median_cost_ms"] = round(with_ms["median"] - without_ms["median"], 2)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100, help="calls per mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "tools/bench/results/sandbox_cost.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dm-bench-sandbox-") as tmp:
        figures = asyncio.run(run(args, Path(tmp)))
    bwrap = subprocess.run(["bwrap", "--version"], capture_output=True, text=True, check=False)
    result = {
        "benchmark": "sandbox_cost",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "bwrap": bwrap.stdout.strip(),
            "loadavg": os.getloadavg(),
        },
        **figures,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
