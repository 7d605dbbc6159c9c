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
    RoomMessagesResponse,
    RoomMessageText,
    SyncResponse,
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
        default=0,
        help="room timeline events per sync (0: the server's default); above a backlog, its "
        "first sync holds all of it, oldest first, and nothing is paged back (the best case)",
    )
    args = parser.parse_args()
    Path(args.store).mkdir(parents=True, exist_ok=True)
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    client = AsyncClient(args.homeserver, args.user_id, store_path=args.store, config=config)

    async def on_invite(room: MatrixRoom, event: InviteMemberEvent) -> None:
        if event.state_key == client.user_id and event.membership == "invite":
            await client.join(room.room_id)

    async def on_text(room: MatrixRoom, event: RoomMessageText) -> None:
        await answer(room.room_id, event)

    async def answer(room_id: str, event: RoomMessageText) -> None:
        if event.sender == client.user_id:
            return
        content = {"msgtype": "m.text", "body": f"echo: {event.body}"}
        await client.room_send(room_id, "m.room.message", content, ignore_unverified_devices=True)

    since: list[str | None] = [None]

    async def on_sync(response: SyncResponse) -> None:
        # nio does not fill a gapped ("limited") timeline: what came while the bot was
        # stopped, beyond the newest few, is paged back here (as any bot that must not lose
        # a message does), oldest first, after the newest few were answered.
        before, since[0] = since[0], response.next_batch
        for room_id, info in response.rooms.join.items():
            if before is None or not info.timeline.limited or not info.timeline.prev_batch:
                continue
            gap: list[RoomMessageText] = []
            token = info.timeline.prev_batch
            while True:
                page = await client.room_messages(room_id, token, end=before, limit=100)
                if not isinstance(page, RoomMessagesResponse) or not page.chunk:
                    break
                gap += [e for e in page.chunk if isinstance(e, RoomMessageText)]
                if not page.end or page.end == token:
                    break
                token = page.end
            for event in reversed(gap):
                await answer(room_id, event)

    async def on_undecryptable(room: MatrixRoom, event: MegolmEvent) -> None:
        print(f"undecryptable {event.event_id} from {event.sender}", file=sys.stderr, flush=True)

    client.add_event_callback(on_invite, InviteMemberEvent)
    client.add_event_callback(on_text, RoomMessageText)
    client.add_event_callback(on_undecryptable, MegolmEvent)
    client.add_response_callback(on_sync, SyncResponse)

    # A restart keeps its device (as a real bot does): a new one could not read what was
    # sent to the old one while it was stopped.
    session = Path(args.store) / "session.json"
    if session.exists():
        saved = json.loads(session.read_text())
        client.restore_login(args.user_id, saved["device_id"], saved["access_token"])
        since[0] = client.loaded_sync_token
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
    sync_filter = {"room": {"timeline": {"limit": args.timeline_limit}}}
    syncing = asyncio.ensure_future(
        client.sync_forever(
            timeout=args.sync_timeout_ms,
            sync_filter=sync_filter if args.timeline_limit else None,
        )
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
