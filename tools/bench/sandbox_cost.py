#!/usr/bin/env python3
"""Sandbox cost: wall time of one `bash` tool call running `true`, with and without the OS
sandbox (bubblewrap on Linux), through the real tool (spec from disk, launch, process group,
output capture), as the agent calls it.

    .venv/bin/python tools/bench/sandbox_cost.py [--calls 100] [--rounds 3]
        [--out tools/bench/results/sandbox_cost.json]

Calls alternate between the two modes in rounds, so a change in machine load skews both
alike. The context is a daemon's: one root, the usual hidden paths (state folder, config,
credentials, runtime sockets). A third mode, "home", is the default config's: the root is a
home folder laid out as a developer's (start-up files, ~/.config, 15 repositories), with the
wall's read-only guards (dispatch_matrix/sandbox/wall_paths.py) mounted as the daemon mounts
them. "plan" times the home mode's plan alone (`spec_for`: the survey of hidden and
read-only paths on disk, symlinks followed, and the spec), in the same rounds. It measures,
it does not judge.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dispatch_matrix.app.agent_kit import readonly_paths  # noqa: E402
from dispatch_matrix.sandbox.choice import check_sandbox  # noqa: E402
from dispatch_matrix.sandbox.host import Confinement, default_hidden, spec_for  # noqa: E402
from dispatch_matrix.sandbox.spec import Sandbox, bwrap_args  # noqa: E402
from dispatch_matrix.toolbox.base import ToolContext  # noqa: E402
from dispatch_matrix.toolbox.registry import ToolRegistry  # noqa: E402
from dispatch_matrix.toolbox.shell import BashTool  # noqa: E402

_HOME_FILES = (".bashrc", ".profile", ".gitconfig", ".bash_history", ".ssh/id_ed25519", ".netrc")
_HOME_FOLDERS = (
    ".cache", ".config/gh", ".config/git", ".config/Code/User", ".config/systemd/user",
    ".config/htop", ".config/nvim", ".local/share/keyrings", ".local/share/applications",
    ".local/bin", ".npm", ".cargo/bin", ".vscode/extensions", "Documents", "Downloads", "notes",
)  # fmt: skip


def developer_home(home: Path) -> None:
    """A home folder as a developer's looks: dotfiles, ~/.config, 10 repositories at the
    top (3 with .vscode) and 5 more one level down."""
    for rel in _HOME_FILES:
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text("x\n")
    for rel in _HOME_FOLDERS:
        (home / rel).mkdir(parents=True, exist_ok=True)
    repos = [home / f"proj{i}" for i in range(10)] + [home / "src" / f"lib{i}" for i in range(5)]
    for index, repo in enumerate(repos):
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        if index < 3:
            (repo / ".vscode").mkdir()


async def timed_calls(tools: ToolRegistry, ctx: ToolContext, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        result = await tools.run("bash", {"command": "true"}, ctx)
        times.append((time.perf_counter() - started) * 1000)
        assert not result.is_error, result.content
    return times


def timed_plans(ctx: ToolContext, home: Path, calls: int) -> list[float]:
    """Milliseconds of `spec_for` for the home mode's context, `calls` times."""
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        spec_for(
            ctx.allowed_roots,
            ctx.denied_paths,
            ctx.env,
            True,
            ctx.workdir,
            readonly=ctx.readonly_paths,
            home=home,
        )
        times.append((time.perf_counter() - started) * 1000)
    return times


async def run(args: argparse.Namespace, folder: Path) -> dict[str, object]:
    work, state = folder / "work", folder / "state"
    work.mkdir()
    state.mkdir()
    (state / "config.toml").write_text("[matrix]\n")
    hidden = (state, state / "config.toml", *default_hidden(Path.home(), os.getuid()))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(Path.home())}
    ctx = ToolContext(
        workdir=work, allowed_roots=(work,), bash_timeout_s=120, denied_paths=hidden, env=env
    )
    home = folder / "home"
    home.mkdir()
    developer_home(home)
    home_hidden = (state, state / "config.toml", *default_hidden(home, os.getuid()))
    home_ctx = ToolContext(
        workdir=home / "proj0",
        allowed_roots=(home,),
        bash_timeout_s=120,
        denied_paths=home_hidden,
        env={**env, "HOME": str(home)},
        readonly_paths=tuple(readonly_paths(home)),
        guard_home=True,
    )
    sandboxed = check_sandbox("auto")
    modes = {
        "without": (ToolRegistry([BashTool(Confinement(Sandbox.NONE))]), ctx),
        "with": (ToolRegistry([BashTool(sandboxed)]), ctx),
        "home": (ToolRegistry([BashTool(sandboxed)]), home_ctx),
    }
    for tools, context in modes.values():  # warm-up: imports, page cache
        await timed_calls(tools, context, 5)
    timed_plans(home_ctx, home, 5)
    samples: dict[str, list[float]] = {name: [] for name in [*modes, "plan"]}
    for _ in range(args.rounds):
        for name, (tools, context) in modes.items():
            samples[name] += await timed_calls(tools, context, args.calls)
        samples["plan"] += timed_plans(home_ctx, home, args.calls)
    spec = spec_for(
        home_ctx.allowed_roots,
        home_hidden,
        home_ctx.env,
        True,
        home_ctx.workdir,
        readonly=home_ctx.readonly_paths,
        home=home,
    )
    figures: dict[str, object] = {
        "sandbox": sandboxed.describe(),
        "calls_per_mode": 0,
        "home_mode_wall": {
            "hidden": len(spec.hidden_dirs) + len(spec.hidden_files),
            "read_only": len(spec.readonly),
            "pinned": len(spec.pinned),
            "watched": len(spec.watched),
            "bwrap_options": len(bwrap_args(spec)),
        },
    }
    for name, times in samples.items():
        figures["plan_ms" if name == "plan" else f"{name}_sandbox_ms"] = {
            "median": round(statistics.median(times), 2),
            "p90": round(statistics.quantiles(times, n=10)[-1], 2),
            "p95": round(statistics.quantiles(times, n=20)[-1], 2),
            "min": round(min(times), 2),
        }
        figures["calls_per_mode"] = len(times)
    with_ms = figures["with_sandbox_ms"]
    without_ms = figures["without_sandbox_ms"]
    home_ms = figures["home_sandbox_ms"]
    assert isinstance(with_ms, dict) and isinstance(without_ms, dict)
    assert isinstance(home_ms, dict)
    figures["median_cost_ms"] = round(with_ms["median"] - without_ms["median"], 2)
    figures["home_median_cost_ms"] = round(home_ms["median"] - without_ms["median"], 2)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100, help="calls per mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "tools/bench/results/sandbox_cost.json")
    parser.add_argument("--code", default="", help="the revision measured, for a copy outside git")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dm-bench-sandbox-") as tmp:
        figures = asyncio.run(run(args, Path(tmp)))
    bwrap = subprocess.run(["bwrap", "--version"], capture_output=True, text=True, check=False)
    code = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
        check=False,
    )
    result = {
        "benchmark": "sandbox_cost",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": args.code or code.stdout.strip()[:100],
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "bwrap": bwrap.stdout.strip(),
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
