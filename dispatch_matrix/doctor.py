"""`dispatch-matrix doctor`: a checklist of what the daemon needs, each failure with its fix.

Doctor only reads: it never logs in (which would make a new device), never writes the
ledger, and never prints a secret.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anthropic

from .agent import catalogue
from .awake import keep_awake_check
from .config import Config, load_config
from .errors import ConfigError, DispatchError
from .matrix.asleep import SUPPORT_META, doctor_line
from .matrix.texts import exemption_hint
from .state import StateFolder
from .store import Database
from .voice.doctor import voice_checks


@dataclass(frozen=True)
class Check:
    """One line of the checklist."""

    ok: bool
    what: str
    fix: str = ""

    def line(self) -> str:
        mark = "✓" if self.ok else "✗"
        return f"{mark} {self.what}" + (
            f"\n    fix: {self.fix}" if self.fix and not self.ok else ""
        )


def run_doctor(config_path: Path, say: Callable[[str], None], check_api: bool = True) -> int:
    """Print the checklist; returns 0 when every check passed."""
    checks: list[Check] = []
    try:
        config = load_config(config_path)
    except ConfigError as err:
        say(Check(False, f"config {config_path}: {err.message}", err.fix or "").line())
        return 1
    checks.append(Check(True, f"config valid ({config.source})"))
    checks.extend(_state(config))
    checks.extend(_rate_limits(config))
    checks.append(_sandbox(config))
    checks.append(Check(*keep_awake_check(config.agent.keep_awake)))
    checks.append(_homeserver(config))
    checks.extend(asyncio.run(_login_and_store(config)))
    checks.extend(Check(*line) for line in voice_checks(config.voice))
    if check_api:
        checks.extend(asyncio.run(_api(config)))
    if config.mcp.enabled:
        from .connectors.checks import check_servers

        checks.extend(Check(ok, what, fix) for ok, what, fix in asyncio.run(check_servers(config)))
    for check in checks:
        say(check.line())
    failed = sum(not check.ok for check in checks)
    say(f"\n{len(checks) - failed} passed, {failed} failed" if failed else "\nall checks passed")
    return 1 if failed else 0


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
    db = Database.open(db_path)
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
    from .parts import limits
    from .tools import check_sandbox

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
    return Check(True, f"sandbox: {found.describe()}")


def _homeserver(config: Config) -> Check:
    url = config.matrix.homeserver + "/_matrix/client/versions"
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            versions = json.loads(reply.read()).get("versions", [])
    except (OSError, urllib.error.URLError, ValueError) as err:
        hint = "start it with `dispatch-matrix run`" if config.local_homeserver.enabled else ""
        return Check(
            False,
            f"homeserver {config.matrix.homeserver} unreachable ({err})",
            hint or "check [matrix] homeserver and your network",
        )
    latest = versions[-1] if versions else "?"
    return Check(True, f"homeserver reachable: {config.matrix.homeserver} (spec up to {latest})")


async def _login_and_store(config: Config) -> list[Check]:
    state = StateFolder(config.state_dir)
    if not state.db_path.exists():
        return [Check(False, "no saved login yet", "run `dispatch-matrix init` or `run` once")]
    db = Database.open(state.db_path)
    try:
        session = db.session()
    finally:
        db.close()
    if session is None:
        return [Check(False, "no saved login yet", "run `dispatch-matrix run` once")]
    checks = []
    from nio import AsyncClient, AsyncClientConfig, WhoamiResponse

    client = AsyncClient(
        session.homeserver,
        session.user_id,
        device_id=session.device_id,
        store_path=str(state.crypto_dir),
        config=AsyncClientConfig(encryption_enabled=True, pickle_key=state.pickle_key()),
    )
    try:
        client.user_id = session.user_id
        client.device_id = session.device_id
        client.access_token = session.access_token
        try:
            reply = await client.whoami()
            if isinstance(reply, WhoamiResponse):
                checks.append(
                    Check(True, f"login valid: {session.user_id}, device {session.device_id}")
                )
            else:
                checks.append(
                    Check(
                        False,
                        f"saved login rejected ({reply.status_code})",
                        "the next `run` logs in again with the password; check it is set",
                    )
                )
        except Exception as err:  # noqa: BLE001 - doctor reports every failure as a line
            checks.append(Check(False, f"login not checked: {err!r}", "see the homeserver check"))
        try:
            client.load_store()
            fingerprint = client.olm.account.identity_keys["ed25519"] if client.olm else "?"
            checks.append(Check(True, f"crypto store readable (device key {fingerprint[:12]}…)"))
        except Exception as err:  # noqa: BLE001
            checks.append(
                Check(
                    False,
                    f"crypto store unreadable: {err.__class__.__name__}",
                    f"check {state.crypto_dir} and {state.secrets_dir}/crypto-store.key",
                )
            )
    finally:
        await client.close()
    return checks


async def _api(config: Config) -> list[Check]:
    from .parts import anthropic_client

    try:
        client = anthropic_client(config)
    except ConfigError as err:
        return [Check(False, err.problem, err.fix or "")]
    except anthropic.AnthropicError as err:
        return [
            Check(
                False,
                f"no Anthropic API key ({err.__class__.__name__})",
                "set ANTHROPIC_API_KEY, or [agent] api_key_file",
            )
        ]
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
    except anthropic.APIError as err:
        checks.append(Check(False, f"Messages API unreachable: {err}", "check the network"))
    finally:
        await client.close()
    return checks


__all__ = ["run_doctor", "DispatchError"]
