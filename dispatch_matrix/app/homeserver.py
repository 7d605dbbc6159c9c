"""A private Synapse homeserver in a folder: configure, start, stop, register users.

Used by `dispatch-matrix init --local-homeserver` (a newcomer's first homeserver, kept
inside the state folder) and by the test suite (one throwaway homeserver per session).
Synapse runs as a child process of the interpreter that has it installed; it listens on
loopback unless told otherwise and keeps its data in SQLite beside its config.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatch_matrix.core.errors import AlreadyRunning, HomeserverError
from dispatch_matrix.store.state import StateFolder

CONFIG_NAME = "homeserver.yaml"
SECRET_NAME = "registration_shared_secret"
PID_NAME = "homeserver.pid"
# The pid of the Synapse we started (Synapse writes its own pid file only when it
# daemonizes): a run that ended without stopping it (kill -9, a hang-up on an older version)
# left it holding the port; the next start, or `tools/run`, stops it by this.
STARTED_NAME = "started.pid"

# Limits a single user's bot and phone never come near, so tests and floods are not throttled
# by the homeserver; the bot still honours 429 when a real homeserver sends one.
_RELAXED = {"per_second": 1000, "burst_count": 10000}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def synapse_python() -> str:
    """The interpreter that runs Synapse: ours if it has Synapse, else DISPATCH_SYNAPSE_PYTHON."""
    override = os.environ.get("DISPATCH_SYNAPSE_PYTHON")
    return override or sys.executable


def _yaml_value(value: Any) -> str:
    # JSON is a subset of YAML 1.2, which Synapse's loader reads; no YAML writer needed.
    return json.dumps(value)


@dataclass
class LocalSynapse:
    """A Synapse whose config and data live in `folder`."""

    folder: Path
    server_name: str = "localhost"
    host: str = "127.0.0.1"
    port: int = 8008
    relaxed_limits: bool = True
    # Keep Synapse's stock limits on room events and presence (rc_message, rc_presence)
    # while relaxing the rest: how a test measures a bot as any homeserver would treat it.
    stock_event_limits: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client-server API base URL."""
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{shown}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.folder / CONFIG_NAME

    @property
    def log_path(self) -> Path:
        return self.folder / "homeserver.log"

    # -- setup -----------------------------------------------------------------------------

    def configure(self) -> None:
        """Write the config, log config, signing key and shared secret (once)."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        secret_path = self.folder / SECRET_NAME
        if not secret_path.exists():
            _write_private(secret_path, secrets.token_urlsafe(32))
        shared_secret = secret_path.read_text().strip()
        log_config = self.folder / "log.yaml"
        log_config.write_text(_LOG_CONFIG.format(log=json.dumps(str(self.log_path))))
        settings: dict[str, Any] = {
            "server_name": self.server_name,
            "pid_file": str(self.folder / PID_NAME),
            "public_baseurl": self.url + "/",
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": [self.host],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {
                "name": "sqlite3",
                "args": {"database": str(self.folder / "homeserver.db")},
            },
            "log_config": str(log_config),
            "media_store_path": str(self.folder / "media_store"),
            "signing_key_path": str(self.folder / "signing.key"),
            "registration_shared_secret": shared_secret,
            "enable_registration": False,
            "report_stats": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "federation_domain_whitelist": [],
            "url_preview_enabled": False,
            "presence": {"enabled": True},
            "max_upload_size": "100M",
            # Synapse caches /sync responses for 2 minutes by default, which replays history
            # to a client that restarts without its token; a personal server gains nothing.
            "caches": {"sync_response_cache_duration": 0},
            # Delayed events (MSC4140): the bot's asleep notice, posted by the homeserver
            # when the computer has been quiet a while.
            "max_event_delay_duration": "24h",
            "form_secret": secrets.token_urlsafe(16),
            "macaroon_secret_key": secrets.token_urlsafe(32),
        }
        if self.relaxed_limits:
            relaxed: dict[str, Any] = {
                "rc_message": _RELAXED,
                "rc_registration": _RELAXED,
                "rc_login": {
                    "address": _RELAXED,
                    "account": _RELAXED,
                    "failed_attempts": _RELAXED,
                },
                "rc_joins": {"local": _RELAXED, "remote": _RELAXED},
                "rc_joins_per_room": _RELAXED,
                "rc_invites": {
                    "per_room": _RELAXED,
                    "per_user": _RELAXED,
                    "per_issuer": _RELAXED,
                },
                "rc_key_requests": _RELAXED,
                "rc_admin_redaction": _RELAXED,
                "rc_3pid_validation": _RELAXED,
                "rc_presence": {"per_user": _RELAXED},
                "rc_media_create": _RELAXED,
            }
            if self.stock_event_limits:
                del relaxed["rc_message"], relaxed["rc_presence"]
            settings.update(relaxed)
        text = "".join(f"{key}: {_yaml_value(value)}\n" for key, value in settings.items())
        self.config_path.write_text(text)
        self.config_path.chmod(0o600)
        if not (self.folder / "signing.key").exists():
            self._synapse("--generate-keys")

    def _synapse(self, *args: str) -> None:
        cmd = [synapse_python(), "-m", "synapse.app.homeserver", "-c", str(self.config_path)]
        done = subprocess.run(
            [*cmd, *args], cwd=self.folder, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise HomeserverError(
                f"synapse {' '.join(args)} failed: {done.stderr.strip()[-800:]}",
                fix="install it with: pip install 'dispatch-matrix[homeserver]'",
            )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> None:
        """Start Synapse and wait until its client API answers."""
        if not self.config_path.exists():
            self.configure()
        stop_leftover(self.folder)
        log = (self.folder / "homeserver.stdout").open("ab")
        cmd = [synapse_python(), "-m", "synapse.app.homeserver", "-c", str(self.config_path)]
        self.process = subprocess.Popen(
            cmd,
            cwd=self.folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        (self.folder / STARTED_NAME).write_text(f"{self.process.pid}\n")
        try:
            self._wait_until_up(self.process, timeout)
        except BaseException:
            # Ctrl-C while it starts (or it never answered): it runs in a session of its own,
            # so nothing else would stop it, and it would hold the port until the next run.
            self.stop()
            raise

    def _wait_until_up(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = _tail(self.folder / "homeserver.stdout") or _tail(self.log_path)
                raise HomeserverError(
                    f"Synapse exited with code {process.returncode} while starting: {tail}",
                    fix=f"see {self.log_path}",
                )
            if self.is_up():
                return
            time.sleep(0.1)
        raise HomeserverError(
            f"Synapse did not answer on {self.url} within {timeout:.0f}s",
            fix=f"see {self.log_path}",
        )

    def is_up(self) -> bool:
        """Whether the client API answers right now."""
        try:
            with urllib.request.urlopen(self.url + "/_matrix/client/versions", timeout=2) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self, timeout: float = 20.0) -> None:
        """Stop Synapse (SIGTERM, then SIGKILL if it hangs)."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        (self.folder / STARTED_NAME).unlink(missing_ok=True)

    # -- accounts --------------------------------------------------------------------------

    def register(self, localpart: str, password: str, admin: bool = False) -> str:
        """Register a user with the shared secret; returns the full user id."""
        secret = (self.folder / SECRET_NAME).read_text().strip()
        nonce = _request("GET", self.url + "/_synapse/admin/v1/register")["nonce"]
        body = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": _registration_mac(secret, nonce, localpart, password, admin),
        }
        reply = _request("POST", self.url + "/_synapse/admin/v1/register", body)
        return str(reply["user_id"])

    def exempt(self, user_id: str, admin_token: str) -> None:
        """Lift every rate limit for one user (the admin API's override_ratelimit with 0:
        Synapse then skips all its limiters for that user, presence included)."""
        path = f"/_synapse/admin/v1/users/{urllib.parse.quote(user_id)}/override_ratelimit"
        body = {"messages_per_second": 0, "burst_count": 0}
        _request("POST", self.url + path, body, token=admin_token)

    def admin_token(self, localpart: str = "admin") -> str:
        """An access token of a server admin (registered on first use)."""
        password = secrets.token_urlsafe(16)
        user_id = self.register(f"{localpart}-{secrets.token_hex(3)}", password, admin=True)
        body = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user_id},
            "password": password,
        }
        return str(_request("POST", self.url + "/_matrix/client/v3/login", body)["access_token"])


def stop_leftover(folder: Path, timeout: float = 20.0) -> int | None:
    """Stop a Synapse an earlier run started on this folder and left running; its pid, or
    None when there was none. Only a process whose command line names this folder's
    config is stopped: after a reboot the recorded pid may be anyone's."""
    record = folder / STARTED_NAME
    try:
        pid = int(record.read_text().strip())
    except (OSError, ValueError):
        return None
    if not _is_our_synapse(pid, folder / CONFIG_NAME):
        record.unlink(missing_ok=True)
        return None
    # Started in a session of its own: its group is Synapse and nothing else.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    # Not our child (the run that started it is gone): no wait() to block on, so look.
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    record.unlink(missing_ok=True)
    return pid


def stop_after_run(state_dir: Path, folder: Path) -> int | None:
    """What `tools/run` does once its bot has exited: stop the private homeserver a bot
    killed outright left running (its pid, or None). Not while a bot still runs on the
    state folder: a second `tools/run` whose bot refused to start twice would otherwise
    stop the first one's homeserver under it."""
    state = StateFolder(state_dir)
    if not state.root.is_dir():
        return None
    try:
        state.lock()
    except AlreadyRunning:
        return None
    try:
        return stop_leftover(folder)
    finally:
        state.unlock()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_synapse(pid: int, config: Path) -> bool:
    """Whether the process runs Synapse on this config (Linux's /proc, else `ps`)."""
    proc = Path(f"/proc/{pid}/cmdline")
    try:
        if proc.parent.exists():
            command = proc.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        else:
            shown = subprocess.run(
                ["ps", "-o", "command=", "-p", str(pid)],
                capture_output=True,
                text=True,
                check=False,
            )
            command = shown.stdout
    except OSError:
        return False
    return "synapse.app.homeserver" in command and str(config) in command


def _registration_mac(secret: str, nonce: str, localpart: str, password: str, admin: bool) -> str:
    parts = [nonce, localpart, password, "admin" if admin else "notadmin"]
    message = b"\x00".join(part.encode() for part in parts)
    return hmac.new(secret.encode(), message, hashlib.sha1).hexdigest()


def _request(
    method: str, url: str, body: dict[str, Any] | None = None, token: str | None = None
) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as reply:
            return dict(json.loads(reply.read()))
    except urllib.error.HTTPError as err:
        raise HomeserverError(
            f"{method} {url} failed: {err.code} {err.read().decode(errors='replace')[:300]}",
            fix="check the homeserver log",
        ) from err


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _tail(path: Path, chars: int = 600) -> str:
    try:
        return path.read_text(errors="replace")[-chars:].strip()
    except OSError:
        return ""


_LOG_CONFIG = """\
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.handlers.RotatingFileHandler
    formatter: precise
    filename: {log}
    maxBytes: 10485760
    backupCount: 2
    filters: [context]
    encoding: utf8
filters:
  context:
    (): synapse.logging.context.LoggingContextFilter
    request: ""
loggers:
  synapse.storage.SQL:
    level: WARNING
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
"""
