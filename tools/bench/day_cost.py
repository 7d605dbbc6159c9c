#!/usr/bin/env python3
"""The cost of a real day: what a day of tasks costs under each prompt-cache lifetime.

A person does not send tasks seconds apart: twelve tasks over ten hours, each taking 3 to 8
tool steps, against a system prompt and tools of about 20 000 tokens. The engine runs
in-process against the strict stand-in, whose cache keeps the service's rules (the model's
minimum cacheable prefix, the 20-block lookback, entries living 5 minutes or 1 hour from
their last use). Time is the stand-in's virtual clock: the gaps between tasks and the
seconds each tool step takes are added to it, so the day takes seconds, not hours.

Strategies (the engine's `[agent] cache_ttl`):

- `5m`:  every breakpoint with the default 5-minute lifetime (writes 1.25x input);
- `1h`:  every breakpoint with the 1-hour lifetime (writes 2x input);
- `mix`: 1 hour on the stable prefix (tools, system prompt, memory, summary), 5 minutes on
  the conversation's tail.

Priced at the model's list price (reads 0.1x input). The same day (seeded schedule, same
steps, same tool output) runs under each strategy.

    .venv/bin/python tools/bench/day_cost.py [--model claude-sonnet-5-5] [--seed 17]
        [--out tools/bench/results/day_cost.json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import random
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "tools") not in sys.path:
    sys.path.insert(0, str(ROOT / "tools"))

import anthropic  # noqa: E402
from caching import QuietIO  # noqa: E402
from fake_messages_api import FakeMessagesAPI  # noqa: E402
from fakeapi.cache import flatten_prompt  # noqa: E402

from dispatch_matrix import __version__  # noqa: E402
from dispatch_matrix.agent import Agent, Memory  # noqa: E402
from dispatch_matrix.agent import usage as pricing  # noqa: E402
from dispatch_matrix.agent.prompt import Machine, system_prompt  # noqa: E402
from dispatch_matrix.app.config import AgentSection  # noqa: E402
from dispatch_matrix.permissions.policy import Policy  # noqa: E402
from dispatch_matrix.store import Database  # noqa: E402
from dispatch_matrix.toolbox.base import ToolContext  # noqa: E402
from dispatch_matrix.toolbox.registry import ToolRegistry, default_tools  # noqa: E402

STRATEGIES = ("5m", "1h", "mix")
PREFIX_TOKENS = 20_000


@dataclass(frozen=True)
class Task:
    """One task of the day: when it starts, and its steps (tool output size, seconds)."""

    start_min: float
    steps: tuple[tuple[int, float], ...]


def the_day(seed: int, tasks: int = 12, hours: float = 10.0) -> list[Task]:
    """A seeded day: task starts spread over `hours` (the first at 0), 3–8 steps each; a
    step prints `seq 1 N` (N in 150..1500: about 0.1–1.5k tokens) and takes 5–60 s."""
    rng = random.Random(seed)
    starts = sorted([0.0] + [rng.uniform(0, hours * 60) for _ in range(tasks - 1)])
    day = []
    for start in starts:
        steps = tuple(
            (rng.randint(150, 1500), rng.uniform(5, 60)) for _ in range(rng.randint(3, 8))
        )
        day.append(Task(round(start, 1), steps))
    return day


def padded_system(base: str, tools: list[dict[str, Any]], model: str) -> str:
    """The base system prompt padded so that tools + system come to about PREFIX_TOKENS."""

    def size(system: str) -> int:
        body = {"model": model, "tools": tools, "system": [{"type": "text", "text": system}]}
        return sum(part.tokens for part in flatten_prompt(body))

    filler = "Reference notes for the machine and the owner's projects, kept for context. "
    padding = PREFIX_TOKENS - size(base)
    words = filler * max(0, padding * 4 // len(filler))
    return f"{base}\n\n{words}"


def scripted(
    fake: FakeMessagesAPI, wait: float, lines: int | None, k: int, answer: str = ""
) -> Any:
    """The model's turn k: after `wait` seconds of the previous tool, a `seq` call (or, with
    `lines` None, the answer)."""

    def turn(body: dict[str, Any]) -> dict[str, Any]:
        fake.advance_clock(wait)
        if lines is None:
            return {"text": answer}
        call = {"type": "tool_use", "name": "bash", "input": {"command": f"seq 1 {lines}"}}
        return {"content": [{"type": "text", "text": f"Step {k}: listing {lines} lines."}, call]}

    return turn


async def run_day(day: list[Task], model: str, strategy: str, folder: Path) -> dict[str, Any]:
    """The whole day under one strategy; the usage of every request."""
    with FakeMessagesAPI() as fake:
        db = Database.open(folder / "dispatch.db")
        workdir = folder / "work"
        workdir.mkdir()
        policy = Policy(allow=["Bash(seq:*)"], ask=[], deny=[], home=Path.home(), workdir=workdir)
        tools = ToolRegistry(default_tools())
        base = system_prompt(["@owner:example.org"], Machine.here(workdir, [workdir]))
        agent = Agent(
            db,
            anthropic.AsyncAnthropic(base_url=fake.url, api_key="fake", max_retries=0),
            settings=AgentSection(model=model, max_tokens=8192, cache_ttl=strategy),
            system=padded_system(base, tools.definitions(), model),
            tools=tools,
            policy=policy,
            context=ToolContext(workdir=workdir, allowed_roots=(workdir,), bash_timeout_s=120),
            memory=Memory(folder / "memory.md"),
        )
        clock = 0.0
        for n, task in enumerate(day, start=1):
            fake.advance_clock(task.start_min * 60 - clock)
            clock = task.start_min * 60

            # Turn k comes after step k-1's tool ran: the clock moves by that step's time.
            waits = [0.0, *(seconds for _, seconds in task.steps)]
            answer = "Here is what I found, step by step, with the figures you asked for. " * 12
            fake.script(
                *[scripted(fake, waits[k], lines, k) for k, (lines, _) in enumerate(task.steps)],
                scripted(fake, waits[-1], None, len(task.steps), answer),
            )
            row = db.add_task(f"$day{n}", "!room:x", "@owner:example.org", f"task {n}", n)
            assert row is not None
            await agent.answer(row, QuietIO())
            clock += sum(seconds for _, seconds in task.steps)
        usage = [r.usage for r in fake.requests if r.path == "/v1/messages" and r.status == 200]
        db.close()
    return totals(usage, model)


def totals(usage: list[dict[str, Any]], model: str) -> dict[str, Any]:
    """Summed tokens and the day's cost, and what the same tokens cost with no cache."""
    inp = sum(u["input_tokens"] for u in usage)
    write = sum(u["cache_creation_input_tokens"] for u in usage)
    write_1h = sum(u["cache_creation"]["ephemeral_1h_input_tokens"] for u in usage)
    read = sum(u["cache_read_input_tokens"] for u in usage)
    out = sum(u["output_tokens"] for u in usage)
    every = inp + write + read
    cost = pricing.cost(model, inp, out, write, read, write_1h)
    uncached = pricing.cost(model, every, out)
    assert cost is not None and uncached is not None
    return {
        "requests": len(usage),
        "input_tokens": inp,
        "cache_write_5m_tokens": write - write_1h,
        "cache_write_1h_tokens": write_1h,
        "cache_read_tokens": read,
        "output_tokens": out,
        "all_input_tokens": every,
        "cache_read_share": round(read / every, 4) if every else 0.0,
        "cost_usd": round(cost, 4),
        "without_cache_usd": round(uncached, 4),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    day = the_day(args.seed)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-day-") as tmp:
        for strategy in STRATEGIES:
            folder = Path(tmp, strategy)
            folder.mkdir()
            results[strategy] = await run_day(day, args.model, strategy, folder)
    cheapest = min(results, key=lambda s: results[s]["cost_usd"])
    gaps = [round(b.start_min - a.start_min, 1) for a, b in zip(day, day[1:], strict=False)]
    return {
        "what": (
            f"{len(day)} tasks over 10 hours, 3-8 tool steps each, ~{PREFIX_TOKENS} tokens of "
            "system prompt and tools; in-process engine, strict stand-in, virtual clock"
        ),
        "model": args.model,
        "seed": args.seed,
        "dispatch_matrix": __version__,
        "anthropic_sdk": anthropic.__version__,
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "schedule": {
            "task_start_minutes": [t.start_min for t in day],
            "gaps_minutes": gaps,
            "gaps_over_5_min": sum(g > 5 for g in gaps),
            "gaps_over_60_min": sum(g > 60 for g in gaps),
            "steps": [len(t.steps) for t in day],
        },
        "strategies": results,
        "cheapest": cheapest,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="claude-sonnet-5-5")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results/day_cost.json")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", DeprecationWarning)
    result = asyncio.run(main_async(args))
    print(result["what"])
    print(f"model {args.model}; gaps (min): {result['schedule']['gaps_minutes']}")
    heads = ("ttl", "requests", "input", "write 5m", "write 1h", "read", "out", "read %", "$")
    print(" ".join(f"{h:>9}" for h in heads))
    for name, row in result["strategies"].items():
        cells = [name, row["requests"], row["input_tokens"], row["cache_write_5m_tokens"]]
        cells += [row["cache_write_1h_tokens"], row["cache_read_tokens"], row["output_tokens"]]
        share, usd = f"{row['cache_read_share']:.1%}", f"{row['cost_usd']:.4f}"
        print(" ".join(f"{c:>9}" for c in [*cells, share, usd]))
    any_row = next(iter(result["strategies"].values()))
    print(f"without a cache: ${any_row['without_cache_usd']:.4f}; cheapest: {result['cheapest']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
