"""Queue benchmark: how fast the phone sees a message taken (⏳), and how fast a backlog
sent while the bot was stopped is worked through.

    .venv/bin/python tools/bench/backlog.py [--acks 20] [--backlog 200]

Brings up its own Synapse, the stand-in Messages API (zero-delay echo), the bot as a real
process and a cross-signed strict matrix-js-sdk client; stops all of them on the way out.
Writes tools/bench/results/backlog.json. A measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tools"), str(ROOT)]

from fake_messages_api import FakeMessagesAPI  # noqa: E402
from harness.bot import BotConfig, BotProcess  # noqa: E402
from harness.jsclient import JsClient  # noqa: E402

from dispatch_matrix.homeserver import LocalSynapse, free_port  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[index]


async def reaction_seen(owner: JsClient, room: str, event_id: str, key: str) -> float:
    """Poll the js client's timeline (10 ms) until `key` annotates `event_id`; the time."""
    while True:
        for event in await owner.messages(room):
            relation = (event.get("content") or {}).get("m.relates_to") or {}
            if (
                event["type"] == "m.reaction"
                and relation.get("event_id") == event_id
                and relation.get("key") == key
            ):
                return time.monotonic()
        await asyncio.sleep(0.01)


async def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    synapse = LocalSynapse(folder / "synapse", port=free_port())
    synapse.configure()
    synapse.start()
    api = FakeMessagesAPI().start()
    bot: BotProcess | None = None
    owner: JsClient | None = None
    try:
        bot_pw, owner_pw = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        bot_id = synapse.register("bot", bot_pw)
        owner_id = synapse.register("owner", owner_pw)
        config = BotConfig(folder / "bot", synapse.url, bot_id, bot_pw, [owner_id], api.url)
        config.write()
        text = config.path.read_text().replace('level = "debug"', 'level = "info"')
        config.path.write_text(text.replace("sync_timeout_ms = 5000", "sync_timeout_ms = 30000"))
        bot = await BotProcess(config).start()
        owner = await JsClient.start(synapse.url, owner_id, owner_pw, strict=True, name="owner")
        await owner.bootstrap_cross_signing(owner_pw)
        room = await owner.create_dm(bot_id)
        await owner.wait_join(room, bot_id)
        await owner.send_text(room, "warm-up")
        await owner.wait_message(room, sender=bot_id, contains="warm-up")

        acks: list[float] = []
        replies: list[float] = []
        for n in range(args.acks):
            began = time.monotonic()
            sent = await owner.send_text(room, f"ack probe {n}")
            seen = await reaction_seen(owner, room, sent, "⏳")
            acks.append((seen - began) * 1000)
            await owner.wait_message(room, sender=bot_id, contains=f"ack probe {n}")
            replies.append((time.monotonic() - began) * 1000)
            print(f"ack {n}: {acks[-1]:.0f} ms, reply {replies[-1]:.0f} ms", flush=True)

        await bot.stop()
        for n in range(args.backlog):
            await owner.send_text(room, f"backlog {n:04d}")
        bot = BotProcess(config)
        spawned = time.monotonic()
        await bot.start()
        connected = time.monotonic()
        last = f"backlog {args.backlog - 1:04d}"
        await owner.wait_message(room, sender=bot_id, contains=last, timeout=3600)
        finished = time.monotonic()
        requests = len(api.requests)
        return {
            "ack_ms": {
                "n": len(acks),
                "p50": round(statistics.median(acks), 1),
                "p90": round(percentile(acks, 0.9), 1),
                "max": round(max(acks), 1),
            },
            "reply_ms": {
                "n": len(replies),
                "p50": round(statistics.median(replies), 1),
                "p90": round(percentile(replies, 0.9), 1),
            },
            "catch_up": {
                "tasks": args.backlog,
                "spawn_to_connected_s": round(connected - spawned, 2),
                "connected_to_last_answer_s": round(finished - connected, 2),
                "tasks_per_s": round(args.backlog / (finished - connected), 2),
                "model_requests_total": requests,
            },
        }
    finally:
        if owner is not None:
            await owner.close()
        if bot is not None:
            await bot.stop()
        api.stop()
        synapse.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acks", type=int, default=20)
    parser.add_argument("--backlog", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "tools/bench/results/backlog.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dm-bench-queue-") as tmp:
        figures = asyncio.run(run(args, Path(tmp)))
    result = {
        "benchmark": "queue",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
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
