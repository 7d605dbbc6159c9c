"""Operator mistakes and accidents that need a real homeserver: a wrong password on `run`,
a bot logged out by another session while it runs (Element's "Sign out" of the bot's
session, or the admin deleting its device), and a Ctrl-C during the first key upload. Each
is one line with its fix and an exit code a service manager can act on, or is recovered
from at the next start."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import BotSetup, Homeserver
from harness.bot import BotProcess, console_script
from structlog.testing import capture_logs

from dispatch_matrix.app.connect import REPLACED_META
from dispatch_matrix.app.homeserver import STARTED_NAME, LocalSynapse, free_port
from dispatch_matrix.app.onboarding import InitAnswers, _login_and_open_dms
from dispatch_matrix.core.ids import UserID
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.device import Devices
from dispatch_matrix.matrix.failures import checked
from dispatch_matrix.store import Database
from dispatch_matrix.store.state import StateFolder

pytestmark = [pytest.mark.e2e]


def _call(
    homeserver: Homeserver, method: str, path: str, token: str, body: object = None
) -> dict[str, Any]:
    request = urllib.request.Request(
        homeserver.url + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return dict(json.loads(reply.read()))


def _session(setup: BotSetup) -> tuple[str, str]:
    db = Database.open(setup.config.state / "dispatch.db")
    try:
        session = db.session()
    finally:
        db.close()
    assert session is not None
    return session.device_id, session.access_token


async def test_run_with_a_wrong_password_is_one_line_and_stays_stopped(
    make_bot: Callable[..., BotSetup], running: list[BotProcess]
) -> None:
    setup = make_bot()
    setup.config = dataclasses.replace(setup.config, password="not-the-password")
    setup.config.write()
    process = setup.process()
    running.append(process)
    await process.spawn()
    # 6: a service does not restart into a password the homeserver refuses.
    assert await process.wait_exit(120) == 6, process.output()
    assert process.stderr[-1] == (
        f"dispatch-matrix: the homeserver rejected the password for {setup.bot.user_id} — "
        "check [matrix] password (or password_file)"
    ), process.output()


async def test_a_bot_logged_out_while_running_says_so_and_comes_back_at_the_next_start(
    homeserver: Homeserver, make_bot: Callable[..., BotSetup], running: list[BotProcess]
) -> None:
    setup = make_bot()
    process = await setup.process().start()
    running.append(process)
    device, _ = _session(setup)
    admin = homeserver.synapse.admin_token()
    user = urllib.parse.quote(setup.bot.user_id)
    # What "Sign out" of the bot's session in Element does: the device and its keys go.
    _call(homeserver, "DELETE", f"/_synapse/admin/v2/users/{user}/devices/{device}", admin)

    # It was "sync: the homeserver rejected our access token (M_UNKNOWN_TOKEN)", no fix.
    assert await process.wait_exit(120) == 5, process.output()
    assert process.stderr[-1] == (
        "dispatch-matrix: the homeserver no longer accepts the bot's login (signed out from "
        "another session, or its device was removed) — start it again: it logs in with its "
        "password (a service restarts it)"
    ), process.output()

    # The next start logs in again as the same device, whose keys the homeserver deleted:
    # they are uploaded again (a restart used to fail at cross-signing, every time).
    await process.start()
    await process.wait_log("matrix.device_keys_gone")
    again, token = _session(setup)
    assert again == device
    keys = _call(
        homeserver,
        "POST",
        "/_matrix/client/v3/keys/query",
        token,
        {"device_keys": {setup.bot.user_id: []}},
    )
    published = keys["device_keys"][setup.bot.user_id][device]
    self_signing = keys["self_signing_keys"][setup.bot.user_id]["keys"]
    [key_id] = self_signing
    assert key_id in published["signatures"][setup.bot.user_id], "cross-signed again"


async def test_a_start_stopped_between_uploading_keys_and_saving_them_is_not_wedged(
    homeserver: Homeserver, tmp_path: Path
) -> None:
    """Ctrl-C during init's (or run's) first key upload: the homeserver kept the one-time
    keys, the crypto store never recorded them, and every later start made other keys
    under the same ids: 'keys/upload failed: M_UNKNOWN One time key … already exists', at
    each init --force and each run, for ever. Now a new device replaces the wedged one, and
    init (as run does) deletes the wedged one from the account: the owners' clients would
    otherwise go on encrypting to a device nobody holds the keys of."""
    account = homeserver.new_user("wedged")
    state = StateFolder(tmp_path).ensure()
    db = Database.open(state.db_path)
    try:
        first = await Devices(homeserver.url, UserID(account.user_id), state, db).open(
            account.password
        )
        # What was on disk when the Ctrl-C came: the account, its keys not yet uploaded.
        before = {p.name: p.read_bytes() for p in state.crypto_dir.iterdir()}
        await checked(homeserver.url, "keys/upload", first.nio.keys_upload())
        await first.nio.close()
        for path in state.crypto_dir.iterdir():
            path.unlink()
        for name, content in before.items():
            (state.crypto_dir / name).write_bytes(content)
    finally:
        db.close()

    # init --force in that folder, through its own login (no DM: the device is the point).
    said: list[str] = []
    answers = InitAnswers(
        config_path=tmp_path / "config.toml",
        homeserver=homeserver.url,
        user_id=account.user_id,
        password=account.password,
        dm=False,
    )
    with capture_logs() as logged:
        device, _ = await _login_and_open_dms(answers, state, said.append)
    assert device != first.session.device_id
    clash = [e for e in logged if e["event"] == "matrix.device_keys_clash"]
    assert [e["device"] for e in clash] == [first.session.device_id]
    assert [e["device"] for e in logged if e["event"] == "matrix.old_device_deleted"] == [
        first.session.device_id
    ]
    assert (
        f"  the old device {first.session.device_id} (its keys were lost here) was deleted"
        " from the account." in said
    )

    # The next start resumes the new device: its keys are published, the old one is gone,
    # and `run` has the replacement to tell the rooms.
    db = Database.open(state.db_path)
    client = MatrixClient(homeserver.url, UserID(account.user_id), state, db)
    try:
        session = await client.connect(account.password)
        assert session.device_id == device and client.replaced_device is None
        published = await client.query_keys([account.user_id])
        assert set(published["device_keys"][account.user_id]) == {device}
        assert db.get_meta(REPLACED_META) == first.session.device_id
    finally:
        await client.close()
        db.close()


async def test_ctrl_c_while_run_starts_its_private_homeserver_stops_that_homeserver(
    tmp_path: Path,
) -> None:
    """A Ctrl-C before the start had launched Synapse (it first stops a leftover one, which
    may take seconds): the stop found nothing to stop, the start ran on in its thread, and
    Synapse kept running after `run` said 'daemon.stopped', holding the port."""
    config = tmp_path / "state" / "config.toml"
    port = free_port()
    made = await asyncio.create_subprocess_exec(
        console_script(),
        "init",
        "--local-homeserver",
        "--port",
        str(port),
        "--config",
        str(config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(made.wait(), 180) == 0
    homeserver = LocalSynapse(folder=config.parent / "homeserver", port=port)
    assert not homeserver.is_up(), "init stops the homeserver it started"

    # A leftover that takes its time to stop holds the start before it launches Synapse:
    # the window the Ctrl-C falls into, made wide (it ignores SIGTERM, then ends by itself).
    leftover = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(4)",
        "synapse.app.homeserver",
        "-c",
        str(homeserver.config_path),
        start_new_session=True,
    )
    (homeserver.folder / STARTED_NAME).write_text(f"{leftover.pid}\n")
    run = await asyncio.create_subprocess_exec(
        console_script(),
        "run",
        "--config",
        str(config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "ANTHROPIC_API_KEY": "sk-ant-test-0000000"},
    )
    assert run.stdout is not None
    async with asyncio.timeout(120):
        async for line in run.stdout:
            if b"Starting the local homeserver" in line:
                run.send_signal(signal.SIGINT)  # Ctrl-C
                break
        await run.communicate()
    await leftover.wait()
    assert run.returncode == 0
    assert not homeserver.is_up(), "the homeserver run was starting is stopped with it"
