#!/usr/bin/env python3
"""The walk of one owner message: which of our modules run from its arrival to its answer.

The bot runs as a real `dispatch-matrix run` process with a profiler installed before it
starts (a `sitecustomize` on PYTHONPATH: nothing in the package knows it is measured). The
profiler notes, for every call into `dispatch_matrix`, the module and the nearest calling
module of ours, in 50 ms buckets of the system-wide monotonic clock. The driver (a
cross-signed matrix-js-sdk owner, a private Synapse, the Messages API stand-in) marks the
window from the owner's send to the answer's arrival, after a warm-up message (so lazy
imports and first-use set-up are not counted) and an idle window of the same length (what
runs anyway: the sync loop, health, timers).

    .venv/bin/python tools/bench/walk.py [--out tools/bench/results/walk.json]

It prints, for a plain message and for one with a single `bash` call:
- files: our modules with a call in the window (and how many of them belong to `core`,
  the utilities every part uses: logs, redaction, errors, ids);
- crossings: distinct caller → callee module pairs in the window whose top-level packages
  differ (a call from `queue/worker.py` into `agent/engine.py` is one);
- idle: modules that also ran in the idle window;
- functions: per file, the functions that ran (why the file is on the walk). A resumed
  coroutine counts as a call, so a coroutine awaiting in a stepping task's chain is listed.
It measures, it does not judge: no thresholds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for extra in (ROOT / "tools", ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from fake_messages_api import FakeMessagesAPI  # noqa: E402
from harness.bot import BotConfig, BotProcess  # noqa: E402
from harness.jsclient import JsClient, check_installed  # noqa: E402

try:
    from dispatch_matrix.app.homeserver import LocalSynapse, free_port
except ImportError:  # the flat layout before issue 29, to measure "before"
    from dispatch_matrix.homeserver import LocalSynapse, free_port  # type: ignore[no-redef]

PACKAGE = ROOT / "dispatch_matrix"

# Installed into the bot's interpreter through PYTHONPATH; it writes what it saw at exit.
TRACER = """
import atexit, json, os, sys, threading, time

_OUT = os.environ.get("DISPATCH_WALK_OUT")
if _OUT:
    _ROOT = os.environ["DISPATCH_WALK_ROOT"]
    _calls = {}
    _edges = {}

    def _ours(frame):
        # The nearest module of ours up the stack, through library frames (a callback
        # from nio), but not through the event loop: a task resumed by asyncio has no
        # caller of ours (else every task step would seem called by cli.py's asyncio.run).
        while frame is not None:
            name = frame.f_code.co_filename
            if name.startswith(_ROOT):
                return name
            if "/asyncio/" in name:
                return None
            frame = frame.f_back
        return None

    def _profile(frame, event, arg):
        if event != "call":
            return
        name = frame.f_code.co_filename
        if not name.startswith(_ROOT):
            return
        tick = int(time.monotonic() * 20)
        _calls.setdefault(name + ":" + frame.f_code.co_qualname, set()).add(tick)
        caller = _ours(frame.f_back)
        if caller is not None and caller != name:
            _edges.setdefault((caller, name), set()).add(tick)

    def _dump():
        data = {
            "calls": {k: sorted(v) for k, v in _calls.items()},
            "edges": [[a, b, sorted(v)] for (a, b), v in _edges.items()],
        }
        with open(_OUT, "w") as f:
            json.dump(data, f)

    atexit.register(_dump)
    sys.setprofile(_profile)
    threading.setprofile(_profile)
"""


def module_of(path: str) -> str:
    """`dispatch_matrix/queue/worker.py` → `queue/worker.py`."""
    return Path(path).resolve().relative_to(PACKAGE).as_posix()


def package_of(module: str) -> str:
    return module.split("/", 1)[0] if "/" in module else module


def in_window(ticks: list[int], start: float, end: float) -> bool:
    low, high = int(start * 20), int(end * 20) + 1
    return any(low <= t <= high for t in ticks)


def analyse(
    trace: dict[str, Any], window: tuple[float, float], idle: tuple[float, float]
) -> dict[str, Any]:
    # The tracer keys calls by "file:function"; a resumed coroutine counts as a call (so a
    # coroutine waiting in a task's await chain is on the walk when the task steps).
    functions: dict[str, set[str]] = {}
    idle_files: set[str] = set()
    for key, ticks in trace["calls"].items():
        path, _, function = key.partition(":")
        if in_window(ticks, *window):
            functions.setdefault(module_of(path), set()).add(function)
        if in_window(ticks, *idle):
            idle_files.add(module_of(path))
    files = sorted(functions)
    crossings = sorted(
        {
            (module_of(a), module_of(b))
            for a, b, ticks in trace["edges"]
            if in_window(ticks, *window) and package_of(module_of(a)) != package_of(module_of(b))
        }
    )
    core = [f for f in files if package_of(f) == "core"]
    return {
        "files": files,
        "file_count": len(files),
        "core_count": len(core),
        "without_core": len(files) - len(core),
        "packages": sorted({package_of(f) for f in files}),
        "crossings": [f"{a} -> {b}" for a, b in crossings],
        "crossing_count": len(crossings),
        "package_crossings": sorted({f"{package_of(a)} -> {package_of(b)}" for a, b in crossings}),
        "also_idle": [f for f in files if f in idle_files],
        "functions": {f: sorted(functions[f]) for f in files},
    }


async def walk(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    check_installed()
    synapse = LocalSynapse(folder / "synapse", port=free_port())
    await asyncio.to_thread(synapse.configure)
    await asyncio.to_thread(synapse.start)
    api = FakeMessagesAPI().start()
    bot = None
    owner = None
    try:
        admin = synapse.admin_token()
        accounts = []
        for prefix in ("walkbot", "walkowner"):
            localpart = f"{prefix}-{secrets.token_hex(3)}"
            password = secrets.token_urlsafe(12)
            user = synapse.register(localpart, password)
            synapse.exempt(user, admin)
            accounts.append((user, password, localpart))
        (bot_user, bot_password, bot_local), (owner_user, owner_password, _) = accounts
        config = BotConfig(
            folder=folder / bot_local,
            homeserver=synapse.url,
            user_id=bot_user,
            password=bot_password,
            owners=[owner_user],
            api_url=api.url,
            matrix_extra="send_rate_per_s = 0\n",
            extra='\n[permissions]\nallow = ["Bash(echo:*)"]\n',
        )
        config.write()
        tracer = folder / "tracer"
        tracer.mkdir()
        (tracer / "sitecustomize.py").write_text(TRACER)
        out = folder / "walk-trace.json"
        bot = BotProcess(
            config,
            env={
                "PYTHONPATH": str(tracer),
                "DISPATCH_WALK_OUT": str(out),
                "DISPATCH_WALK_ROOT": str(PACKAGE),
                "DISPATCH_LOG__LEVEL": "info",
            },
        )
        await bot.start(timeout=180)
        owner = await JsClient.start(
            synapse.url, owner_user, owner_password, strict=True, name="owner"
        )
        await owner.bootstrap_cross_signing(owner_password)
        room = await owner.create_dm(bot_user)
        await owner.wait_join(room, bot_user, timeout=120)

        async def exchange(text: str) -> tuple[float, float]:
            token = secrets.token_hex(4)
            start = time.monotonic()
            sent = await owner.send_text(room, f"{text} {token}")
            await owner.wait_message(
                room, sender=bot_user, contains=token, after_event_id=sent, timeout=120
            )
            return start, time.monotonic()

        await exchange("warm-up")
        api.reply(tools=[("bash", {"command": "echo warm"})])
        api.reply("warm tool done")
        await owner.send_text(room, "warm-up with a tool")
        await owner.wait_message(room, sender=bot_user, contains="warm tool done", timeout=120)
        plain = await exchange("walk")
        # The idle window starts once the answer's tail (ledger, receipts, edits) is done.
        await asyncio.sleep(2.0)
        idle_start = time.monotonic()
        await asyncio.sleep(max(plain[1] - plain[0], 1.0))
        idle = (idle_start, time.monotonic())
        # A gap wider than the windows' one-bucket margin before the next send.
        await asyncio.sleep(0.5)
        api.reply(tools=[("bash", {"command": "echo walked"})])
        marker = secrets.token_hex(4)
        api.reply(f"tool walk done {marker}")
        start = time.monotonic()
        await owner.send_text(room, "walk with one bash call")
        await owner.wait_message(room, sender=bot_user, contains=marker, timeout=120)
        with_tool = (start, time.monotonic())
        # The window reaches into the 50 ms bucket after the answer: stopping at once put
        # the shutdown (signal handler, scheduler and health tasks cancelled, the store
        # closed) on the walk of the bash call. Let the answer's tail pass first, as above.
        await asyncio.sleep(2.0)
        await bot.stop(60)
        bot = None
        trace = json.loads(out.read_text())
        return {
            "benchmark": "walk",
            "revision": _revision(),
            "plain_message": analyse(trace, plain, idle),
            "one_bash_call": analyse(trace, with_tool, idle),
            "windows_s": {
                "plain": round(plain[1] - plain[0], 2),
                "tool": round(with_tool[1] - with_tool[0], 2),
            },
        }
    finally:
        if owner is not None:
            await owner.close()
        if bot is not None and bot.process is not None and bot.process.returncode is None:
            await bot.kill9()
        api.stop()
        await asyncio.to_thread(synapse.stop)


def _revision() -> str:
    import subprocess

    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="walk-"))
    result = asyncio.run(walk(args, folder))
    for name in ("plain_message", "one_bash_call"):
        r = result[name]
        print(
            f"{name}: {r['file_count']} files ({r['core_count']} in core, "
            f"{r['without_core']} without), {r['crossing_count']} module crossings between "
            f"packages, {len(r['package_crossings'])} package pairs; "
            f"{len(r['also_idle'])} of the files also run while idle"
        )
        print("  files: " + ", ".join(r["files"]))
        print("  package pairs: " + ", ".join(r["package_crossings"]))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written to {args.out}")
    if not args.keep:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
