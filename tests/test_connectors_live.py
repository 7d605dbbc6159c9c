"""MCP servers for real, without a homeserver: the notes server (tests/servers) run as a
stdio child or over streamable HTTP, driven through the connectors hub the daemon uses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dispatch_matrix.app.homeserver import free_port
from dispatch_matrix.connectors.hub import Connectors
from dispatch_matrix.connectors.server import McpServer
from dispatch_matrix.connectors.settings import McpSection
from dispatch_matrix.connectors.status import State
from dispatch_matrix.core.backoff import Backoff
from dispatch_matrix.core.logs import REDACTED, REDACTOR
from dispatch_matrix.toolbox.base import ToolContext
from dispatch_matrix.toolbox.registry import ToolRegistry

NOTES_SERVER = Path(__file__).parent / "servers" / "notes_server.py"
CTX = ToolContext(workdir=Path("/"), allowed_roots=(), bash_timeout_s=1)
WAIT = 30


def notes(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    env = {"NOTES_FILE": str(tmp_path / "notes.txt"), "NOTES_PID_FILE": str(tmp_path / "pids")}
    return {
        "command": sys.executable,
        "args": [str(NOTES_SERVER)],
        "env": {**env, **extra.pop("env", {})},
        **extra,
    }


def pids(tmp_path: Path) -> list[int]:
    path = tmp_path / "pids"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.asynccontextmanager
async def running(
    servers: dict[str, Any], environ: dict[str, str] | None = None
) -> AsyncIterator[Connectors]:
    hub = Connectors.from_config(McpSection(servers=servers), environ=environ)
    for server in hub._servers.values():
        # Quick restarts, so a test waits a second for one, not the daemon's minutes.
        server._backoff = Backoff(0.2, 1.0)
    task = asyncio.create_task(hub.run())
    try:
        await asyncio.wait_for(hub.settled(), WAIT)
        yield hub
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def text(result: Any) -> str:
    return "".join(part.get("text", "") for part in result.content)


def server(hub: Connectors, name: str = "notes") -> McpServer:
    found = hub.server(name)
    assert found is not None
    return found


async def test_a_server_lists_its_tools_and_every_failure_is_an_error_result(
    tmp_path: Path,
) -> None:
    async with running({"notes": notes(tmp_path, timeout_s=1.5)}) as hub:
        names = [d["name"] for d in hub.definitions()]
        assert names == sorted(names) and "mcp__notes__add_note" in names
        add = next(d for d in hub.definitions() if d["name"] == "mcp__notes__add_note")
        assert add["input_schema"]["properties"]["text"]["type"] == "string"
        assert add["input_schema"]["required"] == ["text"]

        added = await hub.run_tool("mcp__notes__add_note", {"text": "buy milk"}, CTX)
        assert not added.is_error and "added note 1" in text(added)
        listed = await hub.run_tool("mcp__notes__list_notes", {}, CTX)
        assert text(listed) == "1. buy milk"

        failed = await hub.run_tool("mcp__notes__fail", {}, CTX)
        assert failed.is_error
        slow = await hub.run_tool("mcp__notes__slow", {"seconds": 5}, CTX)
        assert slow.is_error and "did not answer within 2s" in text(slow)
        wrong = await hub.run_tool("mcp__notes__add_note", {"text": 3}, CTX)
        assert wrong.is_error and "valid string" in text(wrong)
        picture = await hub.run_tool("mcp__notes__picture", {}, CTX)
        assert picture.content[0]["type"] == "image"
        assert picture.content[0]["source"]["media_type"] == "image/png"
        unknown = await hub.run_tool("mcp__notes__nothing", {}, CTX)
        assert unknown.is_error


async def test_a_killed_server_is_restarted_and_its_tool_list_stays_put(tmp_path: Path) -> None:
    async with running({"notes": notes(tmp_path)}) as hub:
        registry = ToolRegistry()
        registry.add_provider(hub)
        version = registry.version
        before = hub.definitions()
        generation = hub.generation
        await hub.run_tool("mcp__notes__add_note", {"text": "kept across restarts"}, CTX)
        [first] = pids(tmp_path)
        os.kill(first, signal.SIGKILL)
        notes_server = server(hub)
        await asyncio.wait_for(notes_server.wait_until(lambda s: s.starts >= 2), WAIT)
        assert notes_server.status().state is State.READY and notes_server.restarts == 1
        second = pids(tmp_path)[-1]
        assert second != first and alive(second)
        listed = await hub.run_tool("mcp__notes__list_notes", {}, CTX)
        assert not listed.is_error and "kept across restarts" in text(listed)
        # Same tools after the restart: same list, same cache generation, and the registry
        # was not told of a change (its engine keeps sending the list it holds).
        assert hub.definitions() == before and hub.generation == generation
        assert registry.version == version


async def test_a_server_that_changes_its_tools_changes_the_list_once(tmp_path: Path) -> None:
    async with running({"notes": notes(tmp_path)}) as hub:
        registry = ToolRegistry()
        registry.add_provider(hub)
        version = registry.version
        hub.definitions()
        generation = hub.generation
        grown = await hub.run_tool("mcp__notes__grow", {}, CTX)
        assert text(grown) == "grown"
        notes_server = server(hub)
        await asyncio.wait_for(
            notes_server.wait_until(lambda s: "mcp__notes__fresh" in s.tool_names()), WAIT
        )
        assert "mcp__notes__fresh" in [d["name"] for d in hub.definitions()]
        assert hub.generation == generation + 1
        # The registry was told, once: its holder asks for the list again, and gets it.
        assert registry.version == version + 1
        assert "mcp__notes__fresh" in [d["name"] for d in registry.definitions()]
        for _ in range(3):
            await hub.run_tool("mcp__notes__list_notes", {}, CTX)
            hub.definitions()
        assert hub.generation == generation + 1
        fresh = await hub.run_tool("mcp__notes__fresh", {}, CTX)
        assert text(fresh) == "fresh!"


async def test_a_server_that_cannot_start_is_reported_once_and_the_others_carry_on(
    tmp_path: Path,
) -> None:
    servers = {"broken": {"command": str(tmp_path / "no-such-server")}, "notes": notes(tmp_path)}
    async with running(servers) as hub:
        broken = server(hub, "broken")
        assert broken.status().state is State.FAILED
        assert "command not found" in broken.status().detail
        await asyncio.wait_for(broken.wait_until(lambda s: s.restarts >= 2), WAIT)
        assert hub.failures.qsize() == 1
        name, why = hub.failures.get_nowait()
        assert name == "broken" and "command not found" in why
        assert hub.tools_of("broken") == []
        listed = await hub.run_tool("mcp__notes__list_notes", {}, CTX)
        assert not listed.is_error


async def test_a_waiter_hears_of_restarts_of_a_server_that_never_comes_up(
    tmp_path: Path,
) -> None:
    """Alone, with no other server's start to mask it: a waiter was told only when a server
    came up, so one waiting for a never-ready server's restarts waited forever."""
    async with running({"broken": {"command": str(tmp_path / "no-such-server")}}) as hub:
        broken = server(hub, "broken")
        await asyncio.wait_for(broken.wait_until(lambda s: s.restarts >= 2), WAIT)
        assert broken.status().state in (State.FAILED, State.STARTING)
        assert hub.failures.qsize() == 1  # told once, however often it is tried again


async def test_a_missing_secret_fails_that_server_alone(tmp_path: Path) -> None:
    servers = {"needs": notes(tmp_path, env={"NOTES_TOKEN": "${UNSET_TOKEN_VAR}"})}
    async with running(servers, environ={}) as hub:
        status = server(hub, "needs").status()
        assert status.state is State.FAILED and "UNSET_TOKEN_VAR" in status.detail
        assert hub.failures.qsize() == 1


async def test_a_secret_file_reaches_the_server_and_nothing_else(tmp_path: Path) -> None:
    token = "notes-token-" + os.urandom(8).hex()
    secret = tmp_path / "token"
    secret.write_text(token + "\n")
    async with running({"notes": notes(tmp_path, env_files={"NOTES_TOKEN": str(secret)})}) as hub:
        checked = await hub.run_tool("mcp__notes__check_token", {}, CTX)
        assert f"{len(token)} chars" in text(checked)
        assert REDACTOR.text(f"x {token} y") == f"x {REDACTED} y"


async def test_stopping_the_hub_stops_the_servers_process(tmp_path: Path) -> None:
    async with running({"notes": notes(tmp_path)}):
        [pid] = pids(tmp_path)
        assert alive(pid)
    assert not alive(pid)


@pytest.fixture
async def http_notes(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """The notes server over streamable HTTP, asking for a bearer token."""
    port, token = free_port(), "http-token-" + os.urandom(6).hex()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(NOTES_SERVER),
        "--http",
        str(port),
        env={**os.environ, "NOTES_HTTP_TOKEN": token, "NOTES_FILE": str(tmp_path / "h.txt")},
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    # Uvicorn says when it listens.
    async with asyncio.timeout(WAIT):
        while b"Uvicorn running" not in (line := await process.stderr.readline()):
            assert line, "the HTTP notes server exited"
    # Its request log goes on; it is read away so the pipe never fills.
    drain = asyncio.create_task(process.stderr.read())
    try:
        yield f"http://127.0.0.1:{port}/mcp", token
    finally:
        process.terminate()
        await process.wait()
        await drain


async def test_an_http_server_gets_its_headers_from_the_environment(
    http_notes: tuple[str, str],
) -> None:
    url, token = http_notes
    spec = {"url": url, "headers": {"Authorization": "Bearer ${NOTES_HTTP_TOKEN}"}}
    async with running({"web-notes": spec}, environ={"NOTES_HTTP_TOKEN": token}) as hub:
        added = await hub.run_tool("mcp__web-notes__add_note", {"text": "over http"}, CTX)
        assert not added.is_error and "over http" in text(added)
        assert token not in REDACTOR.text(f"sent Bearer {token}")
    async with running({"web-notes": spec}, environ={"NOTES_HTTP_TOKEN": "wrong"}) as hub:
        assert server(hub, "web-notes").status().state is State.FAILED


async def test_doctor_starts_each_server_and_names_the_one_that_fails(tmp_path: Path) -> None:
    token = "doctor-token-" + os.urandom(6).hex()
    (tmp_path / "token").write_text(token)
    server = notes(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[matrix]
homeserver = "http://127.0.0.1:1"
user_id = "@bot:example.org"
password = "hunter2hunter2"
owners = ["@me:example.org"]

[mcp.servers.notes]
command = {json.dumps(server["command"])}
args = {json.dumps(server["args"])}
env_files = {{ NOTES_TOKEN = "token" }}

[mcp.servers.broken]
command = "{tmp_path}/no-such-server"
"""
    )
    script = Path(sys.executable).with_name("dispatch-matrix")
    process = await asyncio.create_subprocess_exec(
        str(script),
        "doctor",
        "--no-api",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    text = out.decode()
    assert process.returncode == 1, text + err.decode()
    assert "✓ MCP server notes: 7 tools (add_note, check_token, fail, grow, list_notes" in text
    assert "✗ MCP server broken did not start: command not found" in text
    assert token not in text + err.decode()
