"""What `run` refuses before it connects, in one place: `run` raises the first problem
before it touches the homeserver, and `doctor` lists them all, so `doctor` never calls
valid a config that `run` rejects, and no config error comes after "connected".

Beyond what loading the config checks: the permission rules, the time zone, the API key
(or the stand-in `tools/run` gives the bot), and a state folder that is missing although
this bot's login exists in another one nearby (a mistyped [store] path, which would log in
a second device).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Mapping
from pathlib import Path

from dispatch_matrix.app.config import Config
from dispatch_matrix.core.errors import ConfigError, DispatchError, StateError
from dispatch_matrix.permissions.rules import parse_rules
from dispatch_matrix.schedule.zones import owner_zone
from dispatch_matrix.store.state import StateFolder

# Written by tools/run beside the config when it starts the stand-in Messages API.
STAND_IN_FILE = "stand-in-api.url"
_KEY_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")


def problems(config: Config, env: Mapping[str, str], home: Path) -> list[DispatchError]:
    """Every problem `run` would meet before connecting; empty when there is none."""
    found: list[DispatchError] = []
    workdir = config.agent.workdir.expanduser()
    for name in ("allow", "ask", "deny"):
        rules = list(getattr(config.permissions, name))
        try:
            parse_rules(rules, name, home, workdir)
        except ConfigError as err:
            found.append(err)
    try:
        owner_zone(config.schedule.timezone)
    except ConfigError as err:
        found.append(err)
    key = api_key_problem(config, env)
    if key is not None:
        found.append(key)
    state = state_problem(config)
    if state is not None:
        found.append(state)
    return found


def api_key_problem(config: Config, env: Mapping[str, str]) -> ConfigError | None:
    """No API key in the config nor in the environment: the SDK would fail at the first
    task, after the bot said it was ready."""
    if config.agent.secret_api_key() is not None or any(env.get(v) for v in _KEY_VARIABLES):
        return None
    if config.agent.engine == "claude-code":
        return None  # Claude Code's own login may stand in for a key; doctor checks it

    return ConfigError(
        "agent.api_key",
        "no Anthropic API key (ANTHROPIC_API_KEY is not set)",
        "set ANTHROPIC_API_KEY, or [agent] api_key_file; to try the bot without a key, "
        "tools/run starts a local stand-in that echoes",
    )


def stand_in_url(config: Config) -> str | None:
    """The stand-in Messages API tools/run last gave the bot, if it did."""
    for folder in _config_folders(config):
        try:
            return (folder / STAND_IN_FILE).read_text().strip() or None
        except OSError:
            continue
    return None


def state_problem(config: Config) -> StateError | None:
    """The state folder is missing while a folder beside the config holds this bot's
    login: [store] path is mistyped, and `run` would log in a second device."""
    expected = config.state_dir
    if expected.is_dir():
        return None
    for folder in _neighbours(config):
        if folder.resolve() != expected.resolve() and _holds_login(folder, config):
            return StateError(
                f"the state folder {expected} does not exist, but {folder} holds the login of "
                f"{config.matrix.user_id}",
                fix=f"set [store] path to {folder} (a new folder would log in a second device)",
            )
    return None


def _config_folders(config: Config) -> list[Path]:
    folders = [config.state_dir]
    if config.source is not None:
        folders.append(config.source.parent)
    return folders


def _neighbours(config: Config) -> list[Path]:
    """The folders a state folder is usually in: the config's own, and those beside it."""
    if config.source is None:
        return []
    base = config.source.parent
    try:
        below = sorted(p for p in base.iterdir() if p.is_dir())
    except OSError:
        below = []
    return [base, *below]


def _holds_login(folder: Path, config: Config) -> bool:
    db_path = StateFolder(folder).db_path
    if not db_path.is_file():
        return False
    try:
        # Read-only, and no Database: opening one would migrate a ledger that is not ours.
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT user_id FROM session WHERE id = 1").fetchone()
    except sqlite3.Error:
        return False
    return row is not None and row[0] == config.matrix.user_id
