"""`dispatch-matrix doctor`: a checklist of what the daemon needs, each failure with its fix.

Each check prints as it finishes and has a time limit of its own, so a homeserver that is
down costs seconds and says so, not minutes of silence. The config is judged by the same
function `run` uses before it connects (`preflight`).

Doctor only reads: it never logs in (which would make a new device), never writes the
ledger, and never prints a secret.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatch_matrix.app import preflight
from dispatch_matrix.app.config import Config, load_config
from dispatch_matrix.app.reach import explain, kind_of, probe
from dispatch_matrix.core import terminal
from dispatch_matrix.core.errors import ConfigError, DispatchError, StateError
from dispatch_matrix.matrix.asleep import SUPPORT_META, doctor_line
from dispatch_matrix.matrix.texts import exemption_hint
from dispatch_matrix.queue.awake import keep_awake_check
from dispatch_matrix.store import Database
from dispatch_matrix.store.state import StateFolder
from dispatch_matrix.voice.doctor import voice_checks

# Each check's time limit: a network check gets 10 s (and says so when it runs out).
NETWORK_S = 10.0
LOCAL_S = 20.0
MCP_S = 60.0


@dataclass(frozen=True)
class Check:
    """One line of the checklist; `skipped` is neither a pass nor a failure."""

    ok: bool
    what: str
    fix: str = ""
    skipped: bool = False

    def line(self) -> str:
        """The check as printed: its mark, what it found, the fix when it failed. Each part
        is one line however it came (a homeserver's or a connector's words among them)."""
        mark = "–" if self.skipped else "✓" if self.ok else "✗"
        return f"{mark} {terminal.safe(self.what)}" + (
            f"\n    fix: {terminal.safe(self.fix)}" if self.fix and not self.ok else ""
        )


class Report:
    """Prints each check as it comes, and counts them."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say
        self.passed = 0
        self.failed = 0

    def add(self, *checks: Check) -> None:
        for check in checks:
            self._say(check.line())
            if not check.skipped:
                self.passed += check.ok
                self.failed += not check.ok

    async def run(
        self, what: str, check: Callable[[], Awaitable[list[Check]]], limit: float
    ) -> list[Check]:
        """Run one check within `limit` seconds; its lines are printed at once."""
        try:
            checks = await asyncio.wait_for(check(), limit)
        except TimeoutError:
            checks = [Check(False, f"{what}: no answer within {limit:g} s", _TIMEOUT_FIX)]
        self.add(*checks)
        return checks

    def end(self) -> int:
        total = self.passed + self.failed
        self._say(
            f"\n{self.passed} passed, {self.failed} failed"
            if self.failed
            else (f"\nall {total} checks passed")
        )
        return 1 if self.failed else 0


_TIMEOUT_FIX = "check the network and that the server is up; then run doctor again"


def run_doctor(
    config_path: Path,
    say: Callable[[str], None],
    check_api: bool = True,
    env: Mapping[str, str] | None = None,
) -> int:
    """Print the checklist, each line as soon as it is known; 0 when every check passed.
    `env` is the environment the bot would run with (its API key)."""
    return asyncio.run(_doctor(config_path, say, check_api, dict(env or {})))


async def _doctor(
    config_path: Path, say: Callable[[str], None], check_api: bool, env: dict[str, str]
) -> int:
    report = Report(say)
    try:
        config = load_config(config_path)
    except ConfigError as err:
        report.add(Check(False, f"config {config_path}: {err.message}", err.fix or ""))
        return report.end()
    found = preflight.problems(config, env, Path.home())
    stand_in = preflight.stand_in_url(config)
    key_missing = any(isinstance(p, ConfigError) and p.key == "agent.api_key" for p in found)
    if key_missing and stand_in is not None:
        # What tools/run does: the bot gets the stand-in's address and key, doctor does not.
        found = [p for p in found if not (isinstance(p, ConfigError) and p.key == "agent.api_key")]
    if found:
        report.add(*(Check(False, p.message, p.fix or "") for p in found))
    else:
        report.add(Check(True, f"config valid ({config.source})"))
    if not any(isinstance(p, StateError) for p in found):
        report.add(*_state(config))
    report.add(*_rate_limits(config))
    await report.run("sandbox", _in_thread(lambda: [_sandbox(config)]), LOCAL_S)
    report.add(Check(*keep_awake_check(config.agent.keep_awake)))
    reach = await report.run("homeserver", lambda: _homeserver(config), NETWORK_S + 5)
    reachable = bool(reach) and reach[0].ok
    await report.run("login", lambda: _login(config, reachable), NETWORK_S)
    await report.run("crypto store", _in_thread(lambda: _crypto_store(config)), LOCAL_S)
    voice = _in_thread(lambda: [Check(*line) for line in voice_checks(config.voice)])
    await report.run("voice", voice, LOCAL_S)
    if check_api and config.agent.engine == "claude-code":
        await report.run("Claude Code", lambda: _claude_code(config, env), LOCAL_S + 25)
    elif check_api and key_missing and stand_in is not None:
        report.add(_stand_in(stand_in))
    elif check_api and not key_missing:
        await report.run("Messages API", lambda: _api(config, env), NETWORK_S + 10)
    if config.mcp.enabled:
        await report.run("MCP servers", lambda: _mcp(config), MCP_S)
    return report.end()


def _in_thread(work: Callable[[], list[Check]]) -> Callable[[], Awaitable[list[Check]]]:
    """A blocking check run off the loop, so its time limit holds."""

    async def run() -> list[Check]:
        return await asyncio.to_thread(work)

    return run


async def _mcp(config: Config) -> list[Check]:
    from dispatch_matrix.connectors.checks import check_servers

    return [Check(ok, what, fix) for ok, what, fix in await check_servers(config)]


def _stand_in(url: str) -> Check:
    return Check(
        True,
        f"no Anthropic API key: tools/run gives the bot its local stand-in Messages API at "
        f"{url} (it echoes; it runs while tools/run does). For Claude, set ANTHROPIC_API_KEY",
    )


def _state(config: Config) -> list[Check]:
    state = StateFolder(config.state_dir)
    if not state.root.is_dir():
        return [
            Check(
                False,
                f"state folder {state.root} is missing",
                "run `dispatch-matrix init` or set [store] path",
            )
        ]
    problems = state.privacy_problems()
    if problems:
        return [
            Check(
                False,
                f"state folder not private: {'; '.join(problems[:3])}",
                f"chmod -R go-rwx {state.root}",
            )
        ]
    return [Check(True, f"state folder private (0700/0600): {state.root}")]


def _rate_limits(config: Config) -> list[Check]:
    """Whether the homeserver has been refusing the bot's events (429s the daemon counted)."""
    db_path = StateFolder(config.state_dir).db_path
    if not db_path.exists():
        return []
    try:
        db = Database.open(db_path)
    except StateError as err:
        # The ledger's own check: a newer schema, or a file that is no database.
        return [Check(False, err.message, err.fix or "")]
    try:
        count = int(db.get_meta("rate_limited_count") or "0")
        last = db.get_meta("rate_limited_last")
        asleep = Check(*doctor_line(config.matrix.asleep_notice, db.get_meta(SUPPORT_META)))
    finally:
        db.close()
    if count == 0:
        return [Check(True, "the homeserver has not rate-limited the bot"), asleep]
    return [
        asleep,
        Check(
            False,
            f"the homeserver rate-limited the bot {count} times (last {last}); answers wait "
            "behind its limit",
            exemption_hint(config.matrix.homeserver, config.matrix.user_id),
        ),
    ]


def _sandbox(config: Config) -> Check:
    """Which OS sandbox wraps shell commands; when it cannot start, why and the fix."""
    from dispatch_matrix.app.agent_kit import limits
    from dispatch_matrix.sandbox.caches import default_folder
    from dispatch_matrix.sandbox.choice import check_sandbox

    try:
        found = check_sandbox(
            config.agent.sandbox, network=config.agent.sandbox_network, limits=limits(config)
        )
    except ConfigError as err:
        return Check(False, f"sandbox: {err.problem}", err.fix or "")
    if not found.active:
        return Check(
            True,
            'sandbox: none (agent.sandbox = "none": shell commands run unconfined; '
            '"auto" confines them)',
        )
    # Where the calls' cargo, Go, npm, Maven and pre-commit caches go (sandbox/caches.py):
    # an operator looking for the disk space, or for what a task fetched, finds it here.
    caches = default_folder(Path.home())
    return Check(
        True,
        f"sandbox: {found.describe()}; the package caches of its calls: {caches} (delete it"
        " while no task runs to free the space or drop what tasks fetched)",
    )


async def _homeserver(config: Config) -> list[Check]:
    url = config.matrix.homeserver
    reach = await probe(url, NETWORK_S)
    if reach.ok:
        return [Check(True, f"homeserver reachable: {url} (spec up to {reach.latest})")]
    fix = reach.fix
    if config.local_homeserver.enabled:
        fix = "the private homeserver runs while `dispatch-matrix run` does: start it"
    return [Check(False, reach.problem, fix)]


def _saved_session(config: Config) -> Any:
    state = StateFolder(config.state_dir)
    if not state.db_path.exists():
        return None
    db = Database.open(state.db_path)
    try:
        return db.session()
    finally:
        db.close()


async def _login(config: Config, reachable: bool) -> list[Check]:
    """Whether the saved login is still accepted (one request, no retries)."""
    try:
        session = _saved_session(config)
    except StateError:
        # Said once, by the ledger's own line above.
        return [Check(False, "login not checked: the ledger cannot be read", skipped=True)]
    if session is None:
        return [Check(False, "no saved login yet", "run `dispatch-matrix init` or `run` once")]
    if not reachable:
        return [Check(False, "login not checked: the homeserver is unreachable", skipped=True)]
    from nio import AsyncClient, AsyncClientConfig, WhoamiResponse

    # No crypto store: whoami needs none, and opening it twice is the other check's job.
    client = AsyncClient(
        session.homeserver,
        session.user_id,
        device_id=session.device_id,
        config=AsyncClientConfig(
            encryption_enabled=False, max_timeouts=0, request_timeout=NETWORK_S
        ),
    )
    try:
        client.access_token = session.access_token
        try:
            reply = await client.whoami()
        except Exception as err:  # noqa: BLE001 - doctor reports every failure as a line
            why = explain(session.homeserver, kind_of(err), detail=str(err))
            return [Check(False, f"login not checked: {why.problem}", why.fix)]
        if isinstance(reply, WhoamiResponse):
            return [Check(True, f"login valid: {session.user_id}, device {session.device_id}")]
        return [
            Check(
                False,
                f"the homeserver refused the saved login ({reply.status_code})",
                "the next `run` logs in again with the password; check it is set",
            )
        ]
    finally:
        await client.close()


def _crypto_store(config: Config) -> list[Check]:
    try:
        session = _saved_session(config)
    except StateError:
        return []  # the ledger's own line says why
    if session is None:
        return []
    state = StateFolder(config.state_dir)
    from nio import AsyncClient, AsyncClientConfig

    client = AsyncClient(
        session.homeserver,
        session.user_id,
        device_id=session.device_id,
        store_path=str(state.crypto_dir),
        config=AsyncClientConfig(encryption_enabled=True, pickle_key=state.pickle_key()),
    )
    client.user_id = session.user_id
    try:
        client.load_store()
        fingerprint = client.olm.account.identity_keys["ed25519"] if client.olm else "?"
    except Exception as err:  # noqa: BLE001 - any failure means the store cannot be read
        return [
            Check(
                False,
                f"crypto store unreadable ({err})",
                f"check {state.crypto_dir} and {state.secrets_dir}/crypto-store.key",
            )
        ]
    return [Check(True, f"crypto store readable (device key {fingerprint[:12]}…)")]


async def _claude_code(config: Config, env: Mapping[str, str]) -> list[Check]:
    """Claude Code's CLI is there and logged in (or has a key), asked offline."""
    import claude_agent_sdk

    from dispatch_matrix.agent.claude_code_login import check, claude_code_env

    package = Path(claude_agent_sdk.__file__).parent
    cli_env = {**os.environ, **env, **claude_code_env(config.agent)}
    found = await asyncio.to_thread(check, package, cli_env)
    return [Check(line.ok, line.what, line.fix) for line in found]


async def _api(config: Config, env: Mapping[str, str] | None = None) -> list[Check]:
    # The SDK is seconds of imports: only when the API is checked, after the other lines.
    import anthropic

    from dispatch_matrix.agent import catalogue
    from dispatch_matrix.app.agent_kit import anthropic_client

    problem = preflight.api_key_problem(config, os.environ if env is None else env)
    if problem is not None:
        return [Check(False, problem.problem, problem.fix or "")]
    try:
        client = anthropic_client(config)
    except ConfigError as err:
        return [Check(False, err.problem, err.fix or "")]
    checks = [Check(True, "Anthropic API key present")]
    try:
        model = await client.with_options(max_retries=0, timeout=15).models.retrieve(
            config.agent.model
        )
        checks.append(Check(True, f"Messages API reachable; model {model.id} available"))
        notice = (await catalogue.status(client, config.agent.model)).notice()
        if notice is not None:
            checks.append(Check(False, notice, "set [agent] model to a current model"))
    except anthropic.NotFoundError:
        checks.append(
            Check(False, f"model {config.agent.model} not found", "set [agent] model to a valid id")
        )
    except anthropic.AuthenticationError:
        checks.append(Check(False, "API key rejected", "check ANTHROPIC_API_KEY"))
    except anthropic.APITimeoutError:
        checks.append(
            Check(False, f"Messages API at {client.base_url}: no answer within 15 s", _API_FIX)
        )
    except anthropic.APIConnectionError as err:
        why = "connection refused" if _refused(err) else str(err).rstrip(".")
        checks.append(
            Check(False, f"Messages API unreachable at {client.base_url}: {why}", _API_FIX)
        )
    except anthropic.APIError as err:
        checks.append(Check(False, f"the Messages API refused the check: {err}", _API_FIX))
    finally:
        await client.close()
    return checks


_API_FIX = (
    "check the network, and ANTHROPIC_BASE_URL or [agent] base_url if the bot uses another "
    "endpoint (tools/run's stand-in runs only while tools/run does)"
)


def _refused(err: BaseException) -> bool:
    """Whether a connection failure was a refusal, wherever in the chain it is said."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or "Errno 111" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


__all__ = ["run_doctor", "DispatchError"]
