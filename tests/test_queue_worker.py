"""The queue's control commands as the worker and the commands take them: answered at once,
without the model, while paused or while a long model call runs; `!cancel` stops that call
and the queue goes on. The worker tier: the real queue, agent and store in this process, the
stand-in on loopback, a fake room (no homeserver; order, catch-up, the phone's view and a
flood through Synapse stay in tests/test_queue_e2e.py)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from fake_messages_api import FakeMessagesAPI
from harness.workbench import BOT, Bench

pytestmark = [pytest.mark.worker]

MakeBench = Callable[..., Bench]


async def test_control_commands_answer_at_once_without_the_model(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    bench = make_bench()
    await bench.send("!pause")
    await bench.room.wait_message("Paused")
    first = await bench.send("queued while paused")
    await bench.send("!queue")
    listing = await bench.room.wait_message("in the queue")
    assert "queued while paused" in listing.body and "paused" in listing.body
    await bench.send("!status")
    status = await bench.room.wait_message("Idle")
    assert re.search(r"Queue: 1 waiting", status.body)
    await bench.send("!frobnicate")
    unknown = await bench.room.wait_message("don't know `!frobnicate`")
    assert "!cancel" in unknown.body
    assert fake_api.requests == [], "commands never reach the model"
    await bench.send("!resume")
    resumed = await bench.room.wait_message("Resumed")
    await bench.room.wait_message("queued while paused", after=resumed.event_id)
    # The echo model repeats the owner's text after its "[sent …]" line.
    answers = [
        m.body.splitlines()[-1]
        for m in bench.room.messages
        if m.sender == BOT and m.reply_to == first.event_id
    ]
    assert answers == ["queued while paused"]
    await bench.send("!history")
    history = await bench.room.wait_message("queued while paused ")
    assert "✅" in history.body


async def test_cancel_stops_a_long_model_call_and_the_queue_goes_on(
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    bench = make_bench()
    fake_api.reply("too late", delay=600)
    slow = await bench.send("think for ten minutes")
    await fake_api.await_requests(1)
    await bench.send("!cancel")
    cancelled = await bench.room.wait_message("Cancelled")
    assert cancelled.reply_to == slow.event_id
    await bench.send("next one")
    await bench.room.wait_message("next one")
    finished = await bench.wait_log("task.finished", count=2)
    assert [r["state"] for r in finished] == ["cancelled", "done"]
