"""`dispatch-matrix init`: write a commented config after checking the login works.

Two ways in: point at an existing homeserver and bot account (flags, or questions on a
terminal), or `--local-homeserver`, which sets up a private Synapse in the state folder,
registers the bot and an owner account, and prints how to sign in from Element.
The login made to check the credentials is kept as the bot's device for life.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .config import DEFAULT_MODEL, validate_data
from .errors import ConfigError, DispatchError, HomeserverError
from .homeserver import LocalSynapse, free_port
from .ids import UserID
from .matrix.client import MatrixClient
from .reach import probe
from .state import StateFolder, write_private
from .store import Database

PASSWORD_FILE = "secrets/matrix-password"
OWNER_PASSWORD_FILE = "secrets/owner-password"


@dataclass
class InitAnswers:
    """What `init` needs to know, from flags or questions."""

    config_path: Path
    homeserver: str | None = None
    user_id: str | None = None
    password: str | None = None
    owners: list[str] = field(default_factory=list)
    model: str = DEFAULT_MODEL
    workdir: str = "~"
    allowed_roots: list[str] = field(default_factory=lambda: ["~"])
    local: bool = False
    local_host: str = "127.0.0.1"
    local_port: int | None = None
    bot_name: str = "dispatch"
    owner_name: str = "me"
    force: bool = False


def ask_missing(
    answers: InitAnswers, ask: Callable[[str], str], ask_secret: Callable[[str], str]
) -> None:
    """Fill in what flags left out by asking (only called on a terminal)."""
    if not answers.homeserver:
        answers.homeserver = ask("Homeserver URL (e.g. https://matrix.example.org): ").strip()
    if not answers.user_id:
        answers.user_id = ask("Bot user id (e.g. @mybot:example.org): ").strip()
    if not answers.password:
        answers.password = ask_secret(f"Password of {answers.user_id}: ")
    if not answers.owners:
        raw = ask("Owner user id(s), comma-separated (e.g. @me:example.org): ")
        answers.owners = [part.strip() for part in raw.split(",") if part.strip()]


def _missing(answers: InitAnswers) -> list[str]:
    flags = {
        "--homeserver": answers.homeserver,
        "--user-id": answers.user_id,
        "--password (or --password-file)": answers.password,
        "--owner": answers.owners,
    }
    return [flag for flag, value in flags.items() if not value]


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def init(answers: InitAnswers, say: Callable[[str], None]) -> Path:
    """Check the login, save it, write the config; returns the config path."""
    path = answers.config_path
    if path.exists() and not answers.force:
        raise ConfigError(str(path), "already exists", "pass --force to overwrite it")
    state = StateFolder(path.parent.resolve()).ensure()
    homeserver: LocalSynapse | None = None
    owner_password = None
    if answers.local:
        homeserver, owner_password = _setup_local(answers, state, say)
    missing = _missing(answers)
    if missing:
        raise ConfigError(
            "init", f"missing {', '.join(missing)}", "pass them as flags, or run init on a terminal"
        )
    # What `run` would refuse is refused now, before a login leaves a device behind.
    check_answers(answers, path)
    if homeserver is None:
        reach = asyncio.run(probe(str(answers.homeserver)))
        if not reach.ok:
            raise HomeserverError(reach.problem, fix=f"{reach.fix}; then run init again")
    try:
        say(f"Checking the login of {answers.user_id} at {answers.homeserver} …")
        device = asyncio.run(_check_login(answers, state))
        say(f"  ok: logged in as device {device}; this device is kept for the bot's life.")
    finally:
        if homeserver is not None:
            homeserver.stop()
    write_private(state.root / PASSWORD_FILE, answers.password or "")
    path.write_text(render_config(answers, path))
    path.chmod(0o600)
    say(f"Wrote {path}")
    if answers.local and owner_password is not None:
        _explain_local(answers, owner_password, state, say)
    say(f"Next: {command_name()} run --config {path}")
    return path


# The flag that gives each config key `init` writes from an answer.
_FLAGS = {
    "matrix.homeserver": "--homeserver",
    "matrix.user_id": "--user-id",
    "matrix.owners": "--owner",
    "agent.model": "--model",
    "agent.workdir": "--workdir",
    "agent.allowed_roots": "--allowed-root",
}


def check_answers(answers: InitAnswers, path: Path) -> None:
    """Judge the config init would write with the model `run` loads it with; a
    ConfigError naming the flag to correct when it would be refused."""
    data = tomllib.loads(render_config(answers, path))
    try:
        validate_data(data)
    except ConfigError as err:
        flag = next((f for key, f in _FLAGS.items() if err.key.startswith(key)), None)
        if flag is None:
            raise
        raise ConfigError(flag, err.problem, f"give {flag} again, in full") from None


def command_name() -> str:
    """How to call this command again: `dispatch-matrix` when that is on PATH, else the path
    it was started by (a venv that is not activated: `.venv/bin/dispatch-matrix`)."""
    started = Path(sys.argv[0])
    found = shutil.which("dispatch-matrix")
    if found is not None and (started.name != "dispatch-matrix" or _same(found, started)):
        return "dispatch-matrix"
    return str(started) if started.name == "dispatch-matrix" else "dispatch-matrix"


def _same(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).samefile(b)
    except OSError:
        return False


def _setup_local(
    answers: InitAnswers, state: StateFolder, say: Callable[[str], None]
) -> tuple[LocalSynapse, str]:
    port = answers.local_port or (8008 if _port_free(answers.local_host, 8008) else free_port())
    folder = state.root / "homeserver"
    homeserver = LocalSynapse(folder=folder, host=answers.local_host, port=port)
    say(f"Setting up a private Synapse homeserver in {folder} …")
    homeserver.configure()
    say(f"Starting it on {homeserver.url} …")
    homeserver.start()
    try:
        bot_password = secrets.token_urlsafe(24)
        owner_path = state.root / OWNER_PASSWORD_FILE
        owner_password = (
            owner_path.read_text().strip() if owner_path.exists() else secrets.token_urlsafe(12)
        )
        answers.user_id = _register(homeserver, answers.bot_name, bot_password, say)
        owner = _register(homeserver, answers.owner_name, owner_password, say)
        write_private(owner_path, owner_password)
    except DispatchError:
        homeserver.stop()
        raise
    answers.homeserver = homeserver.url
    answers.password = bot_password
    answers.owners = [owner]
    answers.local_port = port
    return homeserver, owner_password


def _register(
    homeserver: LocalSynapse, localpart: str, password: str, say: Callable[[str], None]
) -> str:
    user_id = homeserver.register(localpart, password)
    say(f"  registered {user_id}")
    return user_id


async def _check_login(answers: InitAnswers, state: StateFolder) -> str:
    db = Database.open(state.db_path)
    client = MatrixClient(str(answers.homeserver), UserID(str(answers.user_id)), state, db)
    try:
        session = await client.connect(answers.password)
        return session.device_id
    finally:
        await client.close()
        db.close()


def _explain_local(
    answers: InitAnswers, owner_password: str, state: StateFolder, say: Callable[[str], None]
) -> None:
    say(
        "\nYour private homeserver is ready. To command the bot from Element:\n"
        f"  1. Open Element (app or https://app.element.io) and choose 'Sign in',\n"
        f"     edit the homeserver to {answers.homeserver}\n"
        f"  2. Sign in as {answers.owners[0]} with password {owner_password}\n"
        f"     (also kept in {state.root / OWNER_PASSWORD_FILE})\n"
        f"  3. Start a chat with {answers.user_id} and send it a message.\n"
        "The homeserver listens on this computer only. For a phone on your network, set one\n"
        "up with --listen 0.0.0.0 in a new, empty state folder (init cannot change this one\n"
        "in place: its accounts exist), and put it behind TLS for anything else."
    )


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(f'"{value}"' for value in values) + "]"


def render_config(answers: InitAnswers, path: Path) -> str:
    """The commented config file text."""
    local = ""
    if answers.local:
        local = f"""
[local_homeserver]
# A private Synapse in the state folder; `run` starts and stops it with the bot.
enabled = true
folder = "homeserver"
host = "{answers.local_host}"
port = {answers.local_port}
"""
    limits = ""
    if answers.local:
        limits = (
            "# The private homeserver does not rate-limit the bot; on one that does (any "
            "other),\n# leave this out: the bot then keeps its decorations within Synapse's "
            "stock limits.\nsend_rate_per_s = 0\n"
        )
    return f"""\
# dispatch-matrix configuration. Every key is documented in README.md.
# Environment overrides: DISPATCH_<SECTION>__<KEY>, e.g. DISPATCH_MATRIX__PASSWORD.

[matrix]
homeserver = "{answers.homeserver}"
user_id = "{answers.user_id}"
# The password is only needed to log in again if the saved login is revoked.
# Kept in a private file beside this one rather than inline.
password_file = "{PASSWORD_FILE}"
# Only these users can command the bot, and only from encrypted messages.
owners = {_toml_list(answers.owners)}
{limits}
[agent]
model = "{answers.model}"
# Where shell commands start, and the folders the tools may touch.
workdir = "{answers.workdir}"
allowed_roots = {_toml_list(answers.allowed_roots)}
# The API key comes from ANTHROPIC_API_KEY unless set here (api_key or api_key_file).

[permissions]
# Claude Code's rule syntax: deny beats ask beats allow; anything unmatched asks.
allow = ["Read", "Glob", "Grep"]
ask = []
deny = []

[store]
# The state folder (ledger, crypto store, keys, logs), relative to this file.
path = "."

[schedule]
# Your time zone for reminders and schedules (empty: this machine's), e.g. "Europe/Berlin".
timezone = ""
# A daily check-in digest at this time of day, e.g. "18:30" (empty: none; !digest any time).
digest_at = ""
{local}
[log]
level = "info"
"""
