"""The daemon: owns start-up, shutdown and the lock, and runs every long-lived task.

Start-up order matters: the lock first (one instance per state folder), then the sandbox
check, the local homeserver if we manage one, the login (retried while the homeserver is
away) and the cross-signing; then every part is built at once (`wiring.build`), and every
long-lived task (sync loop, worker, outbox, voice, MCP servers, scheduler, notices) starts
under one TaskGroup (`_serve`). SIGTERM, SIGINT and SIGHUP (the terminal closed) end them;
every completed step is already on disk, so nothing is lost, and the homeserver we started
stops with us.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path

from dispatch_matrix import __version__
from dispatch_matrix.app.agent_kit import control_plane, watch_dir
from dispatch_matrix.app.agent_kit import limits as sandbox_limits
from dispatch_matrix.app.config import Config
from dispatch_matrix.app.connect import connect, logged_out, retire_device
from dispatch_matrix.app.health import HealthRecorder, stale_after_ms
from dispatch_matrix.app.homeserver import LocalSynapse
from dispatch_matrix.app.start_notices import tell_connector_failures
from dispatch_matrix.app.wiring import Parts, build, local_homeserver
from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import DispatchError, HomeserverError, StateError
from dispatch_matrix.core.faults import disk_full
from dispatch_matrix.core.ids import UserID
from dispatch_matrix.core.redaction import environment_secrets
from dispatch_matrix.identity.crosssign import ensure_identity, until_approved
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.failures import TokenRejected
from dispatch_matrix.matrix.sync import SyncStalled
from dispatch_matrix.sandbox.choice import check_sandbox, sandbox_off_warning
from dispatch_matrix.sandbox.guards import recover_watched
from dispatch_matrix.sandbox.host import Confinement, default_hidden, hard_linked_secrets
from dispatch_matrix.sandbox.sockets import loopback_without_token
from dispatch_matrix.store import Database
from dispatch_matrix.store.state import StateFolder

log = logs.get(__name__)

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
    confinement = await _confine(config)
    _redact_secrets(config)
    password = config.matrix.secret_password()
    token = config.matrix.secret_access_token()
    homeserver: LocalSynapse | None = None
    starting: asyncio.Future[None] | None = None
    db: Database | None = None
    client: MatrixClient | None = None
    recorder: HealthRecorder | None = None
    try:
        if config.local_homeserver.enabled:
            homeserver = local_homeserver(config)
            say(f"Starting the local homeserver at {homeserver.url} …")
            # Shielded: a stop while it starts (Ctrl-C) must not leave the thread to finish
            # the start after the `finally` below found nothing to stop.
            starting = asyncio.get_running_loop().run_in_executor(None, homeserver.start)
            await asyncio.shield(starting)
        db = Database.open(state.db_path)
        born = db.get_meta("born_ms")
        if born is None:
            born = str(int(time.time() * 1000))
            db.set_meta("born_ms", born)
        # What `dispatch-matrix status` reads: pid, uptime, last sync, last error.
        recorder = HealthRecorder(
            db,
            os.getpid(),
            __version__,
            stale_ms=stale_after_ms(config.matrix.sync_timeout_ms),
        )
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
        await until_approved(lambda: ensure_identity(client, state, secret), say)
        if client.replaced_device is not None:
            await retire_device(client, db, client.replaced_device, secret)
        parts = build(
            config,
            db,
            client,
            session,
            recorder,
            born_ms=int(born),
            confinement=confinement,
            say=say,
        )
        log.info("daemon.started", user=session.user_id, device=session.device_id, pid=os.getpid())
        try:
            return await _serve(parts)
        except TokenRejected as err:
            raise logged_out(can_log_in=secret is not None) from err
    finally:
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
            if starting is not None and not starting.done():
                log.info("daemon.homeserver_starting", note="stopped once it has started")
                with contextlib.suppress(Exception):
                    await starting
            await asyncio.to_thread(homeserver.stop)
        state.unlock()


async def _confine(config: Config) -> Confinement:
    """The sandbox shell calls run in, checked; what a shell call the last run never
    finished planted is moved aside. No sandbox where one was asked for (auto included)
    is an error: refused rather than run unconfined."""
    confinement = await asyncio.to_thread(
        check_sandbox,
        config.agent.sandbox,
        network=config.agent.sandbox_network,
        limits=sandbox_limits(config),
    )
    if not confinement.active:
        log.warning("sandbox.off", detail=sandbox_off_warning())
        return confinement
    log.info("sandbox.active", sandbox=confinement.describe())
    if confinement.network:
        servers = {
            name: (spec.url, bool(spec.headers or spec.headers_files))
            for name, spec in config.mcp.enabled.items()
            if spec.url
        }
        for name in loopback_without_token(servers):
            # Said, not fixed: loopback is the host's while the network is on.
            log.warning("sandbox.loopback_mcp", server=name)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for moved in await asyncio.to_thread(recover_watched, watch_dir(config), stamp):
        log.warning("sandbox.quarantined", path=str(moved), after="restart")
    hidden = [*control_plane(config), *default_hidden(Path.home(), os.getuid())]
    for linked in await asyncio.to_thread(hard_linked_secrets, hidden):
        log.warning("sandbox.hard_linked_secret", path=str(linked))
    return confinement


def _redact_secrets(config: Config) -> None:
    """Every secret the config names, and the environment's, kept out of the logs."""
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


async def _serve(parts: Parts) -> int:
    """Run every long-lived task of the daemon under one TaskGroup until one fails or the
    daemon is stopped."""
    first_sync = parts.sync.first_sync_done
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(parts.sync.run(), name="sync")
            group.create_task(parts.sync.watch(), name="sync-watchdog")
            group.create_task(parts.outbox.run(), name="outbox")
            group.create_task(parts.untold.run(), name="untold")
            group.create_task(parts.hearing.run(), name="voice")
            group.create_task(parts.connectors.run(), name="mcp")
            # Once every MCP server has started or failed once: the first request then
            # carries the whole tool list, which stays put (and cached).
            group.create_task(
                _start_when(parts.connectors.settled(), group, parts.worker.run, "worker"),
                name="worker-start",
            )
            group.create_task(
                tell_connector_failures(
                    first_sync, parts.rooms_changed, parts.client, parts.connectors, parts.outbox
                ),
                name="mcp-news",
            )
            group.create_task(parts.notices.run(), name="announce")
            group.create_task(parts.welcome.run(), name="welcome")
            group.create_task(parts.recorder.run(parts.sync), name="health")
            # Reminders go into rooms nio learns of in the first sync.
            group.create_task(
                _start_when(first_sync.wait(), group, parts.scheduler.run, "scheduler"),
                name="scheduler-start",
            )
            if parts.asleep is not None:
                group.create_task(parts.asleep.run(first_sync), name="asleep")
    except* (DispatchError, SyncStalled) as errors:
        raise errors.exceptions[0] from None
    finally:
        # Stopping (a signal or a failure): the phone is told so, not "asleep" later.
        if parts.asleep is not None:
            with contextlib.suppress(HomeserverError, OSError, TimeoutError):
                await asyncio.wait_for(parts.asleep.stop(), 5)
    return 0


async def _start_when(
    ready: Awaitable[object],
    group: asyncio.TaskGroup,
    run: Callable[[], Coroutine[object, object, None]],
    name: str,
) -> None:
    """Start `run` as a task of `group` once `ready` is done. The task is the part's own:
    no frame of the daemon waits in its chain (each of its steps would pass through here)."""
    await ready
    group.create_task(run(), name=name)
