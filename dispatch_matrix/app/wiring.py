"""One wiring: every part of a daemon run built from the config, in dependency order, each
given at construction everything it needs (`build`). The daemon starts their long-lived
tasks; nothing here assigns a callback afterwards.

Where two parts need each other, a small object is made first and handed to both:

- `AnswerDue`: the worker marks when it takes a task; the outbox's sender holds the
  decorations back meanwhile;
- `undelivered`, a queue: the outbox puts the answers the homeserver refused for good; the
  router tells their owner elsewhere (`tell_undelivered`);
- `schedules_changed`, an event: the schedule tool and the reminders' commands set it (they
  are built with the agent, before the scheduler); the scheduler wakes on it;
- `VoiceInbox`: the router records voice messages there and `!retry` sends them back to be
  heard; `Hearing`, built after the intake, takes them in turn;
- `rooms_changed`, an event the router sets after a sync that changed some room's state:
  the connectors' start failures wait on it for a room.

The config-derived pieces others build too (doctor, tests, the benchmarks) are here as
well: the local homeserver, the SDK client, and the tools with their policy and context.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import anthropic

from dispatch_matrix.agent import Agent, Engine, Memory
from dispatch_matrix.agent.prompt import Machine, system_prompt
from dispatch_matrix.app.config import Config
from dispatch_matrix.app.health import HealthRecorder
from dispatch_matrix.app.homeserver import LocalSynapse
from dispatch_matrix.app.start_notices import StartNotices
from dispatch_matrix.connectors import web
from dispatch_matrix.connectors.hub import Connectors
from dispatch_matrix.connectors.inventory import Group, inventory
from dispatch_matrix.core import logs
from dispatch_matrix.core.clock import Clock, SystemClock
from dispatch_matrix.core.errors import ConfigError
from dispatch_matrix.core.ids import RoomID
from dispatch_matrix.core.paths import canonicalize
from dispatch_matrix.core.settings import secret_files
from dispatch_matrix.identity.gate import TrustGate
from dispatch_matrix.identity.identities import Identities
from dispatch_matrix.identity.tables import IdentityTables
from dispatch_matrix.matrix.asleep import AsleepNotice
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.outbox import Outbox, Undelivered
from dispatch_matrix.matrix.replay import ReplayGuard
from dispatch_matrix.matrix.router import Router
from dispatch_matrix.matrix.sender import Budget
from dispatch_matrix.matrix.sync import SyncLoop
from dispatch_matrix.matrix.welcome import Welcome
from dispatch_matrix.permissions.policy import Policy
from dispatch_matrix.queue import Worker
from dispatch_matrix.queue.awake import AWAKE_META, KeepAwake
from dispatch_matrix.queue.control import Control
from dispatch_matrix.queue.intake import Intake
from dispatch_matrix.queue.worker import AnswerDue
from dispatch_matrix.sandbox.host import Confinement, confinement_for, default_hidden
from dispatch_matrix.sandbox.spec import CREDENTIAL_PATHS, Limits
from dispatch_matrix.sandbox.wall import home_guards, installation_paths
from dispatch_matrix.schedule.digest import Digest
from dispatch_matrix.schedule.firing import Scheduler
from dispatch_matrix.schedule.reminders import Reminders
from dispatch_matrix.schedule.tables import ScheduleTables
from dispatch_matrix.schedule.tool import ScheduleTool
from dispatch_matrix.schedule.zones import owner_zone
from dispatch_matrix.store import Database
from dispatch_matrix.store.db import Session
from dispatch_matrix.toolbox.base import ToolContext
from dispatch_matrix.toolbox.registry import ToolRegistry, default_tools
from dispatch_matrix.toolbox.send_file import SendFileTool
from dispatch_matrix.voice.inbox import Hearing, VoiceInbox
from dispatch_matrix.voice.speech_out import build_speech_out
from dispatch_matrix.voice.tables import VoiceMessages
from dispatch_matrix.voice.transcribe import build_transcriber

log = logs.get(__name__)


@dataclass(frozen=True)
class Parts:
    """Every part of one daemon run whose long-lived task the daemon starts."""

    sync: SyncLoop
    outbox: Outbox
    undelivered: asyncio.Queue[Undelivered]
    router: Router
    worker: Worker
    hearing: Hearing
    connectors: Connectors
    rooms_changed: asyncio.Event
    scheduler: Scheduler
    welcome: Welcome
    asleep: AsleepNotice | None
    notices: StartNotices
    client: MatrixClient
    recorder: HealthRecorder


def build(
    config: Config,
    db: Database,
    client: MatrixClient,
    session: Session,
    recorder: HealthRecorder,
    *,
    born_ms: int,
    confinement: Confinement,
    say: Callable[[str], None],
) -> Parts:
    """Every part of a run, for a client that is logged in and cross-signed."""
    owners = frozenset(config.matrix.owners)
    workdir = config.agent.workdir.expanduser()
    voice_folder = config.state_dir / "voice"
    max_file_bytes = config.matrix.max_file_bytes
    # Time is an input: one clock for the scheduler, the schedule tool and the turn stamps.
    zone = owner_zone(config.schedule.timezone)
    clock = SystemClock.for_tests(config.state_dir) if config.schedule.test_clock else SystemClock()
    if config.schedule.test_clock:
        log.warning("schedule.test_clock", detail="the clock adds <state>/clock-offset (tests)")
    if config.matrix.trust != "cross-signed":
        log.warning(
            "trust.relaxed",
            detail="obeying owners' encrypted messages from devices they have not cross-signed",
        )
    answer_due = AnswerDue()
    undelivered: asyncio.Queue[Undelivered] = asyncio.Queue()
    schedules_changed = asyncio.Event()
    rooms_changed = asyncio.Event()

    identity_tables = IdentityTables(db)
    identities = Identities(client, identity_tables, owners)
    outbox = Outbox(
        client,
        db,
        before_send=identities.restrict_sharing,
        max_file_bytes=max_file_bytes,
        long_texts=config.state_dir / "answers",
        budget=Budget(config.matrix.send_rate_per_s, config.matrix.send_burst),
        presence_every_s=config.matrix.presence_every_s,
        # Reactions, redactions and status edits wait while an answer is due.
        hold=answer_due.seconds,
        undelivered=undelivered,
    )
    # Each feature's tables, once: its parts receive them instead of the whole database.
    schedules = ScheduleTables(db)
    voices = VoiceMessages(db)
    kit = build_agent(config, db, schedules, confinement, clock, zone, schedules_changed.set)
    speech = build_speech_out(
        config.voice, client, voices, outbox, max_file_bytes=max_file_bytes, folder=voice_folder
    )
    worker = Worker(
        db,
        kit.agent,
        outbox,
        approval_timeout_s=config.permissions.approval_timeout_s,
        outage_first_s=config.agent.outage_retry_s,
        probe_every_s=config.agent.outage_probe_s,
        answered=speech.answered if speech else None,
        probe=kit.agent.reachable,
        awake=KeepAwake(
            enabled=config.agent.keep_awake,
            on_change=lambda held: db.set_meta(AWAKE_META, "1" if held else ""),
        ),
        answer_due=answer_due,
    )
    db.set_meta(AWAKE_META, "")
    resumed_in = worker.resume_after_restart()
    roots = [root.expanduser() for root in config.agent.allowed_roots]
    digest = Digest(schedules, db, outbox, zone, workdir, roots, config.schedule.digest_at)
    scheduler = Scheduler(
        schedules, db, outbox, worker, clock, zone, digest, changed=schedules_changed
    )
    reminders = Reminders(schedules, outbox, zone, digest, schedules_changed.set)
    voice = VoiceInbox(voices, db)
    control = Control(
        db,
        worker,
        outbox,
        kit.agent,
        more=reminders.handlers(),
        tools=kit.inventory,
        first={"retry": voice.retry_command},
    )
    intake = Intake(
        db, worker, outbox, control, config.agent.max_task_chars, on_reaction=reminders.reaction
    )
    hearing = Hearing(
        voice,
        client,
        voices,
        outbox,
        build_transcriber(config.voice),
        intake,
        max_file_bytes=max_file_bytes,
        folder=voice_folder,
    )
    # Before the first sync decrypts anything: replays are refused from the first event on.
    replays = ReplayGuard(db)
    if client.client.olm is not None:
        replays.install(client.client.olm)
    welcome = Welcome(
        client,
        db,
        outbox,
        owners,
        config.permissions.approval_timeout_s,
        enabled=config.matrix.welcome,
    )
    gate = TrustGate(
        client,
        identity_tables,
        identities,
        outbox,
        owners=owners,
        require_cross_signed=config.matrix.trust == "cross-signed",
    )
    router = Router(
        client,
        db,
        intake,
        gate,
        outbox,
        owners=owners,
        shared_rooms=frozenset(config.matrix.shared_rooms),
        max_file_bytes=max_file_bytes,
        undecryptable_grace_s=config.matrix.undecryptable_grace_s,
        not_before_ms=born_ms,
        inbox=workdir / "inbox",
        voice=voice,
        replays=replays,
        joined=welcome.joined,
        rooms_changed=(rooms_changed.set, welcome.rooms_changed),
    )
    sync = SyncLoop(
        client,
        db,
        router.handle,
        config.matrix.sync_timeout_ms,
        recovered=outbox.retry_now,
    )

    def owner_rooms() -> list[RoomID]:
        # The rooms the bot takes work in (only owners there), encrypted: a notice scheduled
        # in the clear would tell the homeserver what the owner is told.
        return [
            RoomID(room_id)
            for room_id, room in client.client.rooms.items()
            if room.encrypted and router.room_private(room_id)
        ]

    asleep = (
        AsleepNotice(client, db, outbox, owner_rooms, delay_s=config.matrix.asleep_after_s)
        if config.matrix.asleep_notice
        else None
    )
    notices = StartNotices(
        config,
        session,
        client,
        db,
        outbox,
        kit.agent,
        sync,
        welcome,
        resumed_in=resumed_in,
        unconfined=not confinement.active,
        say=say,
    )
    return Parts(
        sync=sync,
        outbox=outbox,
        undelivered=undelivered,
        router=router,
        worker=worker,
        hearing=hearing,
        connectors=kit.connectors,
        rooms_changed=rooms_changed,
        scheduler=scheduler,
        welcome=welcome,
        asleep=asleep,
        notices=notices,
        client=client,
        recorder=recorder,
    )


# -- the agent and its tools ---------------------------------------------------------------


@dataclass(frozen=True)
class AgentKit:
    """The engine (our Agent, or Claude Code's), the MCP servers it calls, and what `!tools`
    lists (computed when asked)."""

    agent: Engine
    connectors: Connectors
    inventory: Callable[[], list[Group]]


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
    agent: Engine
    if config.agent.engine == "claude-code":
        agent = _claude_code(config, db, clock, zone, system, registry, policy, context)
    else:
        agent = _api_agent(config, db, clock, zone, system, registry, policy, context, web_tools)

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
    config: Config,
    db: Database,
    clock: Clock,
    zone: ZoneInfo,
    system: str,
    registry: ToolRegistry,
    policy: Policy,
    context: ToolContext,
    web_tools: web.WebTools | None,
) -> Engine:
    """Our own loop on the Messages API (the default engine)."""
    return Agent(
        db,
        anthropic_client(config),
        settings=config.agent,
        system=system,
        tools=registry,
        policy=policy,
        context=context,
        memory=Memory(Path(config.state_dir) / "memory.md"),
        clock=clock,
        zone=zone,
        web_tools=web_tools,
    )


def _claude_code(
    config: Config,
    db: Database,
    clock: Clock,
    zone: ZoneInfo,
    system: str,
    registry: ToolRegistry,
    policy: Policy,
    context: ToolContext,
) -> Engine:
    """The Claude Code engine (the claude-code extra, checked when the config was loaded)."""
    from dispatch_matrix.agent.claude_code import ClaudeCodeAgent
    from dispatch_matrix.agent.claude_code_login import claude_code_env

    return ClaudeCodeAgent(
        db,
        settings=config.agent,
        system=system,
        tools=registry,
        policy=policy,
        context=context,
        env=claude_code_env(config.agent),
        clock=clock,
        zone=zone,
    )


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
