#!/usr/bin/env python3
"""The figures in BENCHMARKS.md: dispatch-matrix against a bare matrix-nio echo bot, both
measured in this one run on one Synapse, every latency a ratio against the echo bot.

    .venv/bin/python tools/bench/report.py            # ~30 min; writes BENCHMARKS.md
    .venv/bin/python tools/bench/report.py --quick    # a few minutes, small numbers: a smoke run
    .venv/bin/python tools/bench/report.py --rewrite  # BENCHMARKS.md again from the results

Brings up its own Synapse (stock rc_message and rc_presence; the "relaxed" bots are exempted
through the admin API, as an operator does for a bot), the stand-in Messages API (zero-delay
echo), both bots as real processes and one matrix-js-sdk owner client (Rust crypto) per bot.
Stops everything it started on the way out. Measures, in order:

1. start-to-ready with an existing store: spawn → "connected", restarts of a bot that has a DM
   and a conversation; and the floor, `python -c "import nio, anthropic"`;
2. relaxed homeserver: reply latency p50/p95 over N messages one at a time, and the ack
   (message → the first sign of life the phone shows: our read receipt; the echo bot's only
   sign is its answer); tokens, cache share and cost per task from the stand-in's log;
3. stock limits, paced: N messages, each `--pace` s after the previous answer, to limited
   bots, one slot each in turn; meanwhile the relaxed bots and a floor process (imports only)
   sit idle for `--idle-seconds`: CPU (utime+stime of the process tree) and RSS;
4. catch-up: `--backlog` messages sent while each bot is stopped, spawn → last answer;
5. memory over turns: RSS after each count in `--turns`, the owner sending in batches.

A measurement, not a test: it asserts nothing about speed; it checks only that every message
was answered once (otherwise a figure would be meaningless) and says so if not.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for extra in (HERE, ROOT / "tools", ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from fake_messages_api import FakeMessagesAPI  # noqa: E402
from foundation import (  # noqa: E402
    REAPER,
    Account,
    Accounts,
    CpuMeter,
    NioBot,
    machine,
    memory,
    revision,
    say,
    start_js,
    stop_bot,
    timed_start,
)
from harness.bot import BotConfig, BotProcess  # noqa: E402
from harness.jsclient import JsClient, check_installed  # noqa: E402
from idle import tree_cpu_seconds  # noqa: E402
from product_env import bot_python, use_product_python  # noqa: E402

from dispatch_matrix.agent.usage import cost  # noqa: E402
from dispatch_matrix.app.homeserver import LocalSynapse, free_port  # noqa: E402

RESULTS = HERE / "results" / "report.json"
MARKDOWN = ROOT / "BENCHMARKS.md"
FLOOR_PROBE = (
    "import nio, anthropic, sys, time; print('ready', flush=True); "
    "sys.stdin.read()"  # sits until its stdin closes
)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): a value that was observed."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def stats(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 1),
        "p95": round(pct(values, 95), 1),
        "max": round(max(values), 1),
    }


def ratio(ours: float | None, floor: float | None) -> float | None:
    return round(ours / floor, 2) if ours is not None and floor else None


async def floor_process() -> asyncio.subprocess.Process:
    """A process that has imported nio and anthropic, and waits (the libraries' floor)."""
    proc = await asyncio.create_subprocess_exec(
        bot_python(),
        "-c",
        FLOOR_PROBE,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    await proc.stdout.readline()
    return proc


async def end_floor(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    await proc.wait()


# -- the two bots, behind one face -----------------------------------------------------------


@dataclass
class Subject:
    """One bot under measurement (ours or the echo bot), its owner client and their DM."""

    name: str
    bot_account: Account
    owner: JsClient
    room: str
    ours: BotProcess | None = None
    nio: NioBot | None = None

    @property
    def pid(self) -> int:
        if self.ours is not None:
            return self.ours.pid
        assert self.nio is not None
        return self.nio.pid

    @property
    def user(self) -> str:
        return self.bot_account.user_id


class Run:
    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args = args
        self.folder = folder
        self.synapse = LocalSynapse(folder / "synapse", port=free_port(), stock_event_limits=True)
        self.api = FakeMessagesAPI()
        self.accounts: Accounts
        self.admin = ""

    async def up(self) -> None:
        check_installed()
        await asyncio.to_thread(self.synapse.configure)
        REAPER.add("synapse", lambda: asyncio.to_thread(self.synapse.stop))
        try:
            await asyncio.to_thread(self.synapse.start)
        finally:
            hs = self.synapse.process
            if hs is not None:
                REAPER.track("synapse", hs.pid, True, lambda: hs.poll() is not None)
        self.admin = await asyncio.to_thread(self.synapse.admin_token)
        self.api.start()
        REAPER.add("fake messages api", lambda: asyncio.to_thread(self.api.stop))
        self.accounts = Accounts(self.synapse)

    def account(self, prefix: str, *, limited: bool) -> Account:
        made = self.accounts.new(prefix)
        if not limited:
            self.synapse.exempt(made.user_id, self.admin)
        return made

    def ours_config(
        self, bot: Account, owner: Account, *, limited: bool, agent: str = ""
    ) -> BotConfig:
        config = BotConfig(
            folder=self.folder / "bots" / bot.localpart,
            homeserver=self.synapse.url,
            user_id=bot.user_id,
            password=bot.password,
            owners=[owner.user_id],
            api_url=self.api.url,
            # An exempt bot is told so, as `init --local-homeserver` does; a limited one keeps
            # the stock budget it assumes by default.
            matrix_extra="" if limited else "send_rate_per_s = 0",
            agent_extra=agent,
        )
        config.write()
        return config

    def ours_process(self, config: BotConfig) -> BotProcess:
        # The shipped defaults, not the tests' (5 s long-poll, debug log).
        env = {"DISPATCH_MATRIX__SYNC_TIMEOUT_MS": "30000", "DISPATCH_LOG__LEVEL": "info"}
        return BotProcess(config, env=env)

    async def subject(
        self,
        kind: str,
        label: str,
        *,
        limited: bool,
        agent: str = "",
        nio_args: tuple[str, ...] = (),
    ) -> Subject:
        """A bot of `kind` ("ours" or "nio") started, its owner's DM with it open and warm
        (one answered message: olm sessions and room keys are set up)."""
        bot_account = self.account(f"{kind}{label}", limited=limited)
        owner_account = self.account(f"owner{label}", limited=False)
        if kind == "ours":
            config = self.ours_config(bot_account, owner_account, limited=limited, agent=agent)
            ours = self.ours_process(config)
            await timed_start(ours)
            subject_nio = None
        else:
            ours = None
            subject_nio = await self.start_nio(bot_account, *nio_args)
        owner = await start_js(self.synapse.url, owner_account, f"owner-{kind}-{label}")
        room = await owner.create_dm(bot_account.user_id)
        await owner.wait_join(room, bot_account.user_id, timeout=60)
        subject = Subject(f"{kind}-{label}", bot_account, owner, str(room), ours, subject_nio)
        await self.reply(subject, "warm-up")
        return subject

    async def start_nio(self, account: Account, *extra: str) -> NioBot:
        bot = NioBot(self.synapse.url, account, self.folder / "nio" / account.localpart, extra)
        await bot.spawn()
        proc = bot.process
        assert proc is not None
        REAPER.track(
            f"nio {account.localpart}", proc.pid, True, lambda: proc.returncode is not None
        )
        REAPER.add(f"nio {account.localpart}", bot.stop)
        return bot

    async def reply(self, s: Subject, label: str, *, ack: bool = False) -> dict[str, float]:
        """One round trip: send_text returned → the answer decrypted at the owner (and, with
        `ack`, → the bot's read receipt on the message)."""
        token = f"{label}-{secrets.token_hex(4)}"
        sent = await s.owner.send_text(s.room, f"benchmark message {token}")
        began = time.monotonic()
        answered = s.owner.wait_message(
            s.room, sender=s.user, contains=token, after_event_id=sent, timeout=120
        )
        if not ack:
            await answered
            return {"reply_ms": (time.monotonic() - began) * 1000}

        async def seen() -> float:
            await s.owner.wait_receipt(s.room, sent, s.user, timeout=120)
            return (time.monotonic() - began) * 1000

        async def answer() -> float:
            await answered
            return (time.monotonic() - began) * 1000

        ack_ms, reply_ms = await asyncio.gather(seen(), answer())
        return {"reply_ms": reply_ms, "ack_ms": ack_ms}

    # -- 1. start-to-ready ---------------------------------------------------------------------

    async def restarts(self, s: Subject) -> list[float]:
        walls = []
        for _ in range(self.args.startup_runs):
            if s.ours is not None:
                await stop_bot(s.ours)
                s.ours = self.ours_process(s.ours.config)
                walls.append((await timed_start(s.ours))["wall_s"])
            else:
                assert s.nio is not None
                await s.nio.stop()
                began = time.monotonic()
                s.nio = await self.start_nio(s.bot_account)
                await s.nio.wait_connected(120)
                walls.append(round(time.monotonic() - began, 3))
        await self.reply(s, "after-restarts")
        return walls

    async def floor_import(self) -> dict[str, float]:
        """The chosen libraries alone: `import nio, anthropic`, wall time to ready and RSS."""
        began = time.monotonic()
        proc = await floor_process()
        wall = time.monotonic() - began
        rss = memory(proc.pid)["rss_mib"]
        await end_floor(proc)
        return {"wall_s": round(wall, 3), "rss_mib": rss}

    # -- 2. relaxed: latency, ack, tokens ------------------------------------------------------

    async def conversation(self, s: Subject, n: int, *, ack: bool) -> dict[str, Any]:
        samples = [await self.reply(s, f"{s.name}-{i}", ack=ack) for i in range(n)]
        out = {"reply_ms": stats([x["reply_ms"] for x in samples])}
        if ack:
            out["ack_ms"] = stats([x["ack_ms"] for x in samples])
        return out

    def tokens(self, first_request: int, tasks: int) -> dict[str, Any]:
        """Usage and cost per task, from the stand-in's log of this phase's requests."""
        rows = [r for r in self.api.requests[first_request:] if r.usage and r.status == 200]
        total = {"input": 0, "output": 0, "cache_write": 0, "cache_read": 0}
        usd = 0.0
        for r in rows:
            u = r.usage
            write = int(u.get("cache_creation_input_tokens") or 0)
            one_hour = int((u.get("cache_creation") or {}).get("ephemeral_1h_input_tokens") or 0)
            total["input"] += int(u.get("input_tokens") or 0)
            total["output"] += int(u.get("output_tokens") or 0)
            total["cache_write"] += write
            total["cache_read"] += int(u.get("cache_read_input_tokens") or 0)
            usd += (
                cost(
                    str(r.body.get("model", "")),
                    int(u.get("input_tokens") or 0),
                    int(u.get("output_tokens") or 0),
                    write,
                    int(u.get("cache_read_input_tokens") or 0),
                    one_hour,
                )
                or 0.0
            )
        prompt = total["input"] + total["cache_write"] + total["cache_read"]
        return {
            "tasks": tasks,
            "requests": len(rows),
            "per_task": {k: round(v / tasks, 1) for k, v in total.items()},
            "cache_read_share": round(total["cache_read"] / prompt, 3) if prompt else None,
            "usd_per_task": round(usd / tasks, 5),
            "model": str(rows[-1].body.get("model")) if rows else None,
        }

    # -- 3. paced under stock limits, with the idle window beside it ---------------------------

    async def paced(self, pair: list[Subject], n: int) -> dict[str, dict[str, float]]:
        found: dict[str, list[float]] = {s.name: [] for s in pair}
        for i in range(n):
            await asyncio.sleep(self.args.pace)
            for s in pair:
                found[s.name].append((await self.reply(s, f"{s.name}-paced-{i}"))["reply_ms"])
        return {name: stats(values) for name, values in found.items()}

    async def idle(self, subjects: list[Subject], seconds: float) -> dict[str, Any]:
        floor = await floor_process()
        began = time.monotonic()
        cpu0 = {s.name: tree_cpu_seconds(s.pid) for s in subjects}
        await asyncio.sleep(seconds)
        took = time.monotonic() - began
        out: dict[str, Any] = {"seconds": round(took, 1)}
        for s in subjects:
            used = tree_cpu_seconds(s.pid) - cpu0[s.name]
            out[s.name] = {
                "cpu_s": round(used, 3),
                "cpu_percent": round(100 * used / took, 3),
                "rss_mib": memory(s.pid)["rss_mib"],
            }
        out["floor_rss_mib"] = memory(floor.pid)["rss_mib"]
        await end_floor(floor)
        return out

    # -- 4. catch-up -----------------------------------------------------------------------------

    async def catch_up(self, s: Subject, n: int) -> dict[str, Any]:
        if s.ours is not None:
            await stop_bot(s.ours)
        else:
            assert s.nio is not None
            await s.nio.stop()
        tag = secrets.token_hex(3)
        for i in range(n):
            await s.owner.send_text(s.room, f"backlog {tag} {i:04d}")
        began, began_wall = time.monotonic(), time.time()
        if s.ours is not None:
            s.ours = self.ours_process(s.ours.config)
            await timed_start(s.ours)
        else:
            # It pages back a gap newest-first; a timeline limit above the backlog lets its
            # first sync carry all of it, oldest first (its best case).
            s.nio = await self.start_nio(s.bot_account, "--timeline-limit", str(n + 50))
            await s.nio.wait_connected(600)
        connected = time.monotonic() - began
        # Every answer, not just the last message's: a bot may answer out of order.
        deadline = time.monotonic() + 3600
        while True:
            answers = [
                m
                for m in await s.owner.messages(s.room)
                if m["sender"] == s.user
                and m["type"] == "m.room.message"
                and f"backlog {tag} " in str(m["content"].get("body", ""))
            ]
            numbers = {
                int(str(m["content"]["body"]).split(f"backlog {tag} ")[1][:4]) for m in answers
            }
            if len(numbers) >= n or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        # The homeserver's clock on this machine: when the last answer was persisted.
        last = max(int(m["origin_server_ts"]) for m in answers) / 1000 - began_wall
        order = [int(str(m["content"]["body"]).split(f"backlog {tag} ")[1][:4]) for m in answers]
        return {
            "messages": n,
            "spawn_to_last_answer_s": round(last, 2),
            "connected_to_last_answer_s": round(last - connected, 2),
            "tasks_per_s": round(n / last, 2),
            "answers": len(answers),
            "distinct": len(numbers),
            "in_order": order == sorted(order),
        }

    # -- 5. memory over turns ------------------------------------------------------------------

    async def turns(self, s: Subject, marks: list[int], batch: int) -> dict[str, Any]:
        found: dict[str, Any] = {}
        sent = 0
        began = time.monotonic()
        for mark in marks:
            while sent < mark:
                count = min(batch, mark - sent)
                tag = secrets.token_hex(3)
                # A few sends outstanding: the sdk alone sends a room's messages one at a time
                # (~3/s), which would make the owner, not the bot, the pace of the phase.
                await s.owner.send_many(s.room, [f"turn {tag} {i}" for i in range(count)])
                await s.owner.count_messages(s.room, s.user, f"turn {tag} ", count, timeout=600)
                await s.owner.forget(s.room)
                sent += count
            await asyncio.sleep(2)
            found[str(mark)] = {
                "rss_mib": memory(s.pid)["rss_mib"],
                "elapsed_s": round(time.monotonic() - began, 1),
            }
            say(
                f"  {s.name}: {mark} turns, RSS {found[str(mark)]['rss_mib']} MiB, "
                f"{found[str(mark)]['elapsed_s']} s"
            )
        return found


PHASES = ("startup", "relaxed", "paced", "catch_up", "turns")


async def measure(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    run = Run(args, folder)
    facts = machine()
    facts["bots_environment"] = str(Path(bot_python()).parents[1].relative_to(ROOT))
    code = revision()
    chosen = set(args.phases.split(","))
    found: dict[str, Any] = {}
    await run.up()
    say(f"synapse up at {run.synapse.url}")
    ours = await run.subject("ours", "r", limited=False)
    nio = await run.subject("nio", "r", limited=False)

    if "startup" in chosen:
        say("\n[startup] start-to-ready with an existing store")
        found["startup"] = {
            "ours_s": await run.restarts(ours),
            "nio_s": await run.restarts(nio),
            "floor_import": [await run.floor_import() for _ in range(args.startup_runs)],
        }
        say(f"  {json.dumps(found['startup'])}")

    if "relaxed" in chosen:
        say(f"\n[relaxed] relaxed homeserver: {args.messages} messages one at a time")
        first_request = len(run.api.requests)
        relaxed = {
            "ours": await run.conversation(ours, args.messages, ack=True),
            "nio": await run.conversation(nio, args.messages, ack=False),
        }
        relaxed["tokens"] = run.tokens(first_request, args.messages)
        found["relaxed"] = relaxed
        say(f"  {json.dumps(relaxed)}")

    if "paced" in chosen:
        say(f"\n[paced] stock limits ({args.paced} × {args.pace} s); idle bots beside it")
        limited = [
            await run.subject("nio", "l", limited=True),
            await run.subject("ours", "l", limited=True),
        ]
        idle_task = asyncio.create_task(run.idle([ours, nio], args.idle_seconds))
        found["paced"] = await run.paced(limited, args.paced)
        found["idle"] = await idle_task
        say(f"  paced {json.dumps(found['paced'])}\n  idle {json.dumps(found['idle'])}")
        for s in limited:
            if s.ours is not None:
                await stop_bot(s.ours)
            elif s.nio is not None:
                await s.nio.stop()

    if "catch_up" in chosen:
        say(f"\n[catch_up] {args.backlog} messages sent while stopped")
        found["catch_up"] = {
            "ours": await run.catch_up(ours, args.backlog),
            "nio": await run.catch_up(nio, args.backlog),
        }
        say(f"  {json.dumps(found['catch_up'])}")

    if "turns" in chosen:
        marks = [int(x) for x in args.turns.split(",")]
        say(f"\n[turns] memory over {marks} turns")
        # A small context window: the conversation compacts many times over 10,000 turns, as
        # a long-lived one does, without every echo request carrying 140k tokens.
        fresh = [
            await run.subject("ours", "t", limited=False, agent="context_window = 20000"),
            # Batches outrun one sync's default timeline.
            await run.subject("nio", "t", limited=False, nio_args=("--timeline-limit", "1000")),
        ]
        # The echo bot is a reference only up to --echo-turns: its memory is not a ratio, and
        # sharing the homeserver with it to the end would double the phase's length.
        echo_marks = [m for m in marks if m <= (args.echo_turns or marks[0])] or marks[:1]

        async def echo_reference() -> dict[str, Any]:
            found = await run.turns(fresh[1], echo_marks, args.batch)
            assert fresh[1].nio is not None
            await fresh[1].nio.stop()
            return found

        both = await asyncio.gather(run.turns(fresh[0], marks, args.batch), echo_reference())
        bot = fresh[0].ours
        found["turns"] = {
            "marks": marks,
            "echo_marks": echo_marks,
            "ours": both[0],
            "nio": both[1],
            "compactions": len(bot.log_events("agent.compacted")) if bot else 0,
        }
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return {
        "benchmark": "report",
        "date": now,
        "command": " ".join([Path(sys.executable).as_posix(), *sys.argv]),
        "settings": vars(args) | {"out": str(args.out), "markdown": str(args.markdown)},
        "machine": {**facts, "loadavg_at_end": list(os.getloadavg())},
        "revision": code,
        "measured": dict.fromkeys(found, now),
        **found,
    }


def merged(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """An earlier full run with some phases measured again: each phase keeps its own date
    (both bots of a phase are always measured in the same run)."""
    out = dict(earlier)
    out.setdefault("measured", dict.fromkeys(PHASES, earlier["date"]))
    out["measured"]["idle"] = out["measured"].get("idle", earlier["date"])
    for phase in (*PHASES, "idle"):
        if phase in later:
            out[phase] = later[phase]
            out["measured"][phase] = later["measured"][phase]
    out["reruns"] = [
        *earlier.get("reruns", []),
        {
            "date": later["date"],
            "phases": sorted(later["measured"]),
            "command": later["command"],
            "revision": later["revision"]["head"],
            "loadavg_at_end": later["machine"]["loadavg_at_end"],
        },
    ]
    return out


# -- BENCHMARKS.md -----------------------------------------------------------------------------


def goals(r: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(goal, measured, floor, met) for each goal of the operations issue."""
    rel, paced, idle = r["relaxed"], r["paced"], r["idle"]
    s = r["startup"]
    ours_start = statistics.median(s["ours_s"])
    floor_rss = idle["floor_rss_mib"]
    reply = ratio(rel["ours"]["reply_ms"]["p50"], rel["nio"]["reply_ms"]["p50"])
    paced_r = ratio(paced["ours-l"]["p50"], paced["nio-l"]["p50"])
    ack = ratio(rel["ours"]["ack_ms"]["p50"], rel["nio"]["reply_ms"]["p50"])
    rss = ratio(idle["ours-r"]["rss_mib"], floor_rss)
    cu = r["catch_up"]["ours"]
    marks = [str(m) for m in r["turns"]["marks"]]

    def rss_at(who: str, mark: str) -> float | None:
        return (r["turns"][who].get(mark) or {}).get("rss_mib")

    m_lo, m_hi = rss_at("ours", marks[0]), rss_at("ours", marks[-1])
    growth = (m_hi - m_lo) / m_lo if m_lo and m_hi and len(marks) > 1 else None
    echo_rss = [f"{rss_at('nio', m)} MiB at {m}" for m in marks if rss_at("nio", m) is not None]
    cpu = idle["ours-r"]["cpu_percent"]

    def met(value: float | None, ok: bool) -> bool | None:
        return None if value is None else ok

    return [
        (
            "reply p50 ≤ 1.3× (relaxed)",
            f"{reply}×",
            f"{rel['nio']['reply_ms']['p50']} ms",
            met(reply, reply is not None and reply <= 1.3),
        ),
        (
            "reply p50 ≤ 1.3× (stock limits, paced)",
            f"{paced_r}×",
            f"{paced['nio-l']['p50']} ms",
            met(paced_r, paced_r is not None and paced_r <= 1.3),
        ),
        (
            "ack ≤ 1.1×",
            f"{ack}× ({rel['ours']['ack_ms']['p50']} ms)",
            f"{rel['nio']['reply_ms']['p50']} ms (its answer)",
            met(ack, ack is not None and ack <= 1.1),
        ),
        ("idle CPU < 0.1 %", f"{cpu} %", f"{idle['nio-r']['cpu_percent']} %", cpu < 0.1),
        (
            "start-to-ready < 1.5 s (existing store)",
            f"{ours_start:.2f} s",
            f"{statistics.median(s['nio_s']):.2f} s",
            ours_start < 1.5,
        ),
        (
            "catch-up ≥ 20 tasks/s",
            f"{cu['tasks_per_s']} tasks/s",
            f"{r['catch_up']['nio']['tasks_per_s']} tasks/s",
            cu["tasks_per_s"] >= 20,
        ),
        (
            f"memory flat (±10 %) {marks[0]} → {marks[-1]} turns",
            f"{m_lo} → {m_hi or '(not reached)'} MiB"
            + (f" ({growth:+.1%})" if growth is not None else ""),
            " → ".join(echo_rss) or "-",
            met(growth, growth is not None and abs(growth) <= 0.10),
        ),
        (
            "idle RSS ≤ 1.1× the libraries' floor",
            f"{rss}× ({idle['ours-r']['rss_mib']} MiB)",
            f"{floor_rss} MiB (import nio, anthropic)",
            met(rss, rss is not None and rss <= 1.1),
        ),
    ]


def rss_at_mark(r: dict[str, Any], who: str, mark: int) -> float | None:
    found: float | None = (r["turns"][who].get(str(mark)) or {}).get("rss_mib")
    return found


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value}×"


def _mib_or_dash(value: float | None) -> str:
    return "-" if value is None else f"{value} MiB"


def markdown(r: dict[str, Any]) -> str:
    m, rev, rel, paced = r["machine"], r["revision"], r["relaxed"], r["paced"]
    st, idle, cu, tk = r["startup"], r["idle"], r["catch_up"], r["relaxed"]["tokens"]
    rows = goals(r)
    mark = {True: "met", False: "**not met**", None: "not measured"}
    lines = [
        "# Benchmarks",
        "",
        "Written by `tools/bench/report.py` (do not edit by hand; run it again). "
        "Every latency is a ratio against a bare matrix-nio echo bot "
        "(`tools/bench/nio_echo_bot.py`) measured in the same run on the same homeserver.",
        "",
        f"- **Date:** {r['date']}",
        f"- **Code:** {rev['head'][:12]} ({rev['subject']})"
        + (" + uncommitted changes" if rev["package_files_changed"] else ""),
        f"- **Machine:** {m['nproc']} CPUs ({m['cpu_model']}), {m['mem_total_gib']} GiB, "
        f"Linux {m['kernel']}, Python {m['python']}; load average at start "
        f"{m['loadavg_at_start'][0]:.2f}, at end {m['loadavg_at_end'][0]:.2f}",
        "- **Packages:** " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()),
        f"- **Command:** `{r['command']}`"
        + (
            f" (CPU: other processes took {r['cpu']['other_share_of_machine']:.0%} of the machine)"
            if "cpu" in r
            else ""
        ),
        *(f"- **Note:** {note}" for note in r.get("notes", [])),
        *(
            f"- **Re-measured** {rerun['date']}: {', '.join(rerun['phases'])} "
            f"(code {rerun['revision'][:12]}, load average at end "
            f"{rerun['loadavg_at_end'][0]:.2f}); each phase's two bots share one run"
            for rerun in r.get("reruns", [])
        ),
        "",
        "## Goals",
        "",
        "| goal | dispatch-matrix | floor (echo bot / libraries) | |",
        "|---|---|---|---|",
        *(f"| {g} | {ours} | {floor} | {mark[ok]} |" for g, ours, floor, ok in rows),
        "",
        "## Method",
        "",
        "One Synapse on loopback with Synapse's stock `rc_message` (burst 10, then 0.2/s) and "
        "`rc_presence`. *Relaxed* bots are exempted through the admin API "
        "(`override_ratelimit`), as an operator does for a bot, and dispatch-matrix is told so "
        "(`send_rate_per_s = 0`); *limited* bots keep the stock limits (dispatch-matrix with "
        "its default budget). Owners are matrix-js-sdk clients (Rust crypto, cross-signed "
        "devices, permissive isolation so that the same kind of client can talk to the echo "
        "bot, whose device is not cross-signed), one per bot. The Messages API is the strict "
        "stand-in (`tools/fake_messages_api.py`) answering `echo: …` at once, so latency is the "
        "Matrix path and each bot's own work. dispatch-matrix runs with its shipped defaults "
        "(30 s long-poll, `info` log, the bubblewrap sandbox on); the echo bot with nio's.",
        "",
        "- **Reply latency:** the owner's `send_text` returns → the answer is decrypted at "
        "the owner. One message at a time, each sent when the previous answer arrived.",
        "- **Ack:** the same messages → dispatch-matrix's read receipt on it at the owner "
        "(the first sign of life a phone shows; ⏳ follows only after 2 s queued). The echo "
        "bot shows nothing before its answer, so its answer is its ack.",
        f"- **Paced, stock limits:** {r['settings']['paced']} messages to each limited bot, "
        f"each {r['settings']['pace']} s after the previous answer, the two bots in turn.",
        f"- **Idle:** the relaxed bots, after their conversations, for "
        f"{idle['seconds']:.0f} s (during the paced run, which does not touch them): CPU is "
        "utime+stime of the process tree from /proc; RSS is VmRSS summed over the tree. The "
        "libraries' floor is a process that only runs `import nio, anthropic`.",
        '- **Start-to-ready:** spawn → the "connected" line (the first sync done), '
        f"restarts with an existing store, a DM and a conversation; median of "
        f"{len(st['ours_s'])}.",
        f"- **Catch-up:** {cu['ours']['messages']} messages sent while the bot was stopped; "
        "spawn → the last of every answer, by the homeserver's timestamps. The echo bot "
        "(which pages back a gap newest-first) is started with a sync timeline limit above "
        "the backlog, its best case; "
        "dispatch-matrix syncs 100 events at a time and backfills the gap from `/messages`.",
        f"- **Memory over turns:** fresh bots; the owner sends batches of "
        f"{r['settings']['batch']} (a few sends outstanding) and waits for every answer of "
        f"the batch; RSS after {', '.join(str(x) for x in r['turns']['marks'])} turns"
        + (
            f" (the echo bot, a reference, to {r['turns']['echo_marks'][-1]}, then stopped)"
            if r["turns"].get("echo_marks") and r["turns"]["echo_marks"] != r["turns"]["marks"]
            else ""
        )
        + ". dispatch-matrix runs with "
        "`context_window = 20000`, so the conversation is compacted "
        + (
            f"{r['turns']['compactions']} times on the way "
            if r["turns"].get("compactions") is not None
            else "many times on the way "
        )
        + "(a long-lived conversation's life, "
        "without every echo request carrying 140k tokens).",
        "- **Tokens and cost:** the stand-in's usage for the relaxed conversation, priced "
        "with the list prices in `dispatch_matrix/agent/usage.py`.",
        "",
        "## Figures",
        "",
        "| | dispatch-matrix | echo bot | ratio |",
        "|---|---|---|---|",
    ]
    for key in ("p50", "p95", "max"):
        o, n = rel["ours"]["reply_ms"][key], rel["nio"]["reply_ms"][key]
        lines.append(
            f"| reply {key}, relaxed (N={rel['ours']['reply_ms']['n']}) | {o} ms "
            f"| {n} ms | {ratio(o, n)}× |"
        )
    for key in ("p50", "p95", "max"):
        o, n = paced["ours-l"][key], paced["nio-l"][key]
        lines.append(
            f"| reply {key}, stock limits paced (N={paced['ours-l']['n']}) | {o} ms "
            f"| {n} ms | {ratio(o, n)}× |"
        )
    for key in ("p50", "p95"):
        o, n = rel["ours"]["ack_ms"][key], rel["nio"]["reply_ms"][key]
        lines.append(f"| ack {key} | {o} ms | {n} ms (answer) | {ratio(o, n)}× |")
    o, n = statistics.median(st["ours_s"]), statistics.median(st["nio_s"])
    lines += [
        f"| start-to-ready, existing store (median) | {o:.2f} s | {n:.2f} s | {ratio(o, n)}× |",
        f"| `import nio, anthropic` alone (median) | | "
        f"{statistics.median(x['wall_s'] for x in st['floor_import']):.2f} s | |",
        f"| idle CPU over {idle['seconds']:.0f} s | {idle['ours-r']['cpu_percent']} % "
        f"({idle['ours-r']['cpu_s']} s) | {idle['nio-r']['cpu_percent']} % "
        f"({idle['nio-r']['cpu_s']} s) | |",
        f"| idle RSS | {idle['ours-r']['rss_mib']} MiB | {idle['nio-r']['rss_mib']} MiB | "
        f"{ratio(idle['ours-r']['rss_mib'], idle['nio-r']['rss_mib'])}× |",
        f"| RSS of `import nio, anthropic` alone | | {idle['floor_rss_mib']} MiB | "
        f"{ratio(idle['ours-r']['rss_mib'], idle['floor_rss_mib'])}× |",
    ]
    o, n = cu["ours"], cu["nio"]
    lines += [
        f"| catch-up {o['messages']}: spawn → last answer | {o['spawn_to_last_answer_s']} s "
        f"({o['tasks_per_s']}/s) | {n['spawn_to_last_answer_s']} s ({n['tasks_per_s']}/s) | "
        f"{ratio(o['spawn_to_last_answer_s'], n['spawn_to_last_answer_s'])}× |",
        f"| catch-up: answers, in order | {o['answers']}, {o['in_order']} | {n['answers']}, "
        f"{n['in_order']} | |",
    ]
    for mark in r["turns"]["marks"]:
        o, n = rss_at_mark(r, "ours", mark), rss_at_mark(r, "nio", mark)
        lines.append(
            f"| RSS after {mark} turns | {_mib_or_dash(o)} | {_mib_or_dash(n)} | "
            f"{_times(ratio(o, n))} |"
        )
    pt = tk["per_task"]
    lines += [
        "",
        f"Tokens per task ({tk['tasks']} tasks, {tk['requests']} requests, {tk['model']}): "
        f"input {pt['input']}, cache writes {pt['cache_write']}, cache reads "
        f"{pt['cache_read']}, output {pt['output']}; cache share of the prompt "
        f"{tk['cache_read_share']:.1%}; **${tk['usd_per_task']:.4f} per task**.",
        "",
        "Raw figures: `tools/bench/results/report.json`. The other scripts in `tools/bench` "
        "measure single areas (caching over a day, the sandbox's cost, MCP, the redactor); "
        "see `tools/bench/README.md`.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=50, help="relaxed round trips per bot")
    parser.add_argument("--paced", type=int, default=50, help="paced round trips per bot")
    parser.add_argument("--pace", type=float, default=6.0, help="seconds between paced ones")
    parser.add_argument("--idle-seconds", type=float, default=300.0)
    parser.add_argument("--startup-runs", type=int, default=5)
    parser.add_argument("--backlog", type=int, default=500)
    parser.add_argument("--turns", default="1000,10000", help="RSS after these turn counts")
    parser.add_argument("--batch", type=int, default=100, help="turns sent per batch")
    parser.add_argument(
        "--echo-turns",
        type=int,
        default=0,
        help="take the echo bot only this far in the turns phase (default: the first mark)",
    )
    parser.add_argument("--quick", action="store_true", help="small numbers: a smoke run")
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help="comma-separated subset of " + ",".join(PHASES) + "; with fewer than all, the "
        "others are taken from --out's earlier results (each phase keeps its own date)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--markdown", type=Path, default=MARKDOWN)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--rewrite",
        action="store_true",
        help="measure nothing: write --markdown again from --out's results (after their "
        "notes were edited)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.phases.split(",")) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}; choose from {','.join(PHASES)}")
    if args.quick:
        args.messages, args.paced, args.pace, args.idle_seconds = 10, 5, 6.0, 30.0
        args.startup_runs, args.backlog, args.turns, args.batch = 2, 50, "100,300", 50
        if args.markdown == MARKDOWN:
            args.markdown = Path(tempfile.gettempdir()) / "BENCHMARKS.quick.md"
        if args.out == RESULTS:
            args.out = Path(tempfile.gettempdir()) / "report.quick.json"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rewrite:
        args.markdown.write_text(markdown(json.loads(args.out.read_text())))
        say(f"wrote {args.markdown} from {args.out}")
        return 0
    use_product_python()
    folder = Path(tempfile.mkdtemp(prefix="bench-report-"))

    async def go() -> dict[str, Any]:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        meter = CpuMeter().start()
        try:
            results = await measure(args, folder)
        finally:
            await REAPER.stop_all()
        results["cpu"] = meter.report()
        return results

    if set(args.phases.split(",")) != set(PHASES) and not args.out.exists():
        # Checked before measuring: a subset is merged into an earlier full run's results.
        print(f"--phases measures a subset into {args.out}, which does not exist", file=sys.stderr)
        return 2
    keep, code = args.keep, 1
    try:
        results = asyncio.run(go())
        if set(args.phases.split(",")) != set(PHASES):
            results = merged(json.loads(args.out.read_text()), results)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        args.markdown.write_text(markdown(results))
        say(f"\nwrote {args.markdown} and {args.out}")
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
