"""The file tools' control plane and their race-free opens: secrets and credentials are
refused under any name (hard links included), and a folder swapped for a symlink between
the check and the open never lets a read, a write or a search reach the state folder."""

from __future__ import annotations

import asyncio
import ctypes
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatch_matrix.app.agent_kit import build_tools
from dispatch_matrix.app.config import load_config
from dispatch_matrix.toolbox.base import ToolContext, ToolResult
from dispatch_matrix.toolbox.registry import ToolRegistry, default_tools
from dispatch_matrix.toolbox.safeopen import Shield, open_file

SECRET = "state-secret-Qx81"
PASSWORD = "pw-never-read-77"


def text(result: ToolResult) -> str:
    return "\n".join(block["text"] for block in result.content if block["type"] == "text")


@pytest.fixture
def tools() -> ToolRegistry:
    return ToolRegistry(default_tools())


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "root"
    state = tmp_path / "state"
    (root / "d").mkdir(parents=True)
    state.mkdir()
    (state / "f.txt").write_text(f"{SECRET}\n")
    (state / "config.toml").write_text(f'password = "{PASSWORD}"\n')
    (root / "d" / "f.txt").write_text("innocent\n")
    return {"root": root, "state": state}


def context(layout: dict[str, Path]) -> ToolContext:
    root, state = layout["root"], layout["state"]
    return ToolContext(
        workdir=root, allowed_roots=(root,), bash_timeout_s=120, denied_paths=(state,)
    )


async def call(tools: ToolRegistry, ctx: ToolContext, name: str, **tool_input: Any) -> ToolResult:
    return await tools.run(name, tool_input, ctx)


# --- the control plane, by identity ---------------------------------------------------


async def test_a_hard_link_to_the_config_gives_nothing_to_any_file_tool(
    tools: ToolRegistry, layout: dict[str, Path]
) -> None:
    root, state = layout["root"], layout["state"]
    ctx = ToolContext(
        workdir=root,
        allowed_roots=(root,),
        bash_timeout_s=120,
        denied_paths=(state, state / "config.toml"),
    )
    os.link(state / "config.toml", root / "innocent.toml")
    os.link(state / "f.txt", root / "notes.txt")
    for name in ("innocent.toml", "notes.txt"):
        read = await call(tools, ctx, "read", file_path=name)
        assert read.is_error and "may not touch" in text(read), text(read)
        edit = await call(tools, ctx, "edit", file_path=name, old_string="p", new_string="q")
        assert edit.is_error and "may not touch" in text(edit)
        write = await call(tools, ctx, "write", file_path=name, content="x")
        assert write.is_error and "may not touch" in text(write)
    grep = await call(tools, ctx, "grep", pattern="password|secret")
    glob = await call(tools, ctx, "glob", pattern="*")
    for result in (grep, glob):
        body = text(result)
        assert PASSWORD not in body and SECRET not in body
        assert "innocent.toml" not in body and "notes.txt" not in body
    assert (state / "config.toml").read_text() == f'password = "{PASSWORD}"\n'


async def test_credentials_and_secret_files_are_refused_even_under_read_of_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    for rel, body in [
        (".ssh/id_ed25519", "PRIVATE KEY"),
        (".aws/credentials", "aws_secret_access_key = AKIA-never"),
        (".netrc", "machine x password never"),
        (".git-credentials", "https://u:never@example.org"),
        (".kube/config", "token: never"),
        (".config/gh/hosts.yml", "oauth_token: never"),
        (".docker/config.json", '{"auths": "never"}'),
        ("work/notes.txt", "ordinary never-mind"),
    ]:
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text(body + "\n")
    (home / "secrets").mkdir()
    (home / "secrets" / "bot-password").write_text(PASSWORD + "\n")
    (home / "secrets" / "api-key").write_text("sk-ant-never\n")
    monkeypatch.setenv("HOME", str(home))
    config_path = tmp_path / "store" / "config.toml"
    config_path.parent.mkdir()
    config_path.write_text(
        f"""
[matrix]
homeserver = "http://127.0.0.1:1"
user_id = "@bot:localhost"
password_file = "{home / "secrets" / "bot-password"}"
owners = ["@me:localhost"]
[agent]
workdir = "{home / "work"}"
allowed_roots = ["{home}"]
api_key_file = "{home / "secrets" / "api-key"}"
sandbox = "none"
[permissions]
allow = ["Read(~/**)", "Read", "Grep", "Glob", "Edit", "Write"]
"""
    )
    config = load_config(config_path)
    _policy, registry, ctx = build_tools(config, home / "work", [home])
    for path in (
        "~/.ssh/id_ed25519",
        "~/.aws/credentials",
        "~/.netrc",
        "~/.git-credentials",
        "~/.kube/config",
        "~/.config/gh/hosts.yml",
        "~/.docker/config.json",
        "~/secrets/bot-password",
        "~/secrets/api-key",
        str(config_path),
    ):
        read = await registry.run("read", {"file_path": path}, ctx)
        assert read.is_error, (path, text(read))
        assert "never" not in text(read) and PASSWORD not in text(read)
        write = await registry.run("write", {"file_path": path, "content": "x"}, ctx)
        assert write.is_error, path
    grep = await registry.run("grep", {"pattern": "never", "path": str(home)}, ctx)
    assert text(grep).splitlines()[0].endswith("ordinary never-mind"), text(grep)
    assert PASSWORD not in text(grep) and "AKIA" not in text(grep)
    listing = await registry.run("glob", {"pattern": "**/*", "path": str(home)}, ctx)
    listed = text(listing).splitlines()
    for hidden in (".ssh", ".aws", ".netrc", ".git-credentials", ".kube", "gh", "config.json"):
        assert not any(line.endswith("/" + hidden) for line in listed), hidden
    assert not any("bot-password" in line or "/.ssh/" in line for line in listed)


def test_a_file_with_many_links_but_none_to_a_secret_is_fine(layout: dict[str, Path]) -> None:
    root, state = layout["root"], layout["state"]
    os.link(root / "d" / "f.txt", root / "again.txt")
    with open_file(root / "again.txt", Shield.of([state]), "again.txt") as handle:
        assert handle.read() == b"innocent\n"


async def test_a_fifo_or_a_huge_image_is_refused_without_being_read(
    tools: ToolRegistry, layout: dict[str, Path]
) -> None:
    root = layout["root"]
    os.mkfifo(root / "pipe")
    fifo = await asyncio.wait_for(call(tools, context(layout), "read", file_path="pipe"), 5)
    assert fifo.is_error and "not a regular file" in text(fifo)
    with (root / "big.png").open("wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n")
        out.truncate(200 * 1024 * 1024)
    big = await call(tools, context(layout), "read", file_path="big.png")
    assert big.is_error and "too large" in text(big)


# --- races: a folder swapped for a symlink to the state folder ------------------------


def _exchanger() -> Any:
    """renameat2(RENAME_EXCHANGE) where libc has it: swaps two names atomically, so the folder
    is always there, a real folder or a symlink: the sharpest form of the attack."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return None
    at_fdcwd, rename_exchange = -100, 2

    def exchange(a: Path, b: Path) -> None:
        if renameat2(at_fdcwd, bytes(a), at_fdcwd, bytes(b), rename_exchange) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return exchange


@pytest.fixture
def swapper(layout: dict[str, Path]) -> Iterator[dict[str, int]]:
    """A thread that swaps root/d for a symlink to the state folder and back, in a loop."""
    root, state = layout["root"], layout["state"]
    real, held, link = root / "d", root / "d.real", root / "d.link"
    link.symlink_to(state, target_is_directory=True)
    stop = threading.Event()
    counts = {"swaps": 0}
    exchange = _exchanger()

    def swap() -> None:
        while not stop.is_set():
            if exchange is not None:
                exchange(real, link)  # d is now a symlink to the state folder
                exchange(real, link)  # d is the real folder again
            else:
                real.rename(held)
                link.rename(real)
                real.rename(link)
                held.rename(real)
            counts["swaps"] += 1

    thread = threading.Thread(target=swap, daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()
        thread.join()


async def test_3000_reads_during_a_symlink_swap_never_return_the_state_folder(
    tools: ToolRegistry, layout: dict[str, Path], swapper: dict[str, int]
) -> None:
    ctx = context(layout)
    target = str(layout["root"] / "d" / "f.txt")
    leaked = read = refused_at_check = caught_at_open = 0
    for _ in range(3000):
        result = await call(tools, ctx, "read", file_path=target)
        body = text(result)
        if SECRET in body:
            leaked += 1
        elif not result.is_error:
            read += 1
        elif "replaced by a link" in body or "may not touch" in body and "→" not in body:
            # The check passed; the open met the swap and refused to follow it.
            caught_at_open += 1
        else:
            refused_at_check += 1
    print(
        f"reads: {read} innocent, {refused_at_check} refused at the check, "
        f"{caught_at_open} swaps caught at the open, {leaked} leaked; "
        f"{swapper['swaps']} swaps"
    )
    assert leaked == 0
    assert read > 0 and swapper["swaps"] > 100


async def test_writes_and_searches_during_a_symlink_swap_never_reach_the_state_folder(
    tools: ToolRegistry, layout: dict[str, Path], swapper: dict[str, int]
) -> None:
    ctx = context(layout)
    state = layout["state"]
    before = sorted(p.name for p in state.iterdir())
    written = refused = edited = 0
    # 100 rounds (was 300): about two writes in three meet the swap (measured: 65 of 100),
    # so the race is met dozens of times; the count below proves it was.
    for i in range(100):
        wrote = await call(
            tools, ctx, "write", file_path=str(layout["root"] / "d" / f"w{i}.txt"), content="x"
        )
        written, refused = written + (not wrote.is_error), refused + wrote.is_error
        # A real edit (identical strings were refused before any file was opened): each one
        # that gets through adds a "!" behind the word, which stays unique.
        edit = await call(
            tools, ctx, "edit", file_path="d/f.txt", old_string="innocent", new_string="innocent!"
        )
        edited += not edit.is_error
        grep = await call(tools, ctx, "grep", pattern="secret|innocent", path=str(layout["root"]))
        glob = await call(tools, ctx, "glob", pattern="**/*.txt")
        assert SECRET not in text(grep)
        assert "config.toml" not in text(glob) and str(state) not in text(glob)
    print(f"writes: {written} written, {refused} refused; {edited} edits; {swapper['swaps']} swaps")
    assert written > 0 and refused >= 10, "the swap was not met often enough to prove anything"
    assert edited > 0, "no edit got through"
    assert sorted(p.name for p in state.iterdir()) == before
    assert (state / "f.txt").read_text() == f"{SECRET}\n"


async def test_send_file_refuses_a_hard_link_to_a_secret(layout: dict[str, Path]) -> None:
    from dispatch_matrix.toolbox.send_file import SendFileTool

    root, state = layout["root"], layout["state"]
    os.link(state / "config.toml", root / "report.txt")
    ctx = ToolContext(
        workdir=root, allowed_roots=(root,), bash_timeout_s=120, denied_paths=(state,)
    )
    result = await SendFileTool().run({"path": "report.txt"}, ctx)
    assert result.is_error and "hard link" in text(result)


async def test_send_file_during_a_symlink_swap_never_sends_the_state_folder(
    layout: dict[str, Path], swapper: dict[str, int]
) -> None:
    from dispatch_matrix.toolbox.send_file import SendFileTool

    sent: list[bytes] = []

    class Room:
        async def progress(self, text: str) -> None:
            return None

        async def send_file(self, path: Path, caption: str | None = None) -> str:
            sent.append(path.read_bytes())
            return "$event"

    ctx = ToolContext(**{**context(layout).__dict__, "reporter": Room()})
    tool = SendFileTool(lambda text: text)
    refused = 0
    for _ in range(300):
        result = await tool.run({"path": str(layout["root"] / "d" / "f.txt")}, ctx)
        refused += result.is_error
    print(f"send_file: {len(sent)} sent, {refused} refused; {swapper['swaps']} swaps")
    assert sent and all(body == b"innocent\n" for body in sent)
    assert refused > 0, "the swap was not met: this proves nothing"
