#!/usr/bin/env python3
"""Caching benchmark: tokens and cost of a scripted session, with and without prompt caching.

The agent engine runs in-process (no Matrix: the room plays no part in what is sent to the
model) against the fake Messages API, which simulates prompt caching and reports usage as the
real API does (tokens estimated as bytes/4; caching from 1024 tokens on, as for Sonnet). Each
of the session's turns is one task: the model calls `bash` (`echo`), then answers.

"With caching" prices the usage as reported: plain input, cache writes (1.25× input) and cache
reads (0.1× input). "Without caching" prices every input token as plain input — what the same
requests would cost with no breakpoints. A second run repeats the session with a small
context window, so the conversation is compacted on the way, to show the cache after a
compaction: the prefix changes once, then is read back again.

    .venv/bin/python tools/bench/caching.py [--turns 10] [--model claude-sonnet-4-5]
        [--out tools/bench/results/caching.json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "tools") not in sys.path:
    sys.path.insert(0, str(ROOT / "tools"))

import anthropic  # noqa: E402
from fake_messages_api import FakeMessagesAPI  # noqa: E402

from dispatch_matrix import __version__  # noqa: E402
from dispatch_matrix.agent import Agent, Approval, Memory  # noqa: E402
from dispatch_matrix.agent import usage as pricing  # noqa: E402
from dispatch_matrix.agent.prompt import SUMMARY_SYSTEM, Machine, system_prompt  # noqa: E402
from dispatch_matrix.app.config import AgentSection  # noqa: E402
from dispatch_matrix.permissions.policy import Decision, Policy  # noqa: E402
from dispatch_matrix.store import Database  # noqa: E402
from dispatch_matrix.toolbox.base import ToolContext  # noqa: E402
from dispatch_matrix.toolbox.registry import ToolRegistry, default_tools  # noqa: E402

SUMMARY_MARK = SUMMARY_SYSTEM.split("\n", 1)[0][:40]
FAMILIES = ("claude-sonnet-4-5", "claude-opus-4-5", "claude-haiku-4-5")


class QuietIO:
    """The room's side of a task, with nobody in it."""

    async def progress(self, text: str) -> None:
        pass

    async def ask(self, decision: Decision, change: str | None = None) -> Approval:
        return Approval.NO

    async def learned(self, rule: str | None) -> None:
        pass

    async def send_file(self, path: Path, caption: str | None = None) -> str:
        return "$none"

    def process_started(self, pgid: int) -> None:
        pass

    def cancelled(self) -> bool:
        return False


def scripted_turn(body: dict[str, Any]) -> dict[str, Any]:
    """The model: a summary when asked for one, else a tool call, then an answer."""
    if str(body["system"][0]["text"]).startswith(SUMMARY_MARK):
        return {"text": "- The owner asked for a series of status checks; each was run."}
    last = body["messages"][-1]["content"]
    if any(block.get("type") == "tool_result" for block in last):
        return {"text": "Checked: the service is up and the disk has room. " * 4}
    return {
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "name": "bash", "input": {"command": "echo status ok"}},
        ]
    }


async def session(turns: int, settings: AgentSection, folder: Path) -> dict[str, Any]:
    """Run `turns` tasks through the engine; the usage of every request."""
    with FakeMessagesAPI(cache_min_tokens=1024) as fake:
        fake.script(*[scripted_turn] * (turns * 3))
        db = Database.open(folder / "dispatch.db")
        workdir = folder / "work"
        workdir.mkdir()
        policy = Policy(allow=["Bash(echo:*)"], ask=[], deny=[], home=Path.home(), workdir=workdir)
        agent = Agent(
            db,
            anthropic.AsyncAnthropic(base_url=fake.url, api_key="fake", max_retries=0),
            settings=settings,
            system=system_prompt(["@owner:example.org"], Machine.here(workdir, [workdir])),
            tools=ToolRegistry(default_tools()),
            policy=policy,
            context=ToolContext(workdir=workdir, allowed_roots=(workdir,), bash_timeout_s=120),
            memory=Memory(folder / "memory.md"),
        )
        for n in range(1, turns + 1):
            task = db.add_task(f"$bench{n}", "!room:x", "@owner:example.org", f"check {n}", n)
            assert task is not None
            await agent.answer(task, QuietIO())
        requests = []
        for rec in fake.requests:
            if rec.path != "/v1/messages" or rec.status != 200:
                continue
            requests.append(
                {
                    "summary": str(rec.body["system"][0]["text"]).startswith(SUMMARY_MARK),
                    "input_tokens": rec.usage["input_tokens"],
                    "cache_creation_input_tokens": rec.usage["cache_creation_input_tokens"],
                    "cache_read_input_tokens": rec.usage["cache_read_input_tokens"],
                    "output_tokens": rec.usage["output_tokens"],
                    "breakpoints": rec.cache["breakpoints"],
                }
            )
        db.close()
    return {"requests": requests, **totals(requests)}


def totals(requests: list[dict[str, Any]]) -> dict[str, Any]:
    """Summed tokens, the cache-read share, and cost with and without caching per model."""
    inp = sum(r["input_tokens"] for r in requests)
    write = sum(r["cache_creation_input_tokens"] for r in requests)
    read = sum(r["cache_read_input_tokens"] for r in requests)
    out = sum(r["output_tokens"] for r in requests)
    all_input = inp + write + read
    costs = {}
    for family in FAMILIES:
        cached = pricing.cost(family, inp, out, write, read)
        uncached = pricing.cost(family, all_input, out)
        assert cached is not None and uncached is not None
        costs[family] = {
            "with_caching_usd": round(cached, 6),
            "without_caching_usd": round(uncached, 6),
            "saving": round(1 - cached / uncached, 4) if uncached else 0.0,
        }
    return {
        "request_count": len(requests),
        "input_tokens": inp,
        "cache_write_tokens": write,
        "cache_read_tokens": read,
        "output_tokens": out,
        "all_input_tokens": all_input,
        "cache_read_share": round(read / all_input, 4) if all_input else 0.0,
        "cost": costs,
    }


def show(name: str, result: dict[str, Any], model: str) -> None:
    cost = result["cost"][model]
    print(
        f"{name}: {result['request_count']} requests, {result['all_input_tokens']} input tokens "
        f"({result['cache_read_share']:.1%} cache reads, {result['cache_write_tokens']} "
        f"written), {result['output_tokens']} output; {model}: "
        f"${cost['with_caching_usd']:.4f} with caching, ${cost['without_caching_usd']:.4f} "
        f"without ({cost['saving']:.0%} saved)"
    )


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-caching-") as tmp:
        plain_dir, compact_dir = Path(tmp, "plain"), Path(tmp, "compacting")
        plain_dir.mkdir()
        compact_dir.mkdir()
        # The 5-minute lifetime, as measured before [agent] cache_ttl existed (the writes are
        # priced at 1.25x here); tools/bench/day_cost.py compares the lifetimes.
        plain = await session(args.turns, AgentSection(model=args.model, cache_ttl="5m"), plain_dir)
        small = AgentSection(
            model=args.model,
            context_window=args.small_window,
            keep_recent_messages=4,
            cache_ttl="5m",
        )
        compacting = await session(args.turns, small, compact_dir)
    return {
        "what": f"{args.turns} tasks of one tool call each, in-process engine, fake API",
        "model": args.model,
        "dispatch_matrix": __version__,
        "anthropic_sdk": anthropic.__version__,
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cache_min_tokens": 1024,
        "session": plain,
        "session_with_compaction": {"context_window": args.small_window, **compacting},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--model", default="claude-sonnet-4-5", choices=FAMILIES)
    parser.add_argument("--small-window", type=int, default=3500)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results/caching.json")
    args = parser.parse_args(argv)
    result = asyncio.run(main_async(args))
    show(f"{args.turns}-turn session", result["session"], args.model)
    show("same with compaction", result["session_with_compaction"], args.model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
