#!/usr/bin/env python3
"""Benchmark: dispatch-matrix against a bare matrix-nio echo bot on a homeserver with
Synapse's stock limits for both bots (rc_message: burst 10, then 0.2/s; rc_presence), the
owner exempt, as on any homeserver nobody tuned for a bot.

Measures, in one run on one Synapse:
- a paced conversation: N messages, each sent `--pace` seconds after the previous reply
  (a person reading and writing), reply latency p50/p90 for both bots;
- five tasks sent at once to dispatch-matrix: last send → fifth answer;
- room events per quick task and 429s met, from the bot's log.

    .venv/bin/python tools/bench/ratelimits.py   # writes tools/bench/results/ratelimits.json
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1] / "tests"))

from fake_messages_api import FakeMessagesAPI  # noqa: E402
from foundation import (  # noqa: E402
    REAPER,
    Account,
    Accounts,
    NioBot,
    machine,
    one_reply,
    open_dm,
    percentile,
    revision,
    say,
    start_js,
    stop_bot,
)
from harness.bot import BotConfig, BotProcess  # noqa: E402
from harness.jsclient import check_installed  # noqa: E402

from dispatch_matrix.app.homeserver import LocalSynapse, free_port  # noqa: E402

RESULTS = HERE / "results" / "ratelimits.json"


def stats(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 50), 1),
        "p90": round(percentile(values, 90), 1),
        "max": round(max(values), 1),
    }


async def paced(
    owner: Any, room: str, bot_user: str, name: str, n: int, pace: float
) -> list[float]:
    """N round trips, each sent `pace` s after the previous answer arrived."""
    await one_reply(owner, room, bot_user, f"{name}-warmup")
    latencies = []
    for i in range(n):
        await asyncio.sleep(pace)
        sample = await one_reply(owner, room, bot_user, f"{name}-{i + 1}")
        latencies.append(sample["latency_ms"])
    return latencies


def bot_counts(bot: BotProcess) -> dict[str, Any]:
    """Room events per task and 429s, from the bot's JSON log."""
    per_task: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for record in bot.log_events("outbox.sent"):
        found = re.search(r"-t(\d+)\.", str(record.get("txn", "")))
        per_task[found.group(1) if found else "other"] += 1
        kinds[str(record.get("kind"))] += 1
    tasks = [count for key, count in per_task.items() if key != "other"]
    return {
        "tasks": len(tasks),
        "events_per_task_max": max(tasks, default=0),
        "events_per_task_mean": round(sum(tasks) / len(tasks), 2) if tasks else 0,
        "events_by_kind": dict(kinds),
        "rate_limited_429s": len(bot.log_events("outbox.rate_limited")),
    }


async def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    check_installed()
    synapse = LocalSynapse(folder / "synapse", port=free_port(), stock_event_limits=True)
    await asyncio.to_thread(synapse.configure)
    REAPER.add("synapse", lambda: asyncio.to_thread(synapse.stop))
    await asyncio.to_thread(synapse.start)
    admin = await asyncio.to_thread(synapse.admin_token)
    api = FakeMessagesAPI().start()
    REAPER.add("fake messages api", lambda: asyncio.to_thread(api.stop))
    accounts = Accounts(synapse)

    def owner_account(prefix: str) -> Account:
        account = accounts.new(prefix)
        synapse.exempt(account.user_id, admin)
        return account

    say("dispatch-matrix (stock limits) …")
    bot_account, owner = accounts.new("bot"), owner_account("owner")
    config = BotConfig(
        folder=folder / "bot",
        homeserver=synapse.url,
        user_id=bot_account.user_id,
        password=bot_account.password,
        owners=[owner.user_id],
        api_url=api.url,
    )
    config.write()
    bot = BotProcess(config, env={"DISPATCH_LOG__LEVEL": "info"})
    await bot.start()
    REAPER.add("dispatch-matrix", lambda: stop_bot(bot))
    js = await start_js(synapse.url, owner, "owner")
    room = await open_dm(js, bot_account.user_id)
    dispatch_paced = await paced(js, room, bot_account.user_id, "dm", args.messages, args.pace)
    say(f"  paced: {stats(dispatch_paced)}")
    counts_paced = bot_counts(bot)

    await asyncio.sleep(args.pace)
    tokens = [f"burst-{n}-{time.monotonic_ns()}" for n in range(5)]
    sent = [await js.send_text(room, f"benchmark message {t}") for t in tokens]
    last_sent = time.monotonic()
    for token in tokens:
        await js.wait_message(room, sender=bot_account.user_id, contains=token, timeout=120)
    five_s = time.monotonic() - last_sent
    say(f"  five at once: last send → fifth answer {five_s:.2f} s")
    del sent
    counts_all = bot_counts(bot)

    say("matrix-nio echo bot (stock limits) …")
    nio_account, nio_owner = accounts.new("niobot"), owner_account("nioowner")
    nio = NioBot(synapse.url, nio_account, folder / "nio")
    await nio.spawn()
    REAPER.add("nio bot", nio.stop)
    await nio.wait_connected(60)
    js2 = await start_js(synapse.url, nio_owner, "nio-owner")
    room2 = await open_dm(js2, nio_account.user_id)
    nio_paced = await paced(js2, room2, nio_account.user_id, "nio", args.messages, args.pace)
    say(f"  paced: {stats(nio_paced)}")

    d, n = stats(dispatch_paced), stats(nio_paced)
    return {
        "benchmark": "ratelimits",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "settings": {
            "messages": args.messages,
            "pace_s": args.pace,
            "homeserver": "Synapse, stock rc_message (burst 10, 0.2/s) and rc_presence for "
            "both bots; owners exempt (override_ratelimit)",
            "messages_api": "tools/fake_messages_api.py, echo, no delay",
        },
        "machine": machine(),
        "revision": revision(),
        "paced_reply_ms": {"dispatch_matrix": d, "nio_echo_bot": n},
        "paced_ratio": {
            "p50": round(d["p50"] / n["p50"], 2) if n["p50"] else None,
            "p90": round(d["p90"] / n["p90"], 2) if n["p90"] else None,
        },
        "five_at_once_last_send_to_fifth_answer_s": round(five_s, 2),
        "paced_counts": counts_paced,
        "all_counts": counts_all,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--pace", type=float, default=6.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ratelimits-") as tmp:

        async def measured() -> dict[str, Any]:
            try:
                return await run(args, Path(tmp))
            finally:
                await REAPER.stop_all()

        try:
            results = asyncio.run(measured())
        finally:
            REAPER.kill_all()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    say(json.dumps({k: results[k] for k in ("paced_reply_ms", "paced_ratio")}, indent=2))
    say(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
