"""Operator mistakes and accidents that need a real homeserver: a wrong password on `run`,
and a bot logged out by another session while it runs (Element's "Sign out" of the bot's
session, or the admin deleting its device). Each is one line with its fix and an exit code
a service manager can act on; a logged-out bot comes back at the next start."""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from conftest import BotSetup, Homeserver
from harness.bot import BotProcess

from dispatch_matrix.store import Database

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
