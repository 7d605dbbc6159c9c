"""The daemon: builds every part from the config, owns start-up, shutdown and the lock.

Start-up order matters: the lock first (one instance per state folder), then the local
homeserver if we manage one, then the login (retried while the homeserver is away), then
the long-lived tasks (sync loop, worker, outbox flush) under one TaskGroup. SIGTERM,
SIGINT and SIGHUP (the terminal closed) end them; every completed step is already on disk,
so nothing is lost, and the homeserver we started stops with us.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from nio import SyncResponse

from dispatch_matrix import __version__
from dispatch_matrix.app.config import Config
from dispatch_matrix.app.health import HealthRecorder
from dispatch_matrix.app.homeserver import LocalSynapse
from dispatch_matrix.app.late_agent import (
    WhenBuilt,
    inventory_of,
    load_agent_module,
    not_loaded,
    reachable_through,
)
from dispatch_matrix.app.parts import control_plane, local_homeserver, watch_dir
from dispatch_matrix.app.parts import limits as sandbox_limits
from dispatch_matrix.app.pending import Pending
from dispatch_matrix.app.start_notices import (
    announce_replacement,
    announce_unconfined,
    banner,
    report_model,
    retire_device,
)
from dispatch_matrix.core import logs
from dispatch_matrix.core.backoff import Backoff
from dispatch_matrix.core.errors import DispatchError, HomeserverError, StateError
from dispatch_matrix.core.faults import disk_full
from dispatch_matrix.core.ids import RoomID, UserID
from dispatch_matrix.core.redaction import environment_secrets
from dispatch_matrix.identity.crosssign import OwnIdentity, ensure_identity, until_approved
from dispatch_matrix.identity.gate import TrustGate
from dispatch_matrix.identity.identities import Identities
from dispatch_matrix.matrix.asleep import AsleepNotice
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.failures import Unreachable
from dispatch_matrix.matrix.mentions import Mentions
from dispatch_matrix.matrix.outbox import Outbox
from dispatch_matrix.matrix.replay import ReplayGuard
from dispatch_matrix.matrix.router import Router
from dispatch_matrix.matrix.sender import Budget
from dispatch_matrix.matrix.sync import SyncLoop, SyncStalled
from dispatch_matrix.matrix.welcome import Welcome
from dispatch_matrix.queue import Worker
from dispatch_matrix.queue import texts as queue_texts
from dispatch_matrix.queue.awake import AWAKE_META, KeepAwake
from dispatch_matrix.queue.control import Control
from dispatch_matrix.queue.intake import Intake
from dispatch_matrix.sandbox.guards import recover_watched
from dispatch_matrix.sandbox.host import (
    Confinement,
    check_sandbox,
    default_hidden,
    hard_linked_secrets,
    sandbox_off_warning,
)
from dispatch_matrix.schedule.clock import SystemClock
from dispatch_matrix.schedule.digest import Digest
from dispatch_matrix.schedule.firing import Scheduler
from dispatch_matrix.schedule.reminders import Reminders
from dispatch_matrix.schedule.zones import owner_zone
from dispatch_matrix.store import Database
from dispatch_matrix.store.models import Session
from dispatch_matrix.store.state import StateFolder
from dispatch_matrix.voice.inbox import VoiceInbox
from dispatch_matrix.voice.speech_out import build_speech_out
from dispatch_matrix.voice.transcribe import build_transcriber

if TYPE_CHECKING:
    from dispatch_matrix.agent import Engine
    from dispatch_matrix.app.agent_parts import AgentParts

log = logs.get(__name__)

_MAX_CONNECT_BACKOFF_S = 60.0


async def connect(
    client: MatrixClient, password: str | None, access_token: str | None = None
) -> Session:
    """Log in or restore, retrying with capped backoff while the homeserver is away."""
    backoff = Backoff(1.0, _MAX_CONNECT_BACKOFF_S)
    while True:
        try:
            return await client.connect(password, access_token)
        except Unreachable as err:
            wait = backoff.next()
            log.warning("matrix.unreachable", error=err.message, retry_in=wait, fix=err.fix)
            await asyncio.sleep(wait)


# A hang-up (the terminal that ran us closed) is a stop like any other: by default it would
# kill us on the spot, without a word in the log, leaving the private homeserver running.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


async def run(config: Config, say: Callable[[str], None] = print) -> int:
    """Run the daemon until SIGTERM/SIGINT/SIGHUP; returns the exit code.

    The signal handlers are installed first, so a stop during start-up (a homeserver that
    is still away, say) is as clean as one while serving.
    """
    # Everything we create (crypto store, logs, ledger) is private to us.
    os.umask(0o077)
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    body = asyncio.create_task(_start_and_serve(config, say), name="daemon")
    stopper = asyncio.create_task(stop.wait(), name="stop")
    try:
        await asyncio.wait({body, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not body.done():
            log.info("daemon.stopping", signal=received[0] if received else None)
            body.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await body
            log.info("daemon.stopped")
            return 0
        try:
            return body.result()
        except (BaseExceptionGroup, sqlite3.Error, OSError) as err:
            full = disk_full(err, config.state_dir)
            if full is None:
                raise
            raise full from err
    finally:
        stopper.cancel()
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)


async def _start_and_serve(config: Config, say: Callable[[str], None]) -> int:
    if config.local_homeserver.enabled and not local_homeserver(config).config_path.exists():
        # Its accounts live there: a fresh Synapse would have none, and the login would be
        # refused as a wrong password. A moved or mistyped state folder, said as such.
        raise StateError(
            f"the private homeserver is not set up in {config.homeserver_dir} "
            "(its accounts live there)",
            fix="point [store] path at the state folder `init --local-homeserver` made, "
            "or restore it from a backup",
        )
    state = StateFolder(config.state_dir).ensure()
    state.lock()
    logs.setup(config.log.level, state.log_dir if config.log.file else None)
    # No sandbox where one was asked for (auto included): refuse rather than run unconfined.
    confinement = await asyncio.to_thread(
        check_sandbox,
        config.agent.sandbox,
        network=config.agent.sandbox_network,
        limits=sandbox_limits(config),
    )
    if confinement.active:
        log.info("sandbox.active", sandbox=confinement.describe())
        # A shell call the last run never finished: what it planted is moved aside now.
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for moved in await asyncio.to_thread(recover_watched, watch_dir(config), stamp):
            log.warning("sandbox.quarantined", path=str(moved), after="restart")
        hidden = [*control_plane(config), *default_hidden(Path.home(), os.getuid())]
        for linked in await asyncio.to_thread(hard_linked_secrets, hidden):
            log.warning("sandbox.hard_linked_secret", path=str(linked))
    else:
        log.warning("sandbox.off", detail=sandbox_off_warning())
    password = config.matrix.secret_password()
    token = config.matrix.secret_access_token()
    api_key = config.agent.secret_api_key()
    voice_key = config.voice.secret_api_key()
    logs.REDACTOR.add(
        password.get_secret_value() if password else None,
        token.get_secret_value() if token else None,
        api_key.get_secret_value() if api_key else None,
        voice_key.get_secret_value() if voice_key else None,
    )
    # The environment's secrets too: the SDK's ANTHROPIC_API_KEY, DISPATCH_* overrides,
    # tokens a connector or a command is given, whatever else the daemon was started with.
    logs.REDACTOR.add(*environment_secrets(os.environ, config.agent.secret_env_passthrough))
    # The agent's half (the SDK, MCP, the tools) loads in a thread meanwhile: the interpreter
    # is otherwise idle while it waits for the homeserver, and the Matrix half needs none of it.
    agent_module = asyncio.create_task(asyncio.to_thread(load_agent_module), name="agent-load")
    homeserver: LocalSynapse | None = None
    db: Database | None = None
    client: MatrixClient | None = None
    recorder: HealthRecorder | None = None
    try:
        if config.local_homeserver.enabled:
            homeserver = local_homeserver(config)
            say(f"Starting the local homeserver at {homeserver.url} …")
            await asyncio.to_thread(homeserver.start)
        db = Database.open(state.db_path)
        born = db.get_meta("born_ms")
        if born is None:
            born = str(int(time.time() * 1000))
            db.set_meta("born_ms", born)
        # What `dispatch-matrix status` reads: pid, uptime, last sync, last error.
        recorder = HealthRecorder(db, os.getpid(), __version__)
        logs.get_root().addHandler(recorder)
        recorder.started()
        client = MatrixClient(
            config.matrix.homeserver,
            UserID(config.matrix.user_id),
            state,
            db,
            config.matrix.device_name,
        )
        secret = password.get_secret_value() if password else None
        session = await connect(client, secret, token.get_secret_value() if token else None)
        logs.REDACTOR.add(session.access_token)
        recorder.connected()
        # Cross-signed before the first sync joins any room: a strict client withholds room
        # keys from a device that is not, and never re-sends them.
        await client.publish_device_keys()
        identity = await until_approved(lambda: ensure_identity(client, state, secret), say)
        if client.replaced_device is not None:
            await retire_device(client, db, client.replaced_device, secret)
        return await _serve(
            config,
            db,
            client,
            session,
            identity,
            int(born),
            say,
            confinement,
            recorder,
            agent_module,
        )
    finally:
        # Stopped before serving: the import thread is not waited for here (asyncio.run
        # joins it at exit), and its failure is not the news (the one that ended the run is).
        if not agent_module.cancel() and not agent_module.cancelled():
            agent_module.exception()
        if recorder is not None:
            recorder.stopped()
            logs.get_root().removeHandler(recorder)
        if client is not None:
            if client.connected:
                with contextlib.suppress(HomeserverError, asyncio.TimeoutError, OSError):
                    await asyncio.wait_for(client.set_presence("offline"), 3)
            await client.close()
        if db is not None:
            db.close()
        if homeserver is not None:
            await asyncio.to_thread(homeserver.stop)
        state.unlock()


async def _serve(
    config: Config,
    db: Database,
    client: MatrixClient,
    session: Session,
    identity: OwnIdentity,
    born_ms: int,
    say: Callable[[str], None],
    confinement: Confinement | None = None,
    recorder: HealthRecorder | None = None,
    agent_module: asyncio.Task[ModuleType] | None = None,
) -> int:
    owners = frozenset(config.matrix.owners)
    identities = Identities(client, db, owners)
    outbox = Outbox(
        client,
        db,
        before_send=identities.restrict_sharing,
        max_file_bytes=config.matrix.max_file_bytes,
        long_texts=config.state_dir / "answers",
        budget=Budget(config.matrix.send_rate_per_s, config.matrix.send_burst),
        presence_every_s=config.matrix.presence_every_s,
    )
    workdir = config.agent.workdir.expanduser()
    roots = [root.expanduser() for root in config.agent.allowed_roots]
    # Time is an input: one clock for the scheduler, the schedule tool and the turn stamps.
    zone = owner_zone(config.schedule.timezone)
    clock = SystemClock.for_tests(config.state_dir) if config.schedule.test_clock else SystemClock()
    if config.schedule.test_clock:
        log.warning("schedule.test_clock", detail="the clock adds <state>/clock-offset (tests)")
    scheduler: Scheduler | None = None

    def schedules_changed() -> None:
        if scheduler is not None:
            scheduler.nudge()

    # Built once its module is in: the worker and the commands that need it wait for it.
    parts: Pending[AgentParts] = Pending("the agent")
    agent: Pending[Engine] = Pending("the agent")
    speech = build_speech_out(
        config.voice,
        client,
        db,
        outbox,
        max_file_bytes=config.matrix.max_file_bytes,
        folder=config.state_dir / "voice",
    )
    worker = Worker(
        db,
        WhenBuilt(agent),
        outbox,
        approval_timeout_s=config.permissions.approval_timeout_s,
        outage_first_s=config.agent.outage_retry_s,
        probe_every_s=config.agent.outage_probe_s,
        answered=speech.answered if speech else None,
        probe=reachable_through(agent),
        awake=KeepAwake(
            enabled=config.agent.keep_awake,
            on_change=lambda held: db.set_meta(AWAKE_META, "1" if held else ""),
        ),
    )
    db.set_meta(AWAKE_META, "")
    # Reactions, redactions and status edits wait while an answer is due.
    outbox.sender.hold = worker.answer_due_in
    resumed_in = worker.resume_after_restart()
    voice = VoiceInbox(
        client,
        db,
        outbox,
        build_transcriber(config.voice),
        max_file_bytes=config.matrix.max_file_bytes,
        folder=config.state_dir / "voice",
    )
    digest = Digest(db, outbox, zone, workdir, roots, config.schedule.digest_at)
    scheduler = Scheduler(db, Mentions(outbox), worker, clock, zone, digest)
    reminders = Reminders(db, outbox, zone, digest, scheduler.nudge)
    control = Control(
        db,
        worker,
        outbox,
        agent,
        voice,
        more=reminders.handlers(),
        tools=inventory_of(parts),
    )
    intake = Intake(
        db, worker, outbox, control, config.agent.max_task_chars, on_reaction=reminders.reaction
    )
    voice.bind(intake)
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
        db,
        identities,
        outbox,
        owners=frozenset(config.matrix.owners),
        require_cross_signed=config.matrix.trust == "cross-signed",
    )
    router = Router(
        client,
        db,
        intake,
        gate,
        outbox,
        owners=frozenset(config.matrix.owners),
        shared_rooms=frozenset(config.matrix.shared_rooms),
        max_file_bytes=config.matrix.max_file_bytes,
        undecryptable_grace_s=config.matrix.undecryptable_grace_s,
        not_before_ms=born_ms,
        inbox=workdir / "inbox",
        voice=voice,
        replays=replays,
        joined=welcome.joined,
    )
    outbox.undeliverable = router.undeliverable
    if config.matrix.trust != "cross-signed":
        log.warning(
            "trust.relaxed",
            detail="obeying owners' encrypted messages from devices they have not cross-signed",
        )
    # Each sync is news for the MCP failure notices, which wait for a room.
    synced = asyncio.Event()

    async def handle(response: SyncResponse, since: str | None) -> bool:
        acted = await router.handle(response, since)
        synced.set()
        welcome.synced()
        if recorder is not None:
            recorder.synced()
        return acted

    sync = SyncLoop(client, db, handle, config.matrix.sync_timeout_ms, recovered=outbox.retry_now)

    async def announce() -> None:
        await sync.first_sync_done.wait()
        say(banner(config, session, sync.first_sync_seconds, welcome.awaited()))
        sys.stdout.flush()
        await announce_replacement(client, db, outbox)
        if resumed_in is not None:
            await outbox.post(resumed_in, queue_texts.RESUMED_AFTER_RESTART, notice=True)
        if confinement is not None and not confinement.active:
            await announce_unconfined(client, outbox)
        await report_model(await agent.get(), db, client, outbox)

    async def fire_schedules(scheduler: Scheduler) -> None:
        # Reminders go into rooms nio learns of in the first sync.
        await sync.first_sync_done.wait()
        await scheduler.run()

    async def build_agent(group: asyncio.TaskGroup) -> None:
        module = await (agent_module or asyncio.to_thread(load_agent_module))
        try:
            built: AgentParts = module.build(
                config, db, confinement, clock, zone, schedules_changed
            )
        except ImportError as err:
            # The MCP SDK, imported only when a server is configured.
            raise not_loaded(err) from err
        built.start(group, worker, synced, client, outbox)
        parts.set(built)
        agent.set(built.agent)
        log.info("agent.ready")

    def owner_rooms() -> list[RoomID]:
        # The rooms the bot takes work in (only owners there), encrypted: a notice scheduled
        # in the clear would tell the homeserver what the owner is told.
        return [
            RoomID(room_id)
            for room_id, room in client.client.rooms.items()
            if room.encrypted and router.room_private(room_id)
        ]

    asleep = AsleepNotice(client, db, outbox, owner_rooms, delay_s=config.matrix.asleep_after_s)
    log.info("daemon.started", user=session.user_id, device=session.device_id, pid=os.getpid())
    try:
        async with asyncio.TaskGroup() as group:
            if config.matrix.asleep_notice:
                group.create_task(asleep.run(sync.first_sync_done), name="asleep")
            group.create_task(sync.run(), name="sync")
            group.create_task(sync.watch(), name="sync-watchdog")
            group.create_task(outbox.run(), name="outbox")
            group.create_task(voice.run(), name="voice")
            group.create_task(build_agent(group), name="agent")
            group.create_task(announce(), name="announce")
            group.create_task(welcome.run(), name="welcome")
            if recorder is not None:
                group.create_task(recorder.run(), name="health")
            group.create_task(fire_schedules(scheduler), name="scheduler")
    except* (DispatchError, SyncStalled) as errors:
        raise errors.exceptions[0] from None
    finally:
        # Stopping (a signal or a failure): the phone is told so, not "asleep" later.
        with contextlib.suppress(HomeserverError, OSError, TimeoutError):
            await asyncio.wait_for(asleep.stop(), 5)
    return 0
