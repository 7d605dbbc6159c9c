"""How long Grep and Glob can stall the event loop, and how fast an ordinary grep is.

A heartbeat task sleeps 10 ms in a loop; the largest gap between two beats while a tool
call runs is the stall (sync, answers and `!cancel` stop for that long). Cases: a
catastrophically backtracking grep (`^(a+)+$` on a line of 26 `a` and a `b`), a glob
`*a*a*a*a*a*a*a*a*b` over names of 60 `a`, and an ordinary grep over this repository.
Prints the figures and writes `tools/bench/results/search_stall.json`; asserts nothing.

    .venv/bin/python tools/bench/search_stall.py [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from dispatch_matrix.toolbox.base import ToolContext
from dispatch_matrix.toolbox.registry import ToolRegistry, default_tools

REPO = Path(__file__).resolve().parents[2]


async def _timed(
    tools: ToolRegistry, ctx: ToolContext, name: str, tool_input: dict[str, Any]
) -> dict[str, Any]:
    gaps: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.010)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    result = await tools.run(name, tool_input, ctx)
    elapsed = time.perf_counter() - started
    done.set()
    await beat
    body = "".join(block.get("text", "") for block in result.content)
    return {
        "tool": name,
        "input": tool_input,
        "seconds": round(elapsed, 3),
        "max_gap_ms": round(max(gaps) * 1000, 1),
        "is_error": result.is_error,
        "result_head": body[:120],
    }


async def main(out: Path) -> None:
    """Run the cases and write the figures."""
    tools = ToolRegistry(default_tools())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "evil.txt").write_text("a" * 26 + "b\n")
        for i in range(5):
            (root / ("a" * 60 + str(i))).write_text("")
        ctx = ToolContext(workdir=root, allowed_roots=(root,), bash_timeout_s=60)
        rows.append(await _timed(tools, ctx, "grep", {"pattern": "^(a+)+$"}))
        rows.append(await _timed(tools, ctx, "glob", {"pattern": "*a*a*a*a*a*a*a*a*b"}))
    ctx = ToolContext(workdir=REPO, allowed_roots=(REPO,), bash_timeout_s=60)
    for path in ("dispatch_matrix", "tests", "."):
        best = None
        for _ in range(3):
            row = await _timed(tools, ctx, "grep", {"pattern": r"def \w+_redact", "path": path})
            if best is None or row["seconds"] < best["seconds"]:
                best = row
        rows.append(best)
    for row in rows:
        print(
            f"{row['tool']:5} {json.dumps(row['input']):60} {row['seconds']:7.3f} s"
            f"  max loop gap {row['max_gap_ms']:8.1f} ms"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"python": platform.python_version(), "cpus": os.cpu_count(), "rows": rows},
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out", type=Path, default=REPO / "tools" / "bench" / "results" / "search_stall.json"
    )
    asyncio.run(main(parser.parse_args().out))
