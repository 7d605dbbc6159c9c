"""`dispatch-matrix init`: write a commented config after checking the login works.

Two ways in: point at an existing homeserver and bot account (flags, or questions on a
terminal), or `--local-homeserver`, which sets up a private Synapse in the state folder,
registers the bot and an owner account, and prints how to sign in from Element.
The login made to check the credentials is kept as the bot's device for life.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dispatch_matrix.app.config import DEFAULT_MODEL, validate_data
from dispatch_matrix.app.connect import REMOVAL_META, retire_device
from dispatch_matrix.app.homeserver import LocalSynapse, free_port
from dispatch_matrix.app.reach import probe
from dispatch_matrix.core.errors import ConfigError, HomeserverError, LoginError, StateError
from dispatch_matrix.core.ids import UserID
from dispatch_matrix.identity.crosssign import ensure_identity
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.direct import CANNOT_OPEN, OpenedDM, open_owner_dms, why_not_opened
from dispatch_matrix.matrix.discovery import discover, server_of
from dispatch_matrix.store import Connection, Database
from dispatch_matrix.store.state import StateFolder, write_private

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
    # Open the encrypted DM with each owner (the owner only accepts the invite).
    dm: bool = True


def ask_missing(
    answers: InitAnswers,
    ask: Callable[[str], str],
    ask_secret: Callable[[str], str],
    find: Callable[[str], str | None] | None = None,
) -> None:
    """Fill in what flags left out by asking (only called on a terminal). The homeserver is
    asked only when the bot's id does not lead to it (`find`: its well-known document)."""
    if not answers.user_id:
        answers.user_id = ask("Bot user id (e.g. @mybot:example.org): ").strip()
    if not answers.homeserver:
        server = server_of(answers.user_id or "")
        found = (find or well_known)(server) if server else None
        if found is not None:
            answers.homeserver = found
        else:
            default = f"https://{server}" if server else ""
            shown = f"[{default}]" if default else "(e.g. https://matrix.example.org)"
            answers.homeserver = ask(f"Homeserver URL {shown}: ").strip() or default
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
    try:
        state = StateFolder(path.parent.resolve()).ensure()
    except StateError as err:
        # Its fix names [store] path, a key of a config init has not written yet.
        raise StateError(
            err.message,
            fix="give --config a path in a folder you can write: the state folder is the "
            "config's folder",
        ) from None
    # A daemon running on this folder uses its device's keys: a second client on the same
    # crypto store (init --force restores that device) would fork its one-time keys.
    state.lock()
    homeserver: LocalSynapse | None = None
    owner_password = None
    if answers.local:
        homeserver, owner_password = _setup_local(answers, state, say)
    try:
        # Everything from here to the login, the private homeserver running throughout:
        # whatever ends it (a refusal, Ctrl-C) stops that homeserver with it.
        device, dms = _check_and_log_in(answers, state, path, homeserver is None, say)
    finally:
        if homeserver is not None:
            homeserver.stop()
    write_private(state.root / PASSWORD_FILE, answers.password or "")
    path.write_text(render_config(answers, path))
    path.chmod(0o600)
    say(f"Wrote {path}")
    if answers.local and owner_password is not None:
        _explain_local(answers, owner_password, state, say, invited=bool(dms))
    say(explain_next(answers, device, dms, path))
    return path


def _check_and_log_in(
    answers: InitAnswers,
    state: StateFolder,
    path: Path,
    probe_first: bool,
    say: Callable[[str], None],
) -> tuple[str, list[OpenedDM]]:
    if not answers.homeserver:
        _discover_homeserver(answers, say)
    missing = _missing(answers)
    if missing:
        raise ConfigError(
            "init", f"missing {', '.join(missing)}", "pass them as flags, or run init on a terminal"
        )
    # What `run` would refuse is refused now, before a login leaves a device behind.
    check_answers(answers, path)
    if probe_first:
        reach = asyncio.run(probe(str(answers.homeserver)))
        if not reach.ok:
            raise HomeserverError(reach.problem, fix=f"{reach.fix}; then run init again")
    say(f"Checking the login of {answers.user_id} at {answers.homeserver} …")
    try:
        return asyncio.run(_login_and_open_dms(answers, state, say))
    except LoginError as err:
        # The daemon's fix names the config's keys; init has written no config yet.
        raise LoginError(
            err.message,
            fix="check the bot's user id and password (--password-file, or the prompt); "
            "then run init again",
        ) from None


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
        # Each password is kept before its account is made: an init stopped after that
        # (Ctrl-C) is run again with the same accounts, which a lost password would lock.
        bot_password = _kept_password(state.root / PASSWORD_FILE, 24)
        owner_password = _kept_password(state.root / OWNER_PASSWORD_FILE, 12)
        answers.user_id = _register(homeserver, answers.bot_name, bot_password, say)
        owner = _register(homeserver, answers.owner_name, owner_password, say)
    except BaseException:
        # A refusal or Ctrl-C: the homeserver it started must not outlive init.
        homeserver.stop()
        raise
    answers.homeserver = homeserver.url
    answers.password = bot_password
    answers.owners = [owner]
    answers.local_port = port
    return homeserver, owner_password


def _kept_password(path: Path, length: int) -> str:
    """The password an earlier init of this folder kept, or a new one, kept now (0600)."""
    with contextlib.suppress(OSError):
        kept = path.read_text().strip()
        if kept:
            return kept
    password = secrets.token_urlsafe(length)
    write_private(path, password)
    return password


def _register(
    homeserver: LocalSynapse, localpart: str, password: str, say: Callable[[str], None]
) -> str:
    try:
        user_id = homeserver.register(localpart, password)
    except HomeserverError as err:
        if "M_USER_IN_USE" not in err.message:
            raise
        # An earlier init of this folder made it (it was stopped before 'Wrote'), with the
        # password kept beside: the login that follows checks that it still matches.
        user_id = f"@{localpart}:{homeserver.server_name}"
        say(f"  {user_id} exists (made by an earlier init here); its kept password is used")
        return user_id
    say(f"  registered {user_id}")
    return user_id


def well_known(server: str) -> str | None:
    """The homeserver `server`'s well-known document names, if it has one."""
    return asyncio.run(discover(server))


def _discover_homeserver(answers: InitAnswers, say: Callable[[str], None]) -> None:
    """No --homeserver: the one serving the bot's user id, as clients find it (else the
    server name itself, which serves many homeservers)."""
    server = server_of(answers.user_id or "")
    if server is None:
        return
    answers.homeserver = well_known(server) or f"https://{server}"
    say(f"Homeserver of {server}: {answers.homeserver}")


async def _login_and_open_dms(
    answers: InitAnswers, state: StateFolder, say: Callable[[str], None]
) -> tuple[str, list[OpenedDM]]:
    """Check the login (its device is kept for the bot's life), then cross-sign that device
    and open the encrypted DM with each owner; returns the device id and the DMs."""
    db = Database.open(state.db_path)
    client = MatrixClient(str(answers.homeserver), UserID(str(answers.user_id)), state, db)
    try:
        session = await client.connect(answers.password)
        say(f"  ok: logged in as device {session.device_id}; kept for the bot's life.")
        if client.replaced_device is not None:
            await _retire_lost(client, db, client.replaced_device, answers.password, say)
        if not answers.dm:
            return session.device_id, []
        say("Cross-signing the bot's device and opening the encrypted DM …")
        try:
            # Cross-signed before any room exists (a TrustError or a browser approval
            # stops here, with no room made).
            await client.publish_device_keys()
            await ensure_identity(client, state, answers.password)
            dms = await open_owner_dms(client, db, answers.owners)
        except CANNOT_OPEN as err:
            say(why_not_opened(err))
            return session.device_id, []
        for dm in dms:
            made = "invited" if dm.created else "already has its DM"
            say(f"  {dm.owner} {made}: {dm.room_id}")
        return session.device_id, dms
    finally:
        await client.close()
        db.close()


async def _retire_lost(
    client: MatrixClient, db: Connection, old: str, password: str | None, say: Callable[[str], None]
) -> None:
    """A device this state folder could not use (its keys lost or wedged) was replaced by a
    new login: delete the old one from the account, as `run` does, so the owners' clients
    stop encrypting to it; `run` tells the rooms (`retire_device` keeps that for it)."""
    await retire_device(client, db, old, password)
    removal = db.get_meta(REMOVAL_META)
    if removal:
        say(f"  the old device {old} (its keys were lost here) is still on the account: {removal}")
    else:
        say(f"  the old device {old} (its keys were lost here) was deleted from the account.")


def explain_next(answers: InitAnswers, device: str, dms: list[OpenedDM], path: Path) -> str:
    """What to do after init: accept, verify (optional), run."""
    run = f"{command_name()} run --config {path}"
    steps = []
    # With a private homeserver, its sign-in steps (printed just above) end with the invite.
    if dms and not answers.local:
        who = ", ".join(dm.owner for dm in dms)
        steps.append(
            f"On your phone, in Element (signed in as {who}): accept the invite from "
            f"{answers.user_id}. It is an encrypted DM; the bot says hello there once it runs."
        )
    elif not answers.local:
        steps.append(f"In Element, as an owner: start a chat with {answers.user_id}.")
    steps.append(
        f"Optional, to see it as verified: the bot is {answers.user_id}, device {device}. "
        f"With the bot stopped (Ctrl-C), run `{command_name()} pair --config {path}` here, "
        "then in Element open the bot's profile → Verify, and compare the emoji."
    )
    # tools/run starts the bot right after init: this step is for init run by hand.
    steps.append(f"Run the bot (tools/run does it for you): {run}")
    numbered = "\n".join(f"  {n}. {step}" for n, step in enumerate(steps, 1))
    return f"\nNext:\n{numbered}"


def _explain_local(
    answers: InitAnswers,
    owner_password: str,
    state: StateFolder,
    say: Callable[[str], None],
    *,
    invited: bool = False,
) -> None:
    say(
        "\nYour private homeserver is ready. To command the bot from Element:\n"
        f"  1. Open Element (app or https://app.element.io) and choose 'Sign in',\n"
        f"     edit the homeserver to {answers.homeserver}\n"
        f"  2. Sign in as {answers.owners[0]} with password {owner_password}\n"
        f"     (also kept in {state.root / OWNER_PASSWORD_FILE})\n"
        + (
            f"  3. Accept the invite from {answers.user_id} (an encrypted DM) and send a message.\n"
            if invited
            else f"  3. Start a chat with {answers.user_id} and send it a message.\n"
        )
        + "This homeserver listens on this computer only. A phone reaches a homeserver only\n"
        "over the network with TLS: set one up with --listen 0.0.0.0 in a new, empty state\n"
        "folder (init cannot change this one in place: its accounts exist) behind a reverse\n"
        "proxy with a certificate or on a private network (Tailscale and the like), or use\n"
        "the Matrix account you already have: init --user-id @bot:your.server --owner @you:…"
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
