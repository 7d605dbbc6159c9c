"""Shared fixtures: one Synapse per session, fresh users per test, the fake Messages API,
the bot as a process, and the second (matrix-js-sdk) client."""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from fake_messages_api import FakeMessagesAPI  # noqa: E402
from harness.bot import BotConfig, BotProcess  # noqa: E402
from harness.jsclient import JsClient, check_installed  # noqa: E402
from harness.order import DURATIONS_KEY, Planned, longest_first, merged, tier_of  # noqa: E402
from harness.workbench import Bench, build_bench, logs_captured  # noqa: E402

from dispatch_matrix.app.homeserver import LocalSynapse, free_port  # noqa: E402
from dispatch_matrix.core.errors import ConfigError, HomeserverError  # noqa: E402
from dispatch_matrix.sandbox.choice import check_sandbox  # noqa: E402
from dispatch_matrix.sandbox.host import Confinement  # noqa: E402

_names = itertools.count(1)


@dataclass(frozen=True)
class Account:
    """A registered user."""

    user_id: str
    password: str
    localpart: str


class Homeserver:
    """The session's Synapse, with a factory of fresh users."""

    def __init__(self, synapse: LocalSynapse) -> None:
        self.synapse = synapse
        self.url = synapse.url
        self._admin_token: str | None = None

    def new_user(self, prefix: str = "user", *, limited: bool = False) -> Account:
        """Register a user no other test has used: exempt from rate limits, unless
        `limited` (then Synapse's stock limits on events and presence apply, as on any
        homeserver nobody tuned for the bot)."""
        localpart = f"{prefix}{next(_names)}-{secrets.token_hex(3)}"
        password = secrets.token_urlsafe(12)
        user_id = self.synapse.register(localpart, password)
        if not limited:
            if self._admin_token is None:
                self._admin_token = self.synapse.admin_token()
            self.synapse.exempt(user_id, self._admin_token)
        return Account(user_id, password, localpart)


def without_e2e_marker(items: Iterable[pytest.Item]) -> list[str]:
    """The ids of tests that use Synapse (the `homeserver` fixture, directly or through
    `make_bot`, `owner_client`, `shared_dm`…) but lack the `e2e` marker."""
    return [
        item.nodeid
        for item in items
        if "homeserver" in getattr(item, "fixturenames", ())
        and item.get_closest_marker("e2e") is None
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a test that uses Synapse without the `e2e` marker: the tiers are chosen by
    marker, so an unmarked one would run, slowly, in the unit tier."""
    unmarked = without_e2e_marker(items)
    if unmarked:
        listed = "\n  ".join(unmarked)
        raise pytest.UsageError(
            "these tests use the homeserver fixture (Synapse) but lack the e2e marker; "
            f"add `pytestmark = [pytest.mark.e2e]` to their module:\n  {listed}"
        )
    _longest_first(config, items)


@pytest.fixture(scope="session")
def homeserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Homeserver]:
    """One Synapse on loopback for the whole session (SQLite). Its limits on room events
    and presence are Synapse's stock ones; users are exempted unless a test asks for a
    limited one (latency, order and catch-up are measured on a limited bot)."""
    synapse = _start_synapse(tmp_path_factory)
    try:
        yield Homeserver(synapse)
    finally:
        synapse.stop()


def _start_synapse(tmp_path_factory: pytest.TempPathFactory, tries: int = 3) -> LocalSynapse:
    """A started Synapse on a free port. Under xdist each worker starts its own, and a port
    found free can be taken before Synapse binds it (by another worker's Synapse or any
    outgoing connection): then a fresh folder and port, a few times."""
    for attempt in range(1, tries + 1):
        synapse = LocalSynapse(
            tmp_path_factory.mktemp("synapse"), port=free_port(), stock_event_limits=True
        )
        synapse.configure()
        try:
            synapse.start()
        except HomeserverError as err:
            if attempt == tries or "Address already in use" not in str(err):
                raise
            continue
        return synapse
    raise AssertionError("unreachable: the last attempt returns or raises")


@pytest.fixture
def fake_api() -> Iterator[FakeMessagesAPI]:
    """A fresh scripted Messages API on loopback."""
    with FakeMessagesAPI() as api:
        yield api


@dataclass
class BotSetup:
    """A bot account, its owner account, and the bot process's config."""

    bot: Account
    owner: Account
    config: BotConfig

    def process(self) -> BotProcess:
        return BotProcess(self.config)


def new_bot(
    homeserver: Homeserver,
    api: FakeMessagesAPI,
    folder: Path,
    extra: str = "",
    owners: list[Account] | None = None,
    matrix_extra: str = "",
    limited: bool = False,
    agent_extra: str = "",
    model: str | None = None,
    max_retries: int = 3,
    welcome: bool = False,
) -> BotSetup:
    """A fresh bot account + owner account + config under `folder` (not started);
    `limited`: the bot keeps Synapse's stock limits (and assumes them); `welcome`: it greets
    a new DM (off, so a test's first message from the bot is the one it waits for)."""
    bot = homeserver.new_user("bot", limited=limited)
    owner = homeserver.new_user("owner")
    if not limited:
        # An exempt bot knows it is: its decorations need not wait for a budget.
        matrix_extra = "send_rate_per_s = 0\n" + matrix_extra
    config = BotConfig(
        folder=folder / bot.localpart,
        homeserver=homeserver.url,
        user_id=bot.user_id,
        password=bot.password,
        owners=[o.user_id for o in (owners or [owner])],
        api_url=api.url,
        extra=extra,
        matrix_extra=matrix_extra,
        agent_extra=agent_extra,
        max_retries=max_retries,
        welcome=welcome,
    )
    if model is not None:
        config.model = model
    config.write()
    return BotSetup(bot, owner, config)


@pytest.fixture
def make_bot(
    homeserver: Homeserver, fake_api: FakeMessagesAPI, tmp_path: Path
) -> Callable[..., BotSetup]:
    """Make a fresh bot account + owner account + config (not started); the keywords are
    `new_bot`'s."""

    def make(**options: Any) -> BotSetup:
        return new_bot(homeserver, fake_api, tmp_path, **options)

    return make


@pytest.fixture
async def running() -> AsyncIterator[list[BotProcess]]:
    """Bot processes a test started; each is stopped (or killed) at the end."""
    processes: list[BotProcess] = []
    yield processes
    for process in processes:
        # Shown by pytest only when the test failed.
        print(f"=== bot {process.config.user_id}\n{process.output()}")
        if process.process is not None and process.process.returncode is None:
            try:
                await process.stop(15)
            except (TimeoutError, AssertionError):
                await process.kill9()


@pytest.fixture
async def js_clients() -> AsyncIterator[list[JsClient]]:
    """matrix-js-sdk clients a test started; each is closed at the end."""
    clients: list[JsClient] = []
    yield clients
    for client in clients:
        await client.close()


@pytest.fixture
def owner_client(
    homeserver: Homeserver, js_clients: list[JsClient]
) -> Callable[..., Awaitable[JsClient]]:
    """Start a js client (Rust crypto) signed in as an account."""

    async def start(
        account: Account,
        *,
        strict: bool = True,
        cross_sign: bool = True,
        name: str = "owner",
        base: str | None = None,
    ) -> JsClient:
        """By default as Element is moving to: its own device cross-signed, and excluding
        devices that are not (MSC4153's OnlySignedDevicesIsolationMode)."""
        check_installed()
        client = await JsClient.start(
            base or homeserver.url, account.user_id, account.password, strict=strict, name=name
        )
        js_clients.append(client)
        if cross_sign:
            await client.bootstrap_cross_signing(account.password)
        return client

    return start


async def beside_bot_start(bot: BotProcess, client: Awaitable[JsClient]) -> JsClient:
    """Start the bot while the owner's client starts (logs in, cross-signs): neither needs
    the other until a DM is made, and each is seconds of waiting on a process of its own.
    Returns the client once both are up; a failure of either cancels the other."""
    async with asyncio.TaskGroup() as both:
        both.create_task(bot.start())
        starting = both.create_task(client)
    return starting.result()


async def started(
    make_bot: Callable[..., BotSetup],
    owner_client: Callable[..., Awaitable[JsClient]],
    running: list[BotProcess],
    extra: str = "",
    *,
    env: dict[str, str] | None = None,
    **options: Any,
) -> tuple[BotSetup, BotProcess, JsClient, str]:
    """A fresh bot running, its owner's cross-signed strict client, and their encrypted DM.

    `extra`: more config sections (e.g. `[permissions]`); `env`: more environment for the
    bot process; `options`: `new_bot`'s keywords (`agent_extra` for more [agent] keys,
    `matrix_extra`, `limited` for Synapse's stock rate limits, `model`, `max_retries`,
    `welcome`)."""
    setup = make_bot(extra=extra, **options)
    bot = BotProcess(setup.config, env=dict(env or {}))
    running.append(bot)
    owner = await beside_bot_start(bot, owner_client(setup.owner))
    room = await owner.create_dm(setup.bot.user_id)
    await owner.wait_join(room, setup.bot.user_id)
    return setup, bot, owner, room


@pytest.fixture(scope="module")
def module_api() -> Iterator[FakeMessagesAPI]:
    """One scripted Messages API for a module whose tests share a bot (`shared_dm`)."""
    with FakeMessagesAPI() as api:
        yield api


@dataclass
class SharedDM:
    """One bot, its owner's strict client and their DM, shared by a module's tests."""

    setup: BotSetup
    bot: BotProcess
    owner: JsClient
    room: str

    def as_started(self) -> tuple[BotSetup, BotProcess, JsClient, str]:
        """The shape `started()` returns."""
        return self.setup, self.bot, self.owner, self.room


def shared_dm(extra: str = "", **options: Any) -> Any:
    """A module-scoped fixture: one `started()` bot, owner and DM for every test of a module
    whose tests do not interfere (none restarts, kills or reconfigures the bot, and each
    waits for its own words). The module also overrides `fake_api` with `module_api`, reset
    before each test, so each test's scripted replies and recorded requests are its own:

        shared = shared_dm(READ_ONLY)

        @pytest.fixture
        def fake_api(module_api): module_api.reset(); return module_api
    """

    @pytest.fixture(scope="module")
    async def shared(
        homeserver: Homeserver,
        module_api: FakeMessagesAPI,
        tmp_path_factory: pytest.TempPathFactory,
    ) -> AsyncIterator[SharedDM]:
        check_installed()
        setup = new_bot(homeserver, module_api, tmp_path_factory.mktemp("shared"), extra, **options)
        bot = setup.process()
        owner: JsClient | None = None

        async def owner_started() -> JsClient:
            nonlocal owner
            # Kept at once, so the `finally` below closes it whichever start fails.
            owner = await JsClient.start(
                homeserver.url, setup.owner.user_id, setup.owner.password, strict=True, name="owner"
            )
            await owner.bootstrap_cross_signing(setup.owner.password)
            return owner

        try:
            owner = await beside_bot_start(bot, owner_started())
            room = await owner.create_dm(setup.bot.user_id)
            await owner.wait_join(room, setup.bot.user_id)
            yield SharedDM(setup, bot, owner, room)
        finally:
            print(f"=== shared bot {setup.config.user_id}\n{bot.output()}")
            if owner is not None:
                await owner.close()
            try:
                await bot.stop(15)
            except (TimeoutError, AssertionError):
                await bot.kill9()

    return shared


@pytest.fixture
async def make_bench(
    fake_api: FakeMessagesAPI, tmp_path: Path
) -> AsyncIterator[Callable[..., Bench]]:
    """The worker tier: a bot's queue, agent and tools built in this process from the same
    config an e2e bot gets (the sandbox on), its fake room, the in-process stand-in; no
    homeserver. Each bench made is running, and stopped at the end."""
    benches: list[Bench] = []
    with logs_captured() as logged:

        def make(
            extra: str = "",
            *,
            agent_extra: str = "",
            model: str | None = None,
            max_retries: int = 3,
        ) -> Bench:
            config = BotConfig(
                folder=tmp_path / f"bench{len(benches) + 1}",
                # Never dialled: the bench has no Matrix half.
                homeserver="http://127.0.0.1:9",
                user_id="@bot:bench",
                password="unused",
                owners=["@owner:bench"],
                api_url=fake_api.url,
                extra=extra,
                agent_extra=agent_extra,
                max_retries=max_retries,
            )
            if model is not None:
                config.model = model
            bench = build_bench(config.write(), logged)
            bench.start()
            benches.append(bench)
            return bench

        yield make
        for bench in benches:
            await bench.stop()


@pytest.fixture(scope="session")
def bwrap() -> Confinement:
    """bubblewrap as the daemon finds it; a failure, not a skip, where it cannot run (the
    sandbox, the wall and the door's proofs all run through it)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("bubblewrap is Linux-only")
    try:
        return check_sandbox("bubblewrap")
    except ConfigError as err:
        if os.environ.get("DISPATCH_SKIP_SANDBOX_TESTS") == "1" and not os.environ.get("CI"):
            pytest.skip(f"DISPATCH_SKIP_SANDBOX_TESTS=1: {err.one_line()}")
        pytest.fail(f"the sandbox tests need a working bubblewrap: {err.one_line()}")


# -- the order of an xdist run (tools/test runs the whole suite on every core) -------------
# The controller reads the last run's seconds per test from pytest's cache and hands the
# same copy to every worker (they must all collect one order); each worker sorts its
# collection longest first; the controller (or a run in one process) keeps this run's
# seconds for the next one.


def _last_durations(config: pytest.Config) -> dict[str, float]:
    cache = getattr(config, "cache", None)  # None under -p no:cacheprovider
    if cache is None:
        return {}
    found = cache.get(DURATIONS_KEY, {})
    return found if isinstance(found, dict) else {}


class _DurationKeeper:
    """Adds up each test's phases as their reports arrive; saves them at the end, and says
    the time each tier took."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.seconds: dict[str, float] = {}
        self.tiers: dict[str, str] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + report.duration
        self.tiers.setdefault(report.nodeid, tier_of(report.keywords))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        totals: dict[str, list[float]] = {}
        for nodeid, seconds in self.seconds.items():
            tier = totals.setdefault(self.tiers.get(nodeid, "unit"), [0, 0.0])
            tier[0] += 1
            tier[1] += seconds
        if not totals:
            return
        terminalreporter.write_sep("=", "time per tier (sum of test durations, all workers)")
        for tier in ("unit", "worker", "claude_code", "e2e", "drill"):
            if tier in totals:
                count, seconds = totals[tier]
                terminalreporter.write_line(f"{tier:>12}: {int(count):5d} tests {seconds:8.1f} s")

    def pytest_sessionfinish(self) -> None:
        cache = getattr(self.config, "cache", None)
        if cache is not None and self.seconds:
            cache.set(DURATIONS_KEY, merged(_last_durations(self.config), self.seconds))


def pytest_configure(config: pytest.Config) -> None:
    """Keep the durations where the reports all arrive: not on an xdist worker."""
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(_DurationKeeper(config), "dispatch-durations")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist's controller, before a worker starts: the durations it will sort by."""
    node.workerinput[DURATIONS_KEY] = _last_durations(node.config)


def _longest_first(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker, the longest tests first (tests/harness/order.py); a run in one
    process keeps the files' order."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return
    planned = [
        Planned(
            item.nodeid,
            e2e=item.get_closest_marker("e2e") is not None
            or "homeserver" in getattr(item, "fixturenames", ()),
        )
        for item in items
    ]
    last = workerinput.get(DURATIONS_KEY, {})
    items[:] = [items[i] for i in longest_first(planned, last)]
