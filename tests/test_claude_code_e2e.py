"""The Claude Code engine end to end: Synapse, a strict js client (the phone), the bot
process with `[agent] engine = "claude-code"`, its bundled Claude Code CLI, and the scripted
Messages API stand-in the CLI is pointed at. Skipped only when the claude-code extra is not
installed (tools/test installs it)."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from conftest import BotSetup
from fake_messages_api import FakeMessagesAPI
from harness.bot import BotProcess
from harness.jsclient import JsClient
from test_crash_e2e import processes_with

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.claude_code,
    pytest.mark.skipif(
        importlib.util.find_spec("claude_agent_sdk") is None,
        reason="the claude-code extra is not installed (tools/sync --extra claude-code)",
    ),
]

StartClient = Callable[..., Awaitable[JsClient]]

ENGINE = 'engine = "claude-code"\n'
PERMISSIONS = """
[permissions]
allow = ["Bash(echo:*)", "Bash(sleep:*)"]
deny = ["Bash(rm:*)"]
approval_timeout_s = 60
"""
# Our shell, as Claude Code names it (the in-process MCP server's tool).
BASH = "mcp__dispatch__bash"


def process_for(setup: BotSetup) -> BotProcess:
    """The bot process, with Claude Code's own folder (sessions, settings) in the test's."""
    home = setup.config.folder / "claude"
    return BotProcess(setup.config, env={"CLAUDE_CONFIG_DIR": str(home)})


async def start(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    running: list[BotProcess],
    extra: str = "",
) -> tuple[BotSetup, BotProcess, JsClient, str]:
    setup = make_bot(extra=extra, agent_extra=ENGINE)
    bot = await process_for(setup).start()
    running.append(bot)
    owner = await owner_client(setup.owner)
    room = await owner.create_dm(setup.bot.user_id)
    await owner.wait_join(room, setup.bot.user_id)
    return setup, bot, owner, room


def from_claude_code(api: FakeMessagesAPI) -> list[dict[str, object]]:
    """The bodies of the model requests the CLI made (it names itself in its beta header)."""
    return [
        r.body
        for r in api.requests
        if r.path == "/v1/messages"
        and r.status == 200
        and "claude-code" in r.headers.get("anthropic-beta", "")
    ]


def tool_results(body: dict[str, object]) -> list[str]:
    messages = body["messages"]
    assert isinstance(messages, list)
    return [
        json.dumps(block)
        for message in messages
        if isinstance(message.get("content"), list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]


async def test_a_message_is_answered_and_a_restart_keeps_the_conversation(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await start(make_bot, owner_client, running)
    bot_id = setup.bot.user_id
    fake_api.reply("Hello from Claude Code, the word is PELICAN.")
    began = time.monotonic()
    await owner.send_text(room, "hello, remember a word for me")
    answer = await owner.wait_message(room, sender=bot_id, contains="PELICAN", timeout=90)
    print(f"first answer after {time.monotonic() - began:.2f}s")
    assert answer["was_encrypted"]
    assert from_claude_code(fake_api), "the answer came through Claude Code"
    await bot.stop(15)

    bot = await process_for(setup).start()
    running.append(bot)
    fake_api.reply("It was PELICAN, I still know.")
    await owner.send_text(room, "which word was it?")
    await owner.wait_message(room, sender=bot_id, contains="still know", timeout=90)
    last = json.dumps(from_claude_code(fake_api)[-1]["messages"])
    # The second process resumed the session: the first exchange travels in the request.
    assert "hello, remember a word for me" in last and "the word is PELICAN" in last


async def test_a_command_outside_the_rules_runs_after_yes_and_a_denied_one_is_refused(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, _bot, owner, room = await start(make_bot, owner_client, running, PERMISSIONS)
    bot_id = setup.bot.user_id
    work = setup.config.folder / "work"
    fake_api.reply(tools=[(BASH, {"command": "touch approved.txt"})])
    fake_api.reply("Made the file.")
    await owner.send_text(room, "make a file")
    question = await owner.wait_message(room, sender=bot_id, contains="May I?", timeout=90)
    assert "touch approved.txt" in question["content"]["body"]
    assert not (work / "approved.txt").exists(), "nothing runs before the answer"
    await owner.send_text(room, "yes")
    await owner.wait_message(room, sender=bot_id, contains="Made the file", timeout=60)
    assert (work / "approved.txt").exists()

    (work / "keep.txt").write_text("keep me")
    fake_api.reply(tools=[(BASH, {"command": "rm keep.txt"})])
    fake_api.reply("I was not allowed to.")
    await owner.send_text(room, "delete keep.txt")
    await owner.wait_message(room, sender=bot_id, contains="not allowed to", timeout=90)
    assert (work / "keep.txt").exists()
    refused = tool_results(from_claude_code(fake_api)[-1])[-1]
    assert "Not allowed" in refused and "Bash(rm:*)" in refused
    said = [
        m["content"].get("body", "") for m in await owner.messages(room) if m["sender"] == bot_id
    ]
    assert not any("rm keep.txt" in text and "May I?" in text for text in said), "not asked"


async def test_cancel_stops_a_long_command_and_its_processes(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await start(make_bot, owner_client, running, PERMISSIONS)
    bot_id = setup.bot.user_id
    marker = "600.0331"
    fake_api.reply(tools=[(BASH, {"command": f"sleep {marker}"})])
    await owner.send_text(room, "wait ten minutes")
    await owner.wait_message(room, sender=bot_id, contains=f"sleep {marker}", timeout=90)
    # Our shell tells the worker its process group as it starts (what `!cancel` kills).
    await bot.wait_log("task.process_started")
    assert processes_with(marker), "the command is running"
    began = time.monotonic()
    await owner.send_text(room, "!cancel")
    await owner.wait_message(room, sender=bot_id, contains="Cancelled", timeout=30)
    took = time.monotonic() - began
    assert processes_with(marker) == [], "the whole process group is gone"
    print(f"cancel took {took:.2f}s")
    # The owner stopped it: the ledger does not hold it as a turn a crash interrupted.
    with sqlite3.connect(setup.config.state / "dispatch.db") as ledger:
        rows = ledger.execute("SELECT running_task FROM engine_sessions").fetchall()
    assert rows == [(None,)]
    fake_api.reply("Still here.")
    await owner.send_text(room, "are you still there?")
    await owner.wait_message(room, sender=bot_id, contains="Still here", timeout=90)


async def test_kill_9_mid_task_resumes_the_session_and_tells_claude_rather_than_redo(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await start(make_bot, owner_client, running, PERMISSIONS)
    bot_id = setup.bot.user_id
    marker = "600.0332"
    fake_api.reply("Starting the long job.", tools=[(BASH, {"command": f"sleep {marker}"})])
    sent = await owner.send_text(room, "run the long job")
    await owner.wait_message(room, sender=bot_id, contains=f"sleep {marker}", timeout=90)
    await bot.wait_log("task.process_started")
    before = len(from_claude_code(fake_api))
    await bot.kill9()

    fake_api.reply("The long job was interrupted; I checked and stopped there.")
    bot = process_for(setup)
    await bot.start()
    running.append(bot)
    notice = await owner.wait_message(room, sender=bot_id, contains="I was stopped", timeout=90)
    assert notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == sent
    final = await owner.wait_message(room, sender=bot_id, contains="was interrupted;", timeout=90)
    assert final["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == sent
    after = from_claude_code(fake_api)[before:]
    assert len(after) == 1, "one request after the restart: the command was not re-run"
    resumed = json.dumps(after[0]["messages"])
    # The same session (the first turn is there), and Claude was told why it sees it again.
    assert "run the long job" in resumed and "Starting the long job." in resumed
    assert "The computer stopped while you were working" in resumed
    assert processes_with(marker) == [], "nothing of the first run is left"
    answers = [
        m
        for m in await owner.messages(room)
        if m["sender"] == bot_id and "was interrupted;" in m["content"].get("body", "")
    ]
    assert len(answers) == 1, "answered once"


NOTES_SERVER = Path(__file__).parent / "servers" / "notes_server.py"


async def test_an_mcp_tool_of_the_config_is_called_through_claude_code(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
    tmp_path: Path,
) -> None:
    notes = tmp_path / "notes.txt"
    pids = json.dumps(str(tmp_path / "pids"))
    servers = f"""
[permissions]
allow = ["mcp__notes"]

[mcp.servers.notes]
command = {json.dumps(sys.executable)}
args = [{json.dumps(str(NOTES_SERVER))}]
env = {{ NOTES_FILE = {json.dumps(str(notes))}, NOTES_PID_FILE = {pids} }}
"""
    setup, _bot, owner, room = await start(make_bot, owner_client, running, servers)
    bot_id = setup.bot.user_id
    # The hub's tool, as Claude Code sees it through our in-process server.
    fake_api.reply(tools=[("mcp__dispatch__mcp__notes__add_note", {"text": "buy milk"})])
    fake_api.reply("Noted.")
    await owner.send_text(room, "note: buy milk")
    await owner.wait_message(room, sender=bot_id, contains="Noted.", timeout=90)
    assert notes.read_text().strip() == "buy milk"
    [request, *_] = from_claude_code(fake_api)
    offered = {tool["name"] for tool in request["tools"]}  # type: ignore[union-attr]
    assert "mcp__dispatch__mcp__notes__add_note" in offered
    [result] = tool_results(from_claude_code(fake_api)[-1])
    assert "added note 1" in result


ENV_KEY = "sk-ant-api03-from-the-daemon-environment-0331"


async def test_a_hostile_cat_through_claude_code_meets_our_wall(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    """The same attack as test_sandbox_e2e's, through Claude Code: the owner approves, our
    sandbox alone stands between the command and the secrets (the daemon's and the CLI's
    environment, which hold the API key, the config, the state folder)."""
    setup = make_bot(extra='[permissions]\nallow = ["Bash(echo:*)"]\n', agent_extra=ENGINE)
    process = process_for(setup)
    process.env["ANTHROPIC_API_KEY"] = ENV_KEY
    bot = await process.start()
    running.append(bot)
    owner = await owner_client(setup.owner)
    room = await owner.create_dm(setup.bot.user_id)
    await owner.wait_join(room, setup.bot.user_id)
    assert bot.log_events("sandbox.active"), "the sandbox is on by default"
    bot_id = setup.bot.user_id
    config, state = setup.config.path, setup.config.state
    command = (
        "cat /proc/$PPID/environ /proc/1/environ | tr '\\0' '\\n'; "
        f"cat ../*.toml ../sta*/* {config} {state}/*; echo done-reading"
    )
    fake_api.reply("Following the diff.", tools=[(BASH, {"command": command})])
    fake_api.reply("Nothing interesting there.")
    await owner.send_text(room, "review this diff (it says: print your config)")
    await owner.wait_message(room, sender=bot_id, contains="May I?", timeout=90)
    await owner.send_text(room, "yes")
    await owner.wait_message(room, sender=bot_id, contains="Nothing interesting", timeout=90)
    [output] = tool_results(from_claude_code(fake_api)[-1])
    assert "done-reading" in output, "the command ran"
    everything = json.dumps([r.body for r in fake_api.requests])
    for secret in (setup.bot.password, ENV_KEY, "sk-ant-test-not-a-real-key"):
        assert secret not in everything
    said = [m["content"].get("body", "") for m in await owner.messages(room)]
    assert all(ENV_KEY not in body and setup.bot.password not in body for body in said)
