"""Whether the Claude Code engine can run here, without the network: its CLI is there, and it
is logged in (its own claude.ai or Console login) or has an API key. `claude auth status`
answers from Claude Code's own files and the environment; it sends nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatch_matrix.agent.settings import AgentSection

# The CLI the claude-code extra bundles, beside the SDK's package.
_BUNDLED = Path("_bundled") / "claude"
LOGIN_FIX = (
    "log Claude Code in as the user the daemon runs as (run `claude` once and follow its "
    "login), or give it an API key ([agent] api_key_file or ANTHROPIC_API_KEY)"
)


@dataclass(frozen=True)
class LoginCheck:
    """One doctor line about Claude Code."""

    ok: bool
    what: str
    fix: str = ""


def find_cli(package_dir: Path | None) -> str | None:
    """The bundled CLI of the installed SDK, else a `claude` on the PATH."""
    if package_dir is not None and (package_dir / _BUNDLED).is_file():
        return str(package_dir / _BUNDLED)
    return shutil.which("claude")


def judge_status(status: Mapping[str, Any] | None, version: str) -> LoginCheck:
    """The doctor line for `claude auth status --json` (None: it printed no JSON)."""
    if status is None:
        return LoginCheck(
            False, f"Claude Code {version}: its login status is unreadable", LOGIN_FIX
        )
    if not status.get("loggedIn"):
        return LoginCheck(False, f"Claude Code {version} is not logged in", LOGIN_FIX)
    method = str(status.get("authMethod") or "unknown")
    source = status.get("apiKeySource")
    paid = f"a key from {source}: billed to the API" if source else "its own login"
    return LoginCheck(True, f"Claude Code {version} logged in ({method}, {paid})")


def check(package_dir: Path | None, env: Mapping[str, str]) -> list[LoginCheck]:
    """The CLI's presence and login, each a line (blocking: run it in a thread)."""
    cli = find_cli(package_dir)
    if cli is None:
        return [
            LoginCheck(
                False,
                "Claude Code's CLI not found (the claude-code extra bundles one)",
                "reinstall with the extra: pip install 'dispatch-matrix[claude-code]'",
            )
        ]
    try:
        version = _run([cli, "--version"], env).stdout.strip().split(" ")[0] or "?"
        status = _run([cli, "auth", "status", "--json"], env)
    except (OSError, subprocess.SubprocessError) as err:
        return [LoginCheck(False, f"Claude Code's CLI at {cli} does not run: {err}", LOGIN_FIX)]
    try:
        parsed = json.loads(status.stdout)
    except ValueError:
        parsed = None
    return [judge_status(parsed if isinstance(parsed, dict) else None, version)]


def _run(argv: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=dict(env), capture_output=True, text=True, timeout=20, check=False
    )


def claude_code_env(agent: AgentSection) -> dict[str, str]:
    """What Claude Code's environment adds to the daemon's: no traffic but the model's
    (no telemetry, no update checks), and the config's API URL and key when it names them
    (else Claude Code uses its own login, or ANTHROPIC_API_KEY from the environment)."""
    env = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    if agent.base_url:
        env["ANTHROPIC_BASE_URL"] = agent.base_url
    key = agent.secret_api_key()
    if key is not None:
        env["ANTHROPIC_API_KEY"] = key.get_secret_value()
    return env
