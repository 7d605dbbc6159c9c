"""A bare matrix-nio echo bot: the baseline the foundation benchmark compares dispatch-matrix with.

Logs in with a password once (the password comes from $NIO_ECHO_PASSWORD, never argv), keeps
its olm store and its login in --store (a restart restores the same device), joins every
invite, and answers each decrypted m.text from anyone else with ``echo: <body>``. Prints
``connected (first sync X.XXs)`` once the first sync (and its key upload) is done. Stops
cleanly on SIGTERM/SIGINT.

    NIO_ECHO_PASSWORD=... python tools/bench/nio_echo_bot.py \\
        --homeserver URL --user-id @bot:hs --store DIR
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

from nio import (
    AsyncClient,
    AsyncClientConfig,
    InviteMemberEvent,
    LoginResponse,
    MatrixRoom,
    MegolmEvent,
    RoomMessageText,
)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homeserver", required=True)
    parser.add_argument("--user-id", required=True)
    parser.add_argument("--store", required=True, help="folder for nio's olm store")
    parser.add_argument("--sync-timeout-ms", type=int, default=30_000)
    parser.add_argument(
        "--timeline-limit",
        type=int,
        default=None,
        help="events per room the first sync may bring (a catch-up of a backlog; nio does"
        " not fill a gapped timeline itself)",
    )
    args = parser.parse_args()
    Path(args.store).mkdir(parents=True, exist_ok=True)
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    client = AsyncClient(args.homeserver, args.user_id, store_path=args.store, config=config)

    async def on_invite(room: MatrixRoom, event: InviteMemberEvent) -> None:
        if event.state_key == client.user_id and event.membership == "invite":
            await client.join(room.room_id)

    async def on_text(room: MatrixRoom, event: RoomMessageText) -> None:
        if event.sender == client.user_id:
            return
        content = {"msgtype": "m.text", "body": f"echo: {event.body}"}
        await client.room_send(
            room.room_id, "m.room.message", content, ignore_unverified_devices=True
        )

    async def on_undecryptable(room: MatrixRoom, event: MegolmEvent) -> None:
        print(f"undecryptable {event.event_id} from {event.sender}", file=sys.stderr, flush=True)

    client.add_event_callback(on_invite, InviteMemberEvent)
    client.add_event_callback(on_text, RoomMessageText)
    client.add_event_callback(on_undecryptable, MegolmEvent)

    # A restart keeps its device (as a real bot does): a new one could not read what was
    # sent to the old one while it was stopped.
    session = Path(args.store) / "session.json"
    if session.exists():
        saved = json.loads(session.read_text())
        client.restore_login(args.user_id, saved["device_id"], saved["access_token"])
    else:
        login = await client.login(os.environ["NIO_ECHO_PASSWORD"], device_name="nio-echo-bot")
        if not isinstance(login, LoginResponse):
            print(f"login failed: {login}", file=sys.stderr, flush=True)
            await client.close()
            return 6
        session.touch(mode=0o600)
        session.write_text(
            json.dumps({"device_id": login.device_id, "access_token": login.access_token})
        )

    async def announce() -> None:
        await client.synced.wait()
        took = time.monotonic() - started  # the first sync plus its key upload
        print(f"connected (first sync {took:.2f}s) device {client.device_id}", flush=True)

    loop = asyncio.get_running_loop()
    started = time.monotonic()  # like dispatch-matrix's figure: from the first /sync request
    first_filter = (
        None
        if args.timeline_limit is None
        else {"room": {"timeline": {"limit": args.timeline_limit}}}
    )
    syncing = asyncio.ensure_future(
        client.sync_forever(timeout=args.sync_timeout_ms, first_sync_filter=first_filter)
    )
    announcing = asyncio.ensure_future(announce())
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, syncing.cancel)
    try:
        await syncing
    except asyncio.CancelledError:
        pass
    finally:
        announcing.cancel()
        await client.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
