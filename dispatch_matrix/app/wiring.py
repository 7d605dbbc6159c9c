"""One wiring: every part of a daemon run built from the config, in dependency order, each
given at construction everything it needs (`build`). The daemon starts their long-lived
tasks; nothing here assigns a callback afterwards.

Where two parts need each other, a small object is made first and handed to both:

- `AnswerDue`: the worker marks when it takes a task; the outbox's sender holds the
  decorations back meanwhile;
- `undelivered`, a queue: the outbox puts the answers the homeserver refused for good;
  `UndeliveredAnswers` tells their owner elsewhere, in the rooms the router finds private;
- `schedules_changed`, an event: the schedule tool and the reminders' commands set it (they
  are built with the agent, before the scheduler); the scheduler wakes on it;
- `VoiceInbox`: the router records voice messages there and `!retry` sends them back to be
  heard; `Hearing`, built after the intake, takes them in turn;
- `rooms_changed`, an event the router sets after a sync that changed some room's state:
  the connectors' start failures wait on it for a room.

The agent, its tools and their wall are built in `agent_kit` (`build_agent`), which doctor,
the tests and the benchmarks use as well; the local homeserver's description is here
(`local_homeserver`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from dispatch_matrix.app.agent_kit import build_agent
from dispatch_matrix.app.config import Config
from dispatch_matrix.app.health import HealthRecorder
from dispatch_matrix.app.homeserver import LocalSynapse
from dispatch_matrix.app.start_notices import StartNotices
from dispatch_matrix.connectors.hub import Connectors
from dispatch_matrix.core import logs
from dispatch_matrix.core.clock import SystemClock
from dispatch_matrix.core.ids import RoomID
from dispatch_matrix.identity.gate import Identities, TrustGate
from dispatch_matrix.identity.held import HeldMessages
from dispatch_matrix.identity.tables import IdentityTables
from dispatch_matrix.matrix.asleep import AsleepNotice
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.incoming import IncomingFiles
from dispatch_matrix.matrix.outbox import Outbox, Undelivered
from dispatch_matrix.matrix.replay import ReplayGuard
from dispatch_matrix.matrix.router import Router
from dispatch_matrix.matrix.sender import Budget
from dispatch_matrix.matrix.sync import SyncLoop
from dispatch_matrix.matrix.undelivered import UndeliveredAnswers
from dispatch_matrix.matrix.welcome import Welcome
from dispatch_matrix.queue import Worker
from dispatch_matrix.queue.awake import AWAKE_META, KeepAwake
from dispatch_matrix.queue.control import Control
from dispatch_matrix.queue.intake import Intake
from dispatch_matrix.queue.worker import AnswerDue
from dispatch_matrix.sandbox.host import Confinement
from dispatch_matrix.schedule.digest import Digest
from dispatch_matrix.schedule.firing import Scheduler
from dispatch_matrix.schedule.reminders import Reminders
from dispatch_matrix.schedule.tables import ScheduleTables
from dispatch_matrix.schedule.zones import owner_zone
from dispatch_matrix.store import Database
from dispatch_matrix.store.db import Session
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
    untold: UndeliveredAnswers
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
    held = HeldMessages.in_room(client, outbox, identity_tables, identities)
    gate = TrustGate(
        identity_tables,
        identities,
        held,
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
        undecryptable_grace_s=config.matrix.undecryptable_grace_s,
        not_before_ms=born_ms,
        files=IncomingFiles(
            client, db, workdir / "inbox", max_file_bytes, outbox=outbox, intake=intake
        ),
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
        waiting=router.waiting,
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
        untold=UndeliveredAnswers(
            undelivered,
            client,
            db,
            outbox,
            owners=owners,
            room_private=router.room_private,
        ),
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


def local_homeserver(config: Config) -> LocalSynapse:
    """The managed Synapse described by [local_homeserver]."""
    section = config.local_homeserver
    return LocalSynapse(
        folder=section.folder,
        server_name=section.server_name,
        host=section.host,
        port=section.port,
    )
