"""Grep and Glob never stall the event loop: a backtracking pattern runs in a killable child."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from dispatch_matrix.core.errors import ToolError
from dispatch_matrix.toolbox import search
from dispatch_matrix.toolbox.base import ToolContext, ToolResult
from dispatch_matrix.toolbox.forked import ChildTimeout, run_forked
from dispatch_matrix.toolbox.registry import ToolRegistry, default_tools


def text(result: ToolResult) -> str:
    return "".join(block["text"] for block in result.content)


async def beats_meanwhile(work: Awaitable[Any]) -> tuple[Any, int]:
    """`work`'s result and how many times a 10 ms heartbeat beat while it ran. A call that
    held the event loop lets it beat once at most (after); the stall's length in ms is a
    figure for `tools/bench/search_stall.py`, not for a test."""
    beats = 0
    done = asyncio.Event()

    async def heartbeat() -> None:
        nonlocal beats
        while True:
            await asyncio.sleep(0.01)
            if done.is_set():
                return
            beats += 1

    beat = asyncio.create_task(heartbeat())
    try:
        result = await work
    finally:
        done.set()
        await beat
    return result, beats


@pytest.fixture
def evil(tmp_path: Path) -> ToolContext:
    # 2^40 steps for `^(a+)+$`; names of 60 `a` make `*a*…*b` O(n^8) per name.
    (tmp_path / "evil.txt").write_text("a" * 40 + "b\n")
    for i in range(3):
        (tmp_path / ("a" * 60 + str(i))).write_text("")
    return ToolContext(workdir=tmp_path, allowed_roots=(tmp_path,), bash_timeout_s=60)


@pytest.mark.parametrize(
    "tool, tool_input",
    [("grep", {"pattern": "^(a+)+$"}), ("glob", {"pattern": "*a*a*a*a*a*a*a*a*b"})],
)
async def test_a_backtracking_pattern_is_killed_and_the_loop_keeps_beating(
    evil: ToolContext, monkeypatch: pytest.MonkeyPatch, tool: str, tool_input: dict[str, str]
) -> None:
    monkeypatch.setattr(search, "KILL_AFTER_S", 1.0)
    tools = ToolRegistry(default_tools())
    # A hang guard, not a speed bound: the glob alone ran 114 s before the kill existed.
    result, beats = await asyncio.wait_for(beats_meanwhile(tools.run(tool, tool_input, evil)), 120)
    # Killed at its time limit (the message names it), with the loop beating all along: the
    # pattern ran in the child, not on the loop. Before, the loop stood still for the whole
    # search (3.8 s for a 26-character line, 114 s for the glob).
    assert result.is_error and "stopped after 1 s" in text(result)
    assert beats >= 5, beats


async def test_ordinary_searches_give_the_same_answer_as_before(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("def one():\n    return 1\n")
    (tmp_path / "b.py").write_text("x = 2\n")
    ctx = ToolContext(workdir=tmp_path, allowed_roots=(tmp_path,), bash_timeout_s=60)
    tools = ToolRegistry(default_tools())
    grep = await tools.run("grep", {"pattern": r"def \w+"}, ctx)
    assert text(grep) == f"{tmp_path / 'a.py'}:1:def one():"
    glob = await tools.run("glob", {"pattern": "*.py"}, ctx)
    assert sorted(text(glob).splitlines()) == [str(tmp_path / "a.py"), str(tmp_path / "b.py")]
    missing = await tools.run("glob", {"pattern": "x/*.py", "path": "a.py"}, ctx)
    assert missing.is_error and "is not a folder" in text(missing)


async def test_cancelling_the_call_kills_the_child(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"

    def spin() -> str:
        pid_file.write_text(str(os.getpid()))
        while True:
            pass

    task = asyncio.create_task(run_forked(spin, 60))
    async with asyncio.timeout(10):
        while not pid_file.exists() or not pid_file.read_text():
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


async def test_the_child_reports_a_tool_error_and_a_timeout() -> None:
    def refuse() -> str:
        raise ToolError("no such folder")

    with pytest.raises(ToolError, match="no such folder"):
        await run_forked(refuse, 10)
    with pytest.raises(ChildTimeout):
        await run_forked(lambda: str(time.sleep(5)), 0.2)


async def test_a_large_answer_comes_back_whole() -> None:
    big = "x" * 300_000 + "é"
    assert await run_forked(lambda: big, 10) == big


async def test_an_unexpected_failure_in_the_child_is_a_tool_error() -> None:
    def broken() -> str:
        raise PermissionError(13, "Permission denied", "/x")

    with pytest.raises(ToolError, match="PermissionError"):
        await run_forked(broken, 10)
