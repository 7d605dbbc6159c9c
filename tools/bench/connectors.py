"""MCP benchmark: how long a stdio server takes to be ready, what one tool call costs
through the connectors hub, and how long a killed server takes to come back.

    .venv/bin/python tools/bench/connectors.py [--calls 200] [--kills 3]

Uses the test notes server (tests/servers/notes_server.py, the `mcp` package's MCPServer)
and the hub the daemon uses, with the daemon's own restart backoff (1 s first). Writes
tools/bench/results/connectors.json. A measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

from dispatch_matrix.connectors.hub import Connectors  # noqa: E402
from dispatch_matrix.connectors.settings import McpSection  # noqa: E402
from dispatch_matrix.toolbox.base import ToolContext  # noqa: E402

SERVER = ROOT / "tests" / "servers" / "notes_server.py"
CTX = ToolContext(workdir=Path("/"), allowed_roots=(), bash_timeout_s=1)


def ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def measure(calls: int, kills: int, folder: Path) -> dict[str, Any]:
    env = {"NOTES_FILE": str(folder / "notes.txt"), "NOTES_PID_FILE": str(folder / "pids")}
    section = McpSection(
        servers={"notes": {"command": sys.executable, "args": [str(SERVER)], "env": env}}
    )
    hub = Connectors.from_config(section)
    began = time.monotonic()
    runner = asyncio.create_task(hub.run())
    try:
        await hub.settled()
        ready_s = time.monotonic() - began
        server = hub.server("notes")
        assert server is not None
        await hub.run_tool("mcp__notes__add_note", {"text": "bench"}, CTX)
        call_times = []
        for _ in range(calls):
            start = time.monotonic()
            result = await hub.run_tool("mcp__notes__list_notes", {}, CTX)
            call_times.append(time.monotonic() - start)
            assert not result.is_error
        restarts = []
        for n in range(kills):
            pid = int((folder / "pids").read_text().split()[-1])
            start = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            await server.wait_until(lambda s, n=n: s.starts >= n + 2)
            restarts.append(time.monotonic() - start)
        generation = hub.generation
        hub.definitions()
        return {
            "first_ready_s": round(ready_s, 3),
            "calls": calls,
            "call_latency": ms(call_times),
            "kills": kills,
            "kill_to_ready_s": [round(r, 3) for r in restarts],
            "tool_list_generations": max(generation, hub.generation),
        }
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "tools/bench/results/connectors.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        figures = asyncio.run(measure(args.calls, args.kills, Path(folder)))
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "mcp": version("mcp"),
        },
        **figures,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
