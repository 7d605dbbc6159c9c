#!/usr/bin/env python3
"""Restart → connected and restart → first answer of dispatch-matrix, for several ways of
starting it side by side (the agent's half imported up front, or in a thread meanwhile;
this checkout against another source tree).

It brings up a private Synapse, the fake Messages API and a bot with an owner and an
encrypted DM (one answered message). Then, `--rounds` times and for each mode in turn, the
owner sends a message while the bot is stopped, and the bot is started on the same state
folder; it records spawn → the stdout line containing "connected" and spawn → the answer to
that message decrypted at the owner. It prints medians and the load average; it asserts
nothing.

Modes (`--modes`, comma-separated):

- `as-is`: `dispatch-matrix run` from this checkout;
- `preload`: the same after importing `--preload` first (default `dispatch_matrix.agent`:
  the SDK and the tools), which is what importing the agent's half up front costs a daemon
  that would otherwise import it in a thread while it logs in and syncs;
- `NAME=DIR`: the `dispatch_matrix` package found in DIR (e.g. an older commit's, from
  `git archive <commit> dispatch_matrix | tar -x -C DIR`), with this checkout's libraries.

    .venv/bin/python tools/bench/startup.py [--rounds 5] [--modes as-is,preload]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from product_env import VARIABLE, use_product_python
from stage import Stage, run_staged, set_stage

_WRAPPER = """#!{python}
import sys
{prelude}
from dispatch_matrix.cli import main
sys.exit(main())
"""


def wrapped_python(python: str, prelude: str, folder: Path) -> str:
    """An interpreter path whose sibling `dispatch-matrix` runs `prelude` first (the
    harness runs the `dispatch-matrix` beside DISPATCH_MATRIX_PYTHON)."""
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "python"
    if not link.exists():
        link.symlink_to(python)
    script = folder / "dispatch-matrix"
    script.write_text(_WRAPPER.format(python=python, prelude=prelude))
    script.chmod(0o755)
    return str(link)


def mode_python(mode: str, python: str, preload: str, folder: Path) -> str:
    """The interpreter the harness runs for `mode` (see the module's docstring)."""
    if mode == "as-is":
        return python
    if mode == "preload":
        return wrapped_python(python, f"import {preload}", folder / "preload")
    name, _, source = mode.partition("=")
    if not source or not (Path(source) / "dispatch_matrix").is_dir():
        raise SystemExit(f"{mode!r}: give as-is, preload or NAME=DIR with DIR/dispatch_matrix")
    # Ahead of the editable install's finder, which sys.meta_path consults after sys.path.
    prelude = f"sys.path.insert(0, {str(Path(source).resolve())!r})"
    return wrapped_python(python, prelude, folder / f"source-{name}")


async def _restart(f: Any, stage: Stage) -> dict:
    token = f"restart-{secrets.token_hex(4)}"
    sent = await stage.owner.send_text(stage.room, f"benchmark message {token}")
    bot = stage.bot()
    started = time.monotonic()
    connected = await f.timed_start(bot)
    await stage.owner.wait_message(
        stage.room,
        sender=stage.bot_user,
        contains=token,
        after_event_id=sent,
        timeout=f.REPLY_TIMEOUT,
    )
    answered = time.monotonic() - started
    await f.stop_bot(bot)
    return {
        "connected_s": connected["wall_s"],
        "answered_s": round(answered, 3),
        "load": round(os.getloadavg()[0], 2),
    }


async def _bench(args: argparse.Namespace, folder: Path, pythons: dict[str, str]) -> dict:
    # Imported here so that importing this module stays free of the harness's side effects.
    import foundation as f

    stage = await set_stage(args, folder, bot_name="startbot", owner_name="startowner")
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in pythons}
    for _ in range(args.rounds):
        for mode, python in pythons.items():
            os.environ[VARIABLE] = python
            run = await _restart(f, stage)
            runs[mode].append(run)
            f.say(
                f"  {mode}: connected {run['connected_s']:.2f} s, "
                f"answered {run['answered_s']:.2f} s (load {run['load']:.2f})"
            )
    await stage.owner.close()
    return {
        "runs": runs,
        "medians": {
            mode: {
                key: round(statistics.median(r[key] for r in each), 3)
                for key in ("connected_s", "answered_s")
            }
            for mode, each in runs.items()
        },
        "loadavg_end": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", default="as-is,preload")
    parser.add_argument("--preload", default="dispatch_matrix.agent")
    parser.add_argument("--bot-sync-timeout-ms", type=int, default=30_000)
    parser.add_argument("--bot-log-level", default="info")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    python = use_product_python()
    folder = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    pythons = {
        mode.partition("=")[0]: mode_python(mode, python, args.preload, folder)
        for mode in args.modes.split(",")
    }

    results = run_staged(lambda: _bench(args, folder, pythons), folder)
    for mode, figures in results["medians"].items():
        print(f"{mode}: {figures}")
    print(f"loadavg_end: {results['loadavg_end']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
