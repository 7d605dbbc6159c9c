"""The stage idle.py and startup.py share, and the run that clears it.

`set_stage` brings up a private Synapse, the Messages API stand-in and a bot whose owner
(matrix-js-sdk) has opened an encrypted DM and had one answer, and stops the bot again:
what a benchmark of restarts starts from. `run_staged` runs a benchmark in its own event
loop and, however it ends, stops everything the reaper tracks, kills what is left and
removes the temporary folder.

Importing this module does nothing: `foundation` (which puts tools/ and tests/ on
sys.path) is imported when a stage is set, so `report.py` may import `idle` freely.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Stage:
    """A warmed-up bot's state folder, its owner's client and their DM."""

    # foundation.Bench, harness.bot.BotConfig and harness.jsclient.JsClient: typed loosely
    # so that importing this module imports none of them.
    bench: Any
    config: Any
    owner: Any
    room: str
    bot_user: str

    def bot(self) -> Any:
        """A new bot process on the stage's state folder (not yet started)."""
        return self.bench.bot_process(self.config)


async def set_stage(
    args: argparse.Namespace, folder: Path, *, bot_name: str, owner_name: str
) -> Stage:
    """Synapse, the stand-in API, a bot and its owner in an encrypted DM after one answer;
    the bot stopped. `args` carries the bot's settings (`bot_sync_timeout_ms`,
    `bot_log_level`)."""
    import foundation as f

    f.check_installed()
    synapse = f.LocalSynapse(folder / "synapse", port=f.free_port())
    await asyncio.to_thread(synapse.configure)
    f.REAPER.add("synapse", lambda: asyncio.to_thread(synapse.stop))
    try:
        await asyncio.to_thread(synapse.start)
    finally:
        hs = synapse.process
        if hs is not None:
            f.REAPER.track("synapse", hs.pid, True, lambda: hs.poll() is not None)
    api = f.FakeMessagesAPI().start()
    f.REAPER.add("fake messages api", lambda: asyncio.to_thread(api.stop))
    accounts = f.Accounts(synapse)
    bench = f.Bench(args, synapse, accounts, api, folder)
    bot_account, owner_account = accounts.new(bot_name), accounts.new(owner_name)
    config = bench.bot_config(bot_account, owner_account)
    bot = bench.bot_process(config)
    await f.timed_start(bot)
    owner = await f.start_js(synapse.url, owner_account, f"owner-{bot_name}")
    room = await f.open_dm(owner, bot_account.user_id)
    await f.one_reply(owner, room, bot_account.user_id, "warmup")
    await f.stop_bot(bot)
    return Stage(bench, config, owner, room, bot_account.user_id)


def run_staged(bench: Callable[[], Awaitable[T]], folder: Path) -> T:
    """`bench()` run to its end in a new event loop; then everything it started is
    stopped (gracefully, then killed) and `folder` removed, whether it ended well or not."""
    import foundation as f

    async def run() -> T:
        try:
            return await bench()
        finally:
            await f.REAPER.stop_all()

    try:
        return asyncio.run(run())
    finally:
        f.REAPER.kill_all()
        shutil.rmtree(folder, ignore_errors=True)
