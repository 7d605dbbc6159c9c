"""The agent, its tools and their wall, built from the config (`build_agent`).

The tools come with their permission policy and their context (`build_tools`): the
control plane and the credential stores no tool may touch (`control_plane`), the files
that run later and stay read-only even inside a root (`readonly_paths`), and the per-call
limits of sandboxed shell commands (`limits`). The MCP servers, the web tools and the
schedule tool join the registry; then the chosen engine is built from one `EngineInputs`:
our loop on the Messages API with the SDK client (`anthropic_client`), or Claude Code.

It lives in the application, not in the agent package, because the agent may not import
the schedule feature whose tool it is given. The daemon's wiring calls it; doctor, the
tests and the benchmarks build the same pieces from here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from zoneinfo import ZoneInfo

import anthropic

from dispatch_matrix.agent import Agent, Engine, Memory
from dispatch_matrix.agent.prompt import Machine, system_prompt
from dispatch_matrix.agent.settings import AgentSection
from dispatch_matrix.app.config import Config
from dispatch_matrix.connectors import web
from dispatch_matrix.connectors.hub import Connectors
from dispatch_matrix.connectors.inventory import Group, inventory
from dispatch_matrix.core.clock import Clock
from dispatch_matrix.core.errors import ConfigError
from dispatch_matrix.core.paths import canonicalize
from dispatch_matrix.core.settings import secret_files
from dispatch_matrix.permissions.policy import Policy
from dispatch_matrix.sandbox.caches import default_folder
from dispatch_matrix.sandbox.choice import confinement_for
from dispatch_matrix.sandbox.gitconfig import config_named, home_configs
from dispatch_matrix.sandbox.host import Confinement, default_hidden
from dispatch_matrix.sandbox.spec import CREDENTIAL_PATHS, Limits
from dispatch_matrix.sandbox.wall import (
    env_files,
    home_guards,
    installation_paths,
    path_folders,
    server_code,
)
from dispatch_matrix.schedule.tables import ScheduleTables
from dispatch_matrix.schedule.tool import ScheduleTool
from dispatch_matrix.store import Database
from dispatch_matrix.toolbox.base import ToolContext
from dispatch_matrix.toolbox.registry import ToolRegistry, default_tools
from dispatch_matrix.toolbox.send_file import SendFileTool


@dataclass(frozen=True)
class AgentKit:
    """The engine (our Agent, or Claude Code's), the MCP servers it calls, and what `!tools`
    lists (computed when asked)."""

    agent: Engine
    connectors: Connectors
    inventory: Callable[[], list[Group]]


@dataclass(frozen=True)
class EngineInputs:
    """What either engine is built from: the ledger, the [agent] section, the system
    prompt, the tools with their policy and context, and the clock and zone that stamp
    each turn."""

    db: Database
    settings: AgentSection
    system: str
    tools: ToolRegistry
    policy: Policy
    context: ToolContext
    clock: Clock
    zone: ZoneInfo


def build_agent(
    config: Config,
    db: Database,
    schedules: ScheduleTables,
    confinement: Confinement | None,
    clock: Clock,
    zone: ZoneInfo,
    schedules_changed: Callable[[], None],
) -> AgentKit:
    """The tools, the MCP servers and the Agent, from the config."""
    # The shell judge loads its grammar at the first command; a missing one is news now.
    for grammar in ("tree_sitter", "tree_sitter_bash"):
        if importlib.util.find_spec(grammar) is None:
            raise ImportError(f"No module named {grammar!r}", name=grammar)
    workdir = config.agent.workdir.expanduser()
    roots = [root.expanduser() for root in config.agent.allowed_roots]
    machine = Machine.here(workdir, roots)
    policy, registry, context = build_tools(config, workdir, roots, db.learned_rules(), confinement)
    # MCP servers and web tools: their tools join the registry's, their secrets the redactor.
    connectors = Connectors.from_config(config.mcp)
    registry.add_provider(connectors)
    web_tools = web.WebTools(config.web, web.refused(policy)) if config.web.enabled else None
    registry.add(ScheduleTool(schedules, db, clock, zone, schedules_changed))
    system = system_prompt(config.matrix.owners, machine, config.agent.system_prompt, zone=zone.key)
    inputs = EngineInputs(
        db=db,
        settings=config.agent,
        system=system,
        tools=registry,
        policy=policy,
        context=context,
        clock=clock,
        zone=zone,
    )
    agent: Engine
    if config.agent.engine == "claude-code":
        agent = _claude_code(inputs)
    else:
        agent = _api_agent(
            inputs,
            anthropic_client(config),
            Memory(Path(config.state_dir) / "memory.md"),
            web_tools,
        )

    def tools_now() -> list[Group]:
        return inventory(
            policy,
            registry.names(),
            connectors.statuses(),
            connectors.tools_of,
            web_tools.names if web_tools else [],
        )

    return AgentKit(agent, connectors, tools_now)


def _api_agent(
    inputs: EngineInputs,
    client: anthropic.AsyncAnthropic,
    memory: Memory,
    web_tools: web.WebTools | None,
) -> Engine:
    """Our own loop on the Messages API (the default engine)."""
    return Agent(
        inputs.db,
        client,
        settings=inputs.settings,
        system=inputs.system,
        tools=inputs.tools,
        policy=inputs.policy,
        context=inputs.context,
        memory=memory,
        clock=inputs.clock,
        zone=inputs.zone,
        web_tools=web_tools,
    )


def _claude_code(inputs: EngineInputs) -> Engine:
    """The Claude Code engine (the claude-code extra, checked when the config was loaded)."""
    from dispatch_matrix.agent.claude_code import ClaudeCodeAgent
    from dispatch_matrix.agent.claude_code_login import claude_code_env

    return ClaudeCodeAgent(
        inputs.db,
        settings=inputs.settings,
        system=inputs.system,
        tools=inputs.tools,
        policy=inputs.policy,
        context=inputs.context,
        env=claude_code_env(inputs.settings),
        clock=inputs.clock,
        zone=inputs.zone,
    )


def anthropic_client(config: Config) -> anthropic.AsyncAnthropic:
    """The SDK client; it reads ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL unless config says."""
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


def readonly_paths(
    home: Path,
    config: Config | None = None,
    workdir: Path | None = None,
    roots: Sequence[Path] = (),
) -> list[Path]:
    """What no tool may change even inside a root: the start-up files and the other
    guards under the home folder, the daemon's own installation, the code of every MCP
    server the config names (the daemon runs it outside the sandbox, with its tokens), what
    the home's git configs include, and every folder on the PATH. None of those that is or
    holds the home, the workdir or a root in `roots`: it would turn read-only whole."""
    servers: list[Path] = []
    if config is not None:
        for spec in config.mcp.servers.values():
            if spec.command:
                found = server_code(
                    PurePosixPath(home),
                    PurePosixPath(workdir) if workdir else None,
                    spec.command,
                    spec.args,
                    PurePosixPath(spec.cwd.expanduser()) if spec.cwd else None,
                )
                servers += map(Path, found)
    # What the home's git configs include and the hooks folder they name (gitconfig.py);
    # shell calls find these again at every call, with each repository's own.
    trees = [workdir] if workdir else []
    # A root is kept writable as the workdir is (review 3: an alias `!cd ~/code/app && make`
    # or a PATH holding a root turned that whole root read-only, shell and file tools).
    kept = [home, *trees]
    for root in roots:
        kept.append(root.expanduser())
        with contextlib.suppress(OSError):
            kept.append(canonicalize(root.expanduser()))
    # The environment may move the global config (GIT_CONFIG_GLOBAL): that file too.
    known = home_configs(home, os.environ)
    moved = [c for c in known if c not in home_configs(home)]
    configs = [(c, trees) for c in known]
    git = [*moved, *(Path(n.path) for n in config_named(home, configs, keep=kept))]
    # Every folder on the PATH (the owner's, which the daemon and its shell calls inherit).
    keep = [PurePosixPath(k) for k in dict.fromkeys(kept)]
    on_path = map(Path, path_folders(os.environ.get("PATH", ""), keep))
    # The start-up files the environment names (PYTHONSTARTUP), wherever they lie.
    started = map(Path, env_files(os.environ, PurePosixPath(home), keep))
    return [
        *(home / g.path for g in home_guards()),
        *installation_paths(),
        *servers,
        *git,
        *on_path,
        *started,
    ]


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
    hidden = [*secret, *default_hidden(Path.home(), os.getuid(), os.environ)]
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
    # What a Read deny rule covers whole is hidden from shell calls too (links into it).
    hidden += [Path(p) for p in policy.denied_to_read()]
    confinement = sandbox or confinement_for(config.agent.sandbox, config.agent.sandbox_network)
    confinement = dataclasses.replace(confinement, limits=limits(config))
    registry = ToolRegistry(default_tools(confinement, read_denied=policy.read_denied))
    registry.add(SendFileTool(max_bytes=config.matrix.max_file_bytes))
    names = (*_SHELL_ENV, *config.agent.env_passthrough, *config.agent.secret_env_passthrough)
    env = {name: os.environ[name] for name in names if name in os.environ}
    env.setdefault("TERM", "dumb")
    context = ToolContext(
        workdir=workdir,
        allowed_roots=tuple(roots),
        denied_paths=tuple(dict.fromkeys(hidden)),
        readonly_paths=tuple(readonly_paths(Path.home(), config, workdir, roots)),
        guard_home=True,
        watch_dir=watch_dir(config),
        env=env,
        sandbox_cache=default_folder(Path.home()),
        bash_timeout_s=config.agent.bash_timeout_s,
    )
    return policy, registry, context
