"""The parts the daemon builds from the config that others build too (doctor, tests, the
benchmarks): the local homeserver, the SDK client, and the tools with their policy and
context."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

from dispatch_matrix.app.config import Config
from dispatch_matrix.app.homeserver import LocalSynapse
from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import ConfigError
from dispatch_matrix.core.paths import canonicalize
from dispatch_matrix.core.settings import secret_files
from dispatch_matrix.permissions.policy import Policy
from dispatch_matrix.sandbox.host import Confinement, confinement_for, default_hidden
from dispatch_matrix.sandbox.spec import CREDENTIAL_PATHS, Limits
from dispatch_matrix.sandbox.wall import home_guards, installation_paths
from dispatch_matrix.toolbox.base import ToolContext
from dispatch_matrix.toolbox.registry import ToolRegistry, default_tools
from dispatch_matrix.toolbox.send_file import SendFileTool

if TYPE_CHECKING:
    import anthropic

log = logs.get(__name__)


def local_homeserver(config: Config) -> LocalSynapse:
    """The managed Synapse described by [local_homeserver]."""
    section = config.local_homeserver
    return LocalSynapse(
        folder=section.folder,
        server_name=section.server_name,
        host=section.host,
        port=section.port,
    )


def anthropic_client(config: Config) -> anthropic.AsyncAnthropic:
    """The SDK client; it reads ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL unless config says."""
    import anthropic  # the heaviest import of all: only where a client is made

    key = config.agent.secret_api_key()
    kwargs: dict[str, object] = {
        "max_retries": config.agent.max_retries,
        "timeout": config.agent.request_timeout_s,
    }
    if key is not None:
        kwargs["api_key"] = key.get_secret_value()
    if config.agent.base_url:
        kwargs["base_url"] = config.agent.base_url
    client = anthropic.AsyncAnthropic(**kwargs)  # type: ignore[arg-type]
    # The SDK finds no credentials only at the first request, as a TypeError deep in a
    # traceback; say it here, once, as a config problem.
    if (
        client.api_key is None
        and client.auth_token is None
        and getattr(client, "credentials", None) is None
    ):
        raise ConfigError(
            "agent.api_key",
            "no Anthropic API key (ANTHROPIC_API_KEY is not set)",
            "set ANTHROPIC_API_KEY, or [agent] api_key (or api_key_file)",
        )
    return client


_SHELL_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SHELL")


def control_plane(config: Config, config_home: Path | None = None) -> list[Path]:
    """What the tools may never read or write: the state folder, the config, every secret
    file the config names (each field that names one is marked `SECRET_FILE`, and
    `secret_files` finds them all), the service's env folder and a local homeserver's
    folder (its signing keys and tokens)."""
    paths = [config.state_dir]
    if config.source:
        paths.append(config.source)
    paths += secret_files(config)
    # `install-service` keeps the env file (ANTHROPIC_API_KEY) in $XDG_CONFIG_HOME; the
    # default ~/.config/dispatch-matrix is among the credential stores already.
    if config_home is not None:
        paths.append(config_home / "dispatch-matrix")
    if config.local_homeserver.enabled:
        paths.append(config.homeserver_dir)
    return list(dict.fromkeys(paths))


def limits(config: Config) -> Limits:
    """The per-call limits of sandboxed shell commands, from [agent]."""
    agent = config.agent
    return Limits(
        processes=agent.sandbox_max_processes,
        memory_mb=agent.sandbox_max_memory_mb,
        file_mb=agent.sandbox_max_file_mb,
        cpu_s=agent.sandbox_max_cpu_s,
        tmp_mb=agent.sandbox_max_tmp_mb,
    )


def watch_dir(config: Config) -> Path:
    """Where shell calls note the paths they watch while they run (sandbox/guards.py)."""
    return config.state_dir / "watched"


def readonly_paths(home: Path) -> list[Path]:
    """What no tool may change even inside a root: the start-up files and the other
    guards under the home folder, and the daemon's own installation."""
    return [*(home / g.path for g in home_guards()), *installation_paths()]


def build_tools(
    config: Config,
    workdir: Path,
    roots: list[Path],
    learned: list[str] | None = None,
    sandbox: Confinement | None = None,
) -> tuple[Policy, ToolRegistry, ToolContext]:
    """The permission policy, the tools and their context, from the config.

    `sandbox` is what `check_sandbox` found at start; without it the configured kind is
    used unprobed. The control plane and the credential paths are refused to every file
    tool and hidden from every shell call, whatever the rules allow.
    """
    xdg = os.environ.get("XDG_CONFIG_HOME")
    plane = control_plane(config, Path(xdg) if xdg else None)
    secret = [*plane, *(Path.home() / p for p in CREDENTIAL_PATHS)]
    hidden = [*secret, *default_hidden(Path.home(), os.getuid())]
    policy = Policy(
        # Rules the owner added by answering "always" live in the store, after the config's.
        allow=[*config.permissions.allow, *(learned or [])],
        ask=config.permissions.ask,
        deny=config.permissions.deny,
        home=Path.home(),
        workdir=workdir,
        protected=secret,
        private=secret,
        canonical=canonicalize,
    )
    confinement = sandbox or confinement_for(config.agent.sandbox, config.agent.sandbox_network)
    confinement = dataclasses.replace(confinement, limits=limits(config))
    registry = ToolRegistry(default_tools(confinement, read_denied=policy.read_denied))
    registry.add(SendFileTool())
    names = (*_SHELL_ENV, *config.agent.env_passthrough, *config.agent.secret_env_passthrough)
    env = {name: os.environ[name] for name in names if name in os.environ}
    env.setdefault("TERM", "dumb")
    context = ToolContext(
        workdir=workdir,
        allowed_roots=tuple(roots),
        denied_paths=tuple(dict.fromkeys(hidden)),
        readonly_paths=tuple(readonly_paths(Path.home())),
        guard_home=True,
        watch_dir=watch_dir(config),
        env=env,
        bash_timeout_s=config.agent.bash_timeout_s,
    )
    return policy, registry, context
