"""Connectors end to end: a real stdio MCP server (tests/servers/notes_server.py, written
with the `mcp` package) used from the phone, its approvals and its restart; and `mcp import`
of a Claude Desktop file holding a secret — Synapse, a strict js client, the bot process,
and the scripted Messages API. The API's web search with its sources is in the worker tier:
tests/test_connectors_worker.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import signal
import stat
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import BotSetup, beside_bot_start, started
from fake_messages_api import FakeMessagesAPI
from harness.bot import BotProcess
from harness.jsclient import JsClient
from test_cli_e2e import cli

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]
NOTES_SERVER = Path(__file__).parent / "servers" / "notes_server.py"


def notes_config(folder: Path, **more_env: str) -> str:
    env = {"NOTES_FILE": str(folder / "notes.txt"), "NOTES_PID_FILE": str(folder / "pids")}
    env.update(more_env)
    return f"""
[permissions]
allow = ["mcp__notes"]
ask = ["mcp__notes__add_note"]
approval_timeout_s = 60

[mcp.servers.notes]
command = {json.dumps(sys.executable)}
args = [{json.dumps(str(NOTES_SERVER))}]
env = {{ {", ".join(f"{k} = {json.dumps(v)}" for k, v in env.items())} }}

[mcp.servers.broken]
command = {json.dumps(str(folder / "no-such-mcp-server"))}
"""


def tool_results(request: Any) -> list[dict[str, Any]]:
    return [b for b in request.body["messages"][-1]["content"] if b.get("type") == "tool_result"]


def result_text(block: dict[str, Any]) -> str:
    return "".join(part.get("text", "") for part in block["content"])


def messages_to_model(fake_api: FakeMessagesAPI) -> list[Any]:
    return [r for r in fake_api.requests if r.path == "/v1/messages" and r.status == 200]


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie waiting for init's reaping does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the leash is Linux's")
async def test_a_server_that_ignores_its_stdin_dies_with_a_daemon_killed_9(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    running: list[BotProcess],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "mcp"
    folder.mkdir()
    setup, bot, owner, room = await started(
        make_bot, owner_client, running, extra=notes_config(folder, NOTES_OUTLIVE_STDIN="1")
    )
    await bot.wait_log("mcp.ready", where=lambda r: r.get("server") == "notes")
    server = int((folder / "pids").read_text().split()[-1])
    assert _alive(server)
    # The server is the leash itself after its exec: same pid, the configured argv.
    argv = Path(f"/proc/{server}/cmdline").read_bytes().split(b"\0")
    assert argv[1].decode() == str(NOTES_SERVER)

    # The daemon alone (a `kill -9 PID`, an OOM kill), not its process group.
    os.kill(bot.pid, signal.SIGKILL)
    await bot.wait_exit(10)
    # Nothing reports the exit of a process that is not our child: poll, with a hang guard
    # generous enough for a loaded machine (it ends as soon as the server is gone).
    for _ in range(300):
        if not _alive(server):
            break
        await asyncio.sleep(0.1)
    assert not _alive(server), "the MCP server outlived the daemon's kill -9"

    # A new daemon on the same state folder starts its own server; the old one stays gone.
    await bot.start()
    await bot.wait_log("mcp.ready", count=2, where=lambda r: r.get("server") == "notes")
    assert int((folder / "pids").read_text().split()[-1]) != server


async def test_the_phone_uses_an_mcp_server_asks_for_its_rule_and_outlives_its_crash(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "mcp"
    folder.mkdir()
    setup, bot, owner, room = await started(
        make_bot, owner_client, running, extra=notes_config(folder)
    )
    bot_id = setup.bot.user_id
    await bot.wait_log("mcp.ready", where=lambda r: r.get("server") == "notes")

    # A server that does not start is told once in the room; the bot carries on.
    notice = await owner.wait_message(room, sender=bot_id, contains="did not start", timeout=60)
    assert "**broken**" in notice["body"] and "command not found" in notice["body"]

    # 1. An `ask` rule on one tool: the question shows the arguments whole; yes runs it.
    note = "call the plumber at 5, " + "and mention the leak under the sink " * 12 + "END"
    fake_api.reply("Noting it.", tools=[("mcp__notes__add_note", {"text": note})])
    fake_api.reply("Noted.")
    await owner.send_text(room, "make a note to call the plumber")
    question = await owner.wait_message(room, sender=bot_id, contains="May I?")
    assert "mcp__notes__add_note" in question["body"] and note in question["body"]
    assert not (folder / "notes.txt").exists()
    await owner.send_text(room, "yes")
    await owner.wait_message(room, sender=bot_id, contains="Noted.")
    requests = messages_to_model(fake_api)
    offered = {t["name"]: t for t in requests[0].body["tools"]}
    assert offered["mcp__notes__add_note"]["input_schema"]["required"] == ["text"]
    assert "mcp__broken__" not in json.dumps(requests[0].body["tools"])
    [added] = tool_results(requests[1])
    assert not added.get("is_error") and "added note 1" in result_text(added)
    assert (folder / "notes.txt").read_text().strip() == note

    # 2. A tool the server-wide allow rule covers runs without a question.
    fake_api.reply(tools=[("mcp__notes__list_notes", {})])
    fake_api.reply("You have one note.")
    listed_at = await owner.send_text(room, "what are my notes?")
    answer = await owner.wait_message(
        room, sender=bot_id, contains="You have one note", after_event_id=listed_at
    )
    [listed] = tool_results(messages_to_model(fake_api)[-1])
    assert result_text(listed).startswith("1. call the plumber at 5")
    assert len(bot.log_events("approval.asked")) == 1

    # 3. Killed while the daemon runs: restarted, and the next call works.
    pid = int((folder / "pids").read_text().split()[-1])
    os.kill(pid, signal.SIGKILL)
    await bot.wait_log("mcp.died", where=lambda r: r.get("server") == "notes")
    await bot.wait_log("mcp.ready", count=2, where=lambda r: r.get("server") == "notes")
    fake_api.reply(tools=[("mcp__notes__list_notes", {})])
    fake_api.reply("Still one note after the restart.")
    await owner.send_text(room, "and now?")
    await owner.wait_message(
        room, sender=bot_id, contains="Still one note", after_event_id=answer["event_id"]
    )
    [again] = tool_results(messages_to_model(fake_api)[-1])
    assert not again.get("is_error") and "call the plumber" in result_text(again)
    assert int((folder / "pids").read_text().split()[-1]) != pid

    # The tools part of every request was the same: the prompt cache held through it all.
    tool_lists = {json.dumps(r.body["tools"], sort_keys=True) for r in messages_to_model(fake_api)}
    assert len(tool_lists) == 1

    # 4. !tools lists them all, with the rule of each and the servers' states.
    await owner.send_text(room, "!tools")
    report = await owner.wait_message(room, sender=bot_id, contains="My tools now")
    body = report["body"]
    assert "`bash` — ask (no rule)" in body
    assert "**MCP server notes** — ready, 7 tools (restarted 1×)" in body
    assert "`mcp__notes__add_note` — ask (mcp__notes__add_note)" in body
    assert "`mcp__notes__list_notes` — allow (mcp__notes)" in body
    assert "**MCP server broken** — failed: command not found" in body

    mine = [
        m
        for m in await owner.messages(room)
        if m["sender"] == bot_id and m["type"] == "m.room.message"
    ]
    assert sum("did not start" in str(m["content"]) for m in mine) == 1
    assert mine and all(m["wire_type"] == "m.room.encrypted" for m in mine)

    # The server stops with the daemon (SIGTERM), though it runs in its own process group.
    server_pid = int((folder / "pids").read_text().split()[-1])
    assert await bot.stop() == 0
    with pytest.raises(ProcessLookupError):
        os.kill(server_pid, 0)


async def test_mcp_import_of_a_claude_desktop_file_keeps_its_secret_out_of_sight(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
    tmp_path: Path,
) -> None:
    token = "ntk_" + secrets.token_urlsafe(24)
    desktop = tmp_path / "claude_desktop_config.json"
    desktop.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "notes": {
                        "command": sys.executable,
                        "args": [str(NOTES_SERVER)],
                        "env": {"NOTES_TOKEN": token, "NOTES_FILE": str(tmp_path / "n.txt")},
                    }
                }
            }
        )
    )
    setup = make_bot(extra='\n[permissions]\nallow = ["mcp__notes"]\n')
    config = setup.config.path

    code, out, err = await cli("mcp", "import", str(desktop), "--config", str(config), "--dry-run")
    assert code == 0, err
    assert token not in out and "[mcp.servers.notes]" in out
    assert "[mcp.servers" not in config.read_text()

    code, out, err = await cli("mcp", "import", str(desktop), "--config", str(config))
    assert code == 0, err
    assert token not in out + err and "env NOTES_TOKEN: moved to a file" in out
    text = config.read_text()
    assert token not in text and "[mcp.servers.notes]" in text
    [secret_file] = list((setup.config.state / "secrets" / "mcp").iterdir())
    assert secret_file.read_text().strip() == token
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert str(secret_file) in text

    # Imported again: the name is taken, nothing changes.
    code, out, _err = await cli("mcp", "import", str(desktop), "--config", str(config))
    assert code == 1 and "already has [mcp.servers.notes]" in out
    assert config.read_text() == text

    # The daemon starts it with the secret; the secret stays out of logs, room and model.
    bot = setup.process()
    running.append(bot)
    owner = await beside_bot_start(bot, owner_client(setup.owner))
    room = await owner.create_dm(setup.bot.user_id)
    await owner.wait_join(room, setup.bot.user_id)
    fake_api.reply(tools=[("mcp__notes__check_token", {})])
    fake_api.reply(f"The notes server has its token. It is {token}, by the way.")
    await owner.send_text(room, "does the notes server have its token?")
    answer = await owner.wait_message(room, sender=setup.bot.user_id, contains="has its token")
    assert token not in answer["body"] and "«redacted»" in answer["body"]
    digest = hashlib.sha256(token.encode()).hexdigest()[:12]
    [checked] = tool_results(messages_to_model(fake_api)[1])
    assert f"sha256 {digest}" in result_text(checked)
    assert all(token not in json.dumps(r.body) for r in fake_api.requests)
    assert token not in bot.log_file.read_text()
    assert all(token not in json.dumps(m["content"]) for m in await owner.messages(room))
