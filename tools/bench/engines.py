#!/usr/bin/env python3
"""The two engines side by side: `[agent] engine = "api"` (our loop) and `"claude-code"`
(Claude Code's bundled CLI through its Agent SDK), on the same scripted work against the
strict stand-in, in-process (no homeserver).

- errand: one task of one shell step and an answer, run `--repeat` times in one
  conversation; wall time per task (the CLI starts once per task), requests and input
  tokens per task from the stand-in's request log;
- day: `day_cost.py`'s seeded day (12 tasks over 10 hours, 3-8 shell steps each) on the
  stand-in's virtual clock, priced at list prices (for Claude Code on a plan login that is
  credit drawn, not money);
- start-up: the CLI's start until its first message, and the resident memory of the CLI
  and of this process while the CLI runs.

Nothing is padded: each engine sends its own system prompt and tools.

    .venv/bin/python tools/bench/engines.py [--model claude-sonnet-5-5] [--repeat 5]
        [--out tools/bench/results/engines.json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for extra in (ROOT / "tools", ROOT / "tools" / "bench"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import anthropic  # noqa: E402
import claude_agent_sdk  # noqa: E402
from caching import QuietIO  # noqa: E402
from day_cost import the_day, totals  # noqa: E402
from fake_messages_api import FakeMessagesAPI  # noqa: E402

from dispatch_matrix import __version__  # noqa: E402
from dispatch_matrix.agent import Agent, Engine  # noqa: E402
from dispatch_matrix.agent.claude_code import ClaudeCodeAgent  # noqa: E402
from dispatch_matrix.agent.prompt import Machine, system_prompt  # noqa: E402
from dispatch_matrix.app.config import AgentSection  # noqa: E402
from dispatch_matrix.permissions.policy import Policy  # noqa: E402
from dispatch_matrix.store import Database  # noqa: E402
from dispatch_matrix.toolbox.base import ToolContext  # noqa: E402
from dispatch_matrix.toolbox.registry import ToolRegistry, default_tools  # noqa: E402

ENGINES = ("api", "claude-code")
# The shell tool as each engine's model calls it.
SHELL = {"api": "bash", "claude-code": "mcp__dispatch__bash"}


def make(engine: str, model: str, fake: FakeMessagesAPI, folder: Path) -> tuple[Engine, Database]:
    db = Database.open(folder / "dispatch.db")
    workdir = folder / "work"
    workdir.mkdir(exist_ok=True)
    policy = Policy(allow=["Bash(seq:*)"], ask=[], deny=[], home=Path.home(), workdir=workdir)
    tools = ToolRegistry(default_tools())
    system = system_prompt(["@owner:example.org"], Machine.here(workdir, [workdir]))
    settings = AgentSection(model=model, max_tokens=8192)
    context = ToolContext(workdir=workdir, allowed_roots=(workdir,), bash_timeout_s=120)
    if engine == "api":
        client = anthropic.AsyncAnthropic(base_url=fake.url, api_key="fake", max_retries=0)
        agent: Engine = Agent(
            db,
            client,
            settings=settings,
            system=system,
            tools=tools,
            policy=policy,
            context=context,
        )
        return agent, db
    env = {
        "ANTHROPIC_BASE_URL": fake.url,
        "ANTHROPIC_API_KEY": "fake",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CONFIG_DIR": str(folder / "claude"),
    }
    agent = ClaudeCodeAgent(
        db, settings=settings, system=system, tools=tools, policy=policy, context=context, env=env
    )
    return agent, db


def model_requests(fake: FakeMessagesAPI) -> list[Any]:
    return [r for r in fake.requests if r.path == "/v1/messages"]


def step(fake: FakeMessagesAPI, engine: str, wait: float, lines: int | None, k: int) -> Any:
    def turn(body: dict[str, Any]) -> dict[str, Any]:
        fake.advance_clock(wait)
        if lines is None:
            return {"text": "Here is what I found, with the figures you asked for. " * 12}
        call = {"type": "tool_use", "name": SHELL[engine], "input": {"command": f"seq 1 {lines}"}}
        return {"content": [{"type": "text", "text": f"Step {k}: listing {lines} lines."}, call]}

    return turn


async def errand(engine: str, model: str, repeat: int, folder: Path) -> dict[str, Any]:
    """One shell step and an answer, `repeat` times; per-task time and tokens."""
    with FakeMessagesAPI() as fake:
        agent, db = make(engine, model, fake, folder)
        seconds, requests, refused, tokens = [], [], [], []
        for n in range(1, repeat + 1):
            before = len(model_requests(fake))
            fake.script(step(fake, engine, 0, 200, 1), step(fake, engine, 0, None, 2))
            task = db.add_task(f"$errand{n}", "!room:x", "@owner:example.org", f"errand {n}", n)
            assert task is not None
            began = time.perf_counter()
            await agent.answer(task, QuietIO())
            seconds.append(time.perf_counter() - began)
            these = model_requests(fake)[before:]
            ok = [r for r in these if r.status == 200]
            requests.append(len(ok))
            refused.append(len(these) - len(ok))
            tokens.append(
                sum(
                    r.usage["input_tokens"]
                    + r.usage["cache_creation_input_tokens"]
                    + r.usage["cache_read_input_tokens"]
                    for r in ok
                )
            )
        first = [r for r in model_requests(fake) if r.status == 200][0]
        db.close()
    return {
        "seconds_per_task": [round(s, 3) for s in seconds],
        "median_seconds": round(statistics.median(seconds), 3),
        "requests_per_task": requests,
        "refused_requests_per_task": refused,
        "input_tokens_per_task": tokens,
        "first_request_bytes": first.size_bytes,
        "first_request_tools": len(first.body.get("tools", [])),
    }


async def day(engine: str, model: str, seed: int, folder: Path) -> dict[str, Any]:
    """day_cost.py's day, unpadded, on this engine."""
    plan = the_day(seed)
    with FakeMessagesAPI() as fake:
        agent, db = make(engine, model, fake, folder)
        clock = 0.0
        began = time.perf_counter()
        for n, task in enumerate(plan, start=1):
            fake.advance_clock(task.start_min * 60 - clock)
            clock = task.start_min * 60
            waits = [0.0, *(s for _, s in task.steps)]
            fake.script(
                *[
                    step(fake, engine, waits[k], lines, k)
                    for k, (lines, _) in enumerate(task.steps)
                ],
                step(fake, engine, waits[-1], None, len(task.steps)),
            )
            row = db.add_task(f"$day{n}", "!room:x", "@owner:example.org", f"task {n}", n)
            assert row is not None
            await agent.answer(row, QuietIO())
            clock += sum(s for _, s in task.steps)
        wall = time.perf_counter() - began
        usage = [r.usage for r in model_requests(fake) if r.status == 200]
        db.close()
    return {**totals(usage, model), "wall_seconds": round(wall, 1)}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cli_pids() -> list[int]:
    """Our CLI children (the bundled binary's path is in their command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            continue
        if b"_bundled/claude" in cmdline and int(parent) == os.getpid():
            found.append(int(entry.name))
    return found


async def start_up(folder: Path) -> dict[str, Any]:
    """The CLI's start (connect, until the first message) and memory while it runs."""
    with FakeMessagesAPI() as fake:
        fake.reply("ok")
        options = claude_agent_sdk.ClaudeAgentOptions(
            tools=[],
            setting_sources=[],
            cwd=str(folder),
            env={
                "ANTHROPIC_BASE_URL": fake.url,
                "ANTHROPIC_API_KEY": "fake",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "CLAUDE_CONFIG_DIR": str(folder / "claude"),
            },
        )
        own_before = rss_kb(os.getpid())
        began = time.perf_counter()
        async with claude_agent_sdk.ClaudeSDKClient(options) as client:
            connected = time.perf_counter() - began
            await client.query("hello")
            async for _message in client.receive_response():
                pass
            answered = time.perf_counter() - began
            cli = sum(rss_kb(pid) for pid in cli_pids())
            own = rss_kb(os.getpid())
    return {
        "connect_seconds": round(connected, 3),
        "first_answer_seconds": round(answered, 3),
        "cli_rss_mb": round(cli / 1024, 1),
        "daemon_side_rss_mb": round(own / 1024, 1),
        "daemon_side_rss_before_mb": round(own_before / 1024, 1),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "what": "both engines in-process against the strict stand-in, no homeserver",
        "model": args.model,
        "dispatch_matrix": __version__,
        "claude_agent_sdk": claude_agent_sdk.__version__,
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "errand": {},
        "day": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        result["start_up"] = await start_up(Path(tmp))
        for engine in ENGINES:
            folder = Path(tmp, engine)
            (folder / "errand").mkdir(parents=True)
            (folder / "day").mkdir()
            result["errand"][engine] = await errand(
                engine, args.model, args.repeat, folder / "errand"
            )
            if not args.no_day:
                result["day"][engine] = await day(engine, args.model, args.seed, folder / "day")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="claude-sonnet-5-5")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--no-day", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results/engines.json")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", DeprecationWarning)
    result = asyncio.run(main_async(args))
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
