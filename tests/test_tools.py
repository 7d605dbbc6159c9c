"""The agent's tools on real files and real processes: confinement, limits, process groups."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from harness.toolcalls import RecordingReporter

from dispatch_matrix.core.errors import ConfigError, DispatchError, ToolError
from dispatch_matrix.permissions.policy import Policy
from dispatch_matrix.sandbox.choice import check_sandbox
from dispatch_matrix.toolbox.base import ToolContext, ToolResult
from dispatch_matrix.toolbox.paths import resolve
from dispatch_matrix.toolbox.registry import ToolRegistry, default_tools
from dispatch_matrix.toolbox.shell import BashTool

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(64))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    folder.mkdir()
    return folder


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text("top secret\n")
    return folder


@pytest.fixture
def ctx(root: Path, tmp_path: Path) -> ToolContext:
    other = tmp_path / "reviews"
    other.mkdir()
    return ToolContext(
        workdir=root,
        allowed_roots=(root, other),
        bash_timeout_s=120,
        denied_paths=(root / "state",),
    )


@pytest.fixture
def tools() -> ToolRegistry:
    return ToolRegistry(default_tools())


def text(result: ToolResult) -> str:
    return "\n".join(block["text"] for block in result.content if block["type"] == "text")


async def call(tools: ToolRegistry, ctx: ToolContext, name: str, **tool_input: Any) -> ToolResult:
    return await tools.run(name, tool_input, ctx)


# --- read -----------------------------------------------------------------------------


async def test_read_numbers_lines_and_takes_a_range(tools: ToolRegistry, ctx: ToolContext) -> None:
    (ctx.workdir / "a.txt").write_text("".join(f"line{i}\n" for i in range(1, 11)))
    whole = await call(tools, ctx, "read", file_path="a.txt")
    assert not whole.is_error
    assert text(whole).splitlines()[0] == "     1\tline1"
    assert "[showing" not in text(whole)
    part = await call(tools, ctx, "read", file_path="a.txt", view_range=[3, 5])
    lines = text(part).splitlines()
    assert lines[:3] == ["     3\tline3", "     4\tline4", "     5\tline5"]
    assert "line6" not in text(part)
    assert "[showing lines 3–5 of 10 lines]" in text(part)
    tail = await call(tools, ctx, "read", file_path="a.txt", view_range=[9, 0])
    assert "line10" in text(tail) and "line8" not in text(tail)


async def test_read_pages_a_huge_file_with_a_note(tools: ToolRegistry, root: Path) -> None:
    (root / "big.log").write_text("".join(f"entry {i} " + "x" * 60 + "\n" for i in range(5000)))
    small = ToolContext(workdir=root, allowed_roots=(root,), bash_timeout_s=120, output_limit=2000)
    result = await call(tools, small, "read", file_path="big.log")
    body = text(result)
    assert len(body) < 2500
    assert "of 5000 lines" in body
    assert "Continue with view_range" in body


async def test_read_returns_an_image_block(tools: ToolRegistry, ctx: ToolContext) -> None:
    (ctx.workdir / "shot.png").write_bytes(PNG)
    result = await call(tools, ctx, "read", file_path="shot.png")
    assert not result.is_error
    image = result.content[-1]
    assert image["type"] == "image"
    assert image["source"]["media_type"] == "image/png"
    assert base64.standard_b64decode(image["source"]["data"]) == PNG


async def test_read_refuses_binary_files(tools: ToolRegistry, ctx: ToolContext) -> None:
    (ctx.workdir / "blob.bin").write_bytes(b"\x7fELF\x00\x01\x02" * 100)
    result = await call(tools, ctx, "read", file_path="blob.bin")
    assert result.is_error
    assert "binary" in text(result)


async def test_read_replaces_bad_utf8_and_says_so(tools: ToolRegistry, ctx: ToolContext) -> None:
    (ctx.workdir / "latin1.txt").write_bytes(b"caf\xe9\n")
    result = await call(tools, ctx, "read", file_path="latin1.txt")
    assert "caf\ufffd" in text(result)
    assert "not valid UTF-8" in text(result)


# --- confinement ----------------------------------------------------------------------


async def test_read_outside_the_roots_is_refused_naming_them(
    tools: ToolRegistry, ctx: ToolContext, outside: Path
) -> None:
    result = await call(tools, ctx, "read", file_path=str(outside / "secret.txt"))
    assert result.is_error
    roots = ", ".join(str(r) for r in ctx.allowed_roots)
    assert f"is outside the allowed roots ({roots})" in text(result)
    assert "top secret" not in text(result)


async def test_a_symlink_out_of_the_roots_is_refused(
    tools: ToolRegistry, ctx: ToolContext, outside: Path
) -> None:
    (ctx.workdir / "link.txt").symlink_to(outside / "secret.txt")
    result = await call(tools, ctx, "read", file_path="link.txt")
    assert result.is_error
    assert "outside the allowed roots" in text(result)
    assert str(outside / "secret.txt") in text(result)


async def test_a_symlinked_parent_folder_out_of_the_roots_is_refused(
    tools: ToolRegistry, ctx: ToolContext, outside: Path
) -> None:
    (ctx.workdir / "linkdir").symlink_to(outside, target_is_directory=True)
    read = await call(tools, ctx, "read", file_path="linkdir/secret.txt")
    assert read.is_error and "outside the allowed roots" in text(read)
    write = await call(tools, ctx, "write", file_path="linkdir/new/planted.txt", content="x")
    assert write.is_error and "outside the allowed roots" in text(write)
    assert not (outside / "new").exists()


def test_resolve_judges_a_new_path_by_its_nearest_existing_parent(
    ctx: ToolContext, outside: Path
) -> None:
    assert resolve("new/dir/file.txt", ctx) == ctx.workdir / "new/dir/file.txt"
    (ctx.workdir / "dangling").symlink_to(outside / "not-yet")
    with pytest.raises(ToolError, match="outside the allowed roots"):
        resolve("dangling", ctx)
    with pytest.raises(ToolError, match="outside the allowed roots"):
        resolve("../outside/secret.txt", ctx)


async def test_the_state_folder_is_denied(tools: ToolRegistry, ctx: ToolContext) -> None:
    state = ctx.workdir / "state"
    state.mkdir()
    (state / "keys.json").write_text("{}")
    (ctx.workdir / "via-link").symlink_to(state)
    for path in ("state/keys.json", "via-link/keys.json"):
        result = await call(tools, ctx, "read", file_path=path)
        assert result.is_error
        assert "may not touch" in text(result)
    listing = await call(tools, ctx, "glob", pattern="**/*.json")
    assert "keys.json" not in text(listing)
    grep = await call(tools, ctx, "grep", pattern="{}")
    assert "keys.json" not in text(grep)


# --- write and edit -------------------------------------------------------------------


async def test_write_is_atomic_keeps_the_mode_and_creates_parents(
    tools: ToolRegistry, ctx: ToolContext
) -> None:
    target = ctx.workdir / "script.sh"
    target.write_text("old\n")
    target.chmod(0o750)
    result = await call(tools, ctx, "write", file_path="script.sh", content="#!/bin/sh\necho new\n")
    assert not result.is_error, text(result)
    assert target.read_text() == "#!/bin/sh\necho new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o750
    assert sorted(p.name for p in ctx.workdir.iterdir()) == ["script.sh"]
    nested = await call(tools, ctx, "write", file_path="a/b/c.txt", content="deep")
    assert not nested.is_error
    assert (ctx.workdir / "a/b/c.txt").read_text() == "deep"
    assert sorted(p.name for p in (ctx.workdir / "a/b").iterdir()) == ["c.txt"]


async def test_edit_replaces_a_unique_string(tools: ToolRegistry, ctx: ToolContext) -> None:
    path = ctx.workdir / "m.py"
    path.write_text("a = 1\nb = 2\n")
    result = await call(
        tools, ctx, "edit", file_path="m.py", old_string="b = 2", new_string="b = 3"
    )
    assert not result.is_error
    assert path.read_text() == "a = 1\nb = 3\n"


async def test_edit_refuses_an_ambiguous_string_unless_replace_all(
    tools: ToolRegistry, ctx: ToolContext
) -> None:
    path = ctx.workdir / "m.py"
    path.write_text("x\nx\nx\n")
    refused = await call(tools, ctx, "edit", file_path="m.py", old_string="x", new_string="y")
    assert refused.is_error
    assert "occurs 3 times" in text(refused)
    assert path.read_text() == "x\nx\nx\n"
    done = await call(
        tools, ctx, "edit", file_path="m.py", old_string="x", new_string="y", replace_all=True
    )
    assert "3 replacement" in text(done)
    assert path.read_text() == "y\ny\ny\n"


async def test_edit_says_when_the_string_is_not_found(
    tools: ToolRegistry, ctx: ToolContext
) -> None:
    (ctx.workdir / "m.py").write_text("a\n")
    result = await call(tools, ctx, "edit", file_path="m.py", old_string="zzz", new_string="q")
    assert result.is_error
    assert "not found" in text(result)
    missing = await call(tools, ctx, "edit", file_path="nope.py", old_string="a", new_string="b")
    assert missing.is_error
    assert "no such file" in text(missing)


async def test_edit_matches_crlf_files(tools: ToolRegistry, ctx: ToolContext) -> None:
    path = ctx.workdir / "w.txt"
    path.write_bytes(b"one\r\ntwo\r\n")
    result = await call(
        tools, ctx, "edit", file_path="w.txt", old_string="one\ntwo", new_string="1\n2"
    )
    assert not result.is_error
    assert path.read_bytes() == b"1\r\n2\r\n"


# --- glob and grep --------------------------------------------------------------------


async def test_glob_is_bounded_and_skips_git(tools: ToolRegistry, ctx: ToolContext) -> None:
    src = ctx.workdir / "src"
    src.mkdir()
    for i in range(250):
        (src / f"m{i}.py").write_text("")
    (ctx.workdir / ".git").mkdir()
    (ctx.workdir / ".git" / "hook.py").write_text("")
    result = await call(tools, ctx, "glob", pattern="**/*.py")
    lines = text(result).splitlines()
    assert len(lines) == 201
    assert lines[-1].startswith("[50 more matches")
    assert all(line.startswith(str(src)) for line in lines[:-1])
    one = await call(tools, ctx, "glob", pattern="src/m1?.py")
    assert len(text(one).splitlines()) == 10
    escape = await call(tools, ctx, "glob", pattern="../**")
    assert escape.is_error


async def test_grep_is_bounded_and_skips_binary_and_git(tools: ToolRegistry, root: Path) -> None:
    ctx = ToolContext(workdir=root, allowed_roots=(root,), bash_timeout_s=120, output_limit=1000)
    (root / "log.txt").write_text("".join(f"needle {i}\n" for i in range(500)))
    (root / "blob.bin").write_bytes(b"needle\x00\x00")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("needle in git\n")
    (root / ".env").write_text("needle=secret\n")
    result = await call(tools, ctx, "grep", pattern=r"needle \d+")
    body = text(result)
    assert f"{root / 'log.txt'}:1:needle 0" in body
    assert "output truncated" in body
    assert len(body) < 1300
    everything = await call(tools, ctx, "grep", pattern="needle", path=".git/config")
    assert "needle in git" in text(everything)
    anywhere = await call(tools, ctx, "grep", pattern="needle[^ ]")
    assert "blob.bin" not in text(anywhere)
    assert "needle=secret" not in text(anywhere)
    assert "skipped 1 file(s)" in text(anywhere)
    bad = await call(tools, ctx, "grep", pattern="(unclosed")
    assert bad.is_error and "invalid regular expression" in text(bad)


async def test_grep_honours_deny_rules_below_the_folder_it_was_allowed(
    root: Path, tmp_path: Path
) -> None:
    policy = Policy(
        [f"Read(/{root}/**)", f"Read(/{root}/app/.env)"],
        [],
        [f"Read(/{root}/private/**)"],
        tmp_path,
        root,
    )
    assert policy.decide("grep", {"pattern": "token"}).verdict == "allow"
    tools = ToolRegistry(default_tools(read_denied=policy.read_denied))
    ctx = ToolContext(workdir=root, allowed_roots=(root,), bash_timeout_s=120)
    for rel in ("private/notes.txt", "app/.env", "app/.env.local", "app/main.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"token in {rel}\n")
    body = text(await call(tools, ctx, "grep", pattern="token"))
    assert "token in app/main.py" in body
    assert "token in app/.env\n" in body + "\n"
    assert "private" not in body.split("[skipped")[0]
    assert ".env.local" not in body.split("[skipped")[0]
    assert "skipped 2" in body


# --- bash -----------------------------------------------------------------------------


async def test_bash_reports_output_and_exit_code(tools: ToolRegistry, ctx: ToolContext) -> None:
    ok = await call(tools, ctx, "bash", command="pwd; echo out; echo err >&2")
    assert not ok.is_error
    assert text(ok) == f"{ctx.workdir}\nout\nerr\n[exit code 0]"
    failed = await call(tools, ctx, "bash", command="echo nope; exit 3")
    assert failed.is_error
    assert text(failed) == "nope\n[exit code 3]"


async def test_bash_caps_output_keeping_head_and_tail(tools: ToolRegistry, root: Path) -> None:
    ctx = ToolContext(workdir=root, allowed_roots=(root,), bash_timeout_s=120, output_limit=1000)
    result = await call(tools, ctx, "bash", command="seq 1 100000")
    body = text(result)
    assert body.startswith("1\n2\n3\n")
    assert "100000\n[exit code 0]" in body
    assert "bytes elided …]" in body
    assert len(body) < 1200


async def test_bash_stdin_is_closed(tools: ToolRegistry, ctx: ToolContext) -> None:
    result = await call(tools, ctx, "bash", command="cat; read x; echo after", timeout_ms=60_000)
    assert not result.is_error, text(result)
    assert "after" in text(result)


async def test_bash_env_is_only_what_it_is_given(
    tools: ToolRegistry, ctx: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("DISPATCH_MATRIX__PASSWORD", "hunter2")
    minimal = await call(tools, ctx, "bash", command="env")
    assert "ANTHROPIC" not in text(minimal) and "hunter2" not in text(minimal)
    for name in ("PATH=", "HOME=", "USER=", "LANG=", "TERM=dumb", "TMPDIR="):
        assert name in text(minimal)
    given = ToolContext(
        workdir=ctx.workdir, allowed_roots=ctx.allowed_roots, bash_timeout_s=120, env={"FOO": "bar"}
    )
    result = await call(tools, given, "bash", command="/usr/bin/env")
    names = {line.split("=", 1)[0] for line in text(result).splitlines()[:-1]}
    assert "FOO" in names
    assert names <= {"FOO", "PWD", "SHLVL", "_"}


async def test_bash_tells_on_process_the_group_id(tools: ToolRegistry, ctx: ToolContext) -> None:
    seen: list[int] = []
    ctx = replace(ctx, on_process=seen.append)
    result = await call(tools, ctx, "bash", command="ps -o pgid= -p $$")
    assert len(seen) == 1
    assert text(result).splitlines()[0].strip() == str(seen[0])


def _group_exists(pgid: int) -> bool:
    """Whether a live process is in the group. A killed orphan stays a zombie until init
    reaps it, which some inits do lazily; a zombie is dead, so it does not count."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            state, _ppid, group = stat.rsplit(")", 1)[1].split()[:3]
            if int(group) == pgid and state not in ("Z", "X"):
                return True
    return False


async def test_bash_timeout_kills_the_whole_group(tools: ToolRegistry, ctx: ToolContext) -> None:
    seen: list[int] = []
    ctx = replace(ctx, on_process=seen.append)
    # A hang guard, not a speed bound: without the kill the call would last 600 s.
    result = await asyncio.wait_for(
        call(tools, ctx, "bash", command="sleep 600 & sleep 600; wait", timeout_ms=1000), 120
    )
    assert result.is_error
    assert "timed out after 1 s" in text(result)
    assert not _group_exists(seen[0])


async def test_bash_leaves_no_background_job_behind(tools: ToolRegistry, ctx: ToolContext) -> None:
    seen: list[int] = []
    ctx = replace(ctx, on_process=seen.append)
    # A hang guard, not a speed bound: a call that waited for its background job would
    # last 600 s.
    result = await asyncio.wait_for(
        call(tools, ctx, "bash", command="sleep 600 & echo started"), 120
    )
    assert text(result) == "started\n[exit code 0]"
    assert not _group_exists(seen[0])


async def test_cancelling_the_call_kills_the_group(tools: ToolRegistry, ctx: ToolContext) -> None:
    started = asyncio.Event()
    seen: list[int] = []

    async def on_process(pgid: int) -> None:
        seen.append(pgid)
        started.set()

    ctx = replace(ctx, on_process=on_process)
    task = asyncio.create_task(call(tools, ctx, "bash", command="sleep 600 & sleep 600"))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _group_exists(seen[0])


async def test_bash_restart_and_missing_command(tools: ToolRegistry, ctx: ToolContext) -> None:
    assert "fresh shell" in text(await call(tools, ctx, "bash", restart=True))
    missing = await call(tools, ctx, "bash")
    assert missing.is_error and "command is required" in text(missing)


def test_check_sandbox_refuses_a_missing_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(ConfigError) as caught:
        check_sandbox("bubblewrap")
    assert isinstance(caught.value, DispatchError)
    assert "bwrap" in caught.value.problem
    check_sandbox("none")
    with pytest.raises(ConfigError):
        check_sandbox("firejail")


# The sandbox itself (bubblewrap, escapes) is tested in tests/test_sandbox.py.


# --- the registry ---------------------------------------------------------------------


async def test_registry_turns_bad_calls_into_error_results(
    tools: ToolRegistry, ctx: ToolContext
) -> None:
    unknown = await call(tools, ctx, "webfetch", url="x")
    assert unknown.is_error and "unknown tool 'webfetch'" in text(unknown)
    invalid = await call(tools, ctx, "read", view_range="1-2")
    assert invalid.is_error
    assert "file_path" in text(invalid) and "view_range" in text(invalid)
    not_a_dict = await tools.run("read", ["x"], ctx)
    assert not_a_dict.is_error


def test_definitions_are_stable_and_match_the_sdk_toolset(tools: ToolRegistry) -> None:
    from anthropic.types import beta

    definitions = tools.definitions()
    assert [d["name"] for d in definitions] == ["bash", "read", "write", "edit", "glob", "grep"]
    assert definitions == ToolRegistry(default_tools()).definitions()
    for definition in definitions:
        model = getattr(
            beta, f"BetaManagedAgentsAgentToolset20260401{definition['name'].title()}Input"
        )
        sdk = model.model_json_schema()
        ours = definition["input_schema"]
        assert set(ours["properties"]) == set(sdk["properties"])
        assert set(ours.get("required", [])) == set(sdk.get("required", []))
    definitions[0]["cache_control"] = {"type": "ephemeral"}
    assert "cache_control" not in tools.definitions()[0]


class CountedTool:
    """A tool that counts how often its definition is asked for."""

    name = "counted"

    def __init__(self) -> None:
        self.asked = 0

    def definition(self) -> dict[str, Any]:
        self.asked += 1
        return {"name": self.name, "description": "counts", "input_schema": {"type": "object"}}

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return ToolResult.text("counted")


def test_the_tools_list_is_built_once_and_stays_byte_identical() -> None:
    # The prompt cache's prefix starts with the tools: every request must send the same bytes.
    counted = CountedTool()
    registry = ToolRegistry([*default_tools(), counted])
    first = json.dumps(registry.definitions())
    for _ in range(5):
        assert json.dumps(registry.definitions()) == first
    assert counted.asked == 1
    later = CountedTool()
    later.name = "later"
    registry.add(later)
    grown = registry.definitions()
    assert [d["name"] for d in grown][-2:] == ["counted", "later"]
    assert json.dumps(grown[:-1]) == first
    assert counted.asked == 2 and later.asked == 1


def test_bash_tool_rejects_an_unknown_sandbox() -> None:
    with pytest.raises(ValueError):
        BashTool("chroot")


# --- send_file: never a hidden file, never a known secret, and what was checked is sent ----


def _send_ctx(root: Path, hidden: tuple[Path, ...], reporter: RecordingReporter) -> Any:
    return ToolContext(
        workdir=root,
        allowed_roots=(root,),
        bash_timeout_s=30,
        denied_paths=hidden,
        reporter=reporter,
    )


@pytest.mark.parametrize(
    ("content", "sent"),
    [
        (b"an ordinary report\n", True),
        (b"ANTHROPIC_API_KEY=sk-ant-known-secret-0001\n", False),
        # Far into a big file, and across the boundary of two read chunks.
        (b"x" * ((1 << 20) - 10) + b"sk-ant-known-secret-0001\n", False),
        (b"\x89PNG\r\n\x1a\n\x00\xffsk-ant-known-secret-0001", False),
    ],
)
async def test_send_file_refuses_a_file_holding_a_known_secret(
    root: Path, content: bytes, sent: bool
) -> None:
    from dispatch_matrix.core.logs import Redactor
    from dispatch_matrix.toolbox.send_file import SendFileTool

    redactor = Redactor()
    redactor.add("sk-ant-known-secret-0001")
    (root / "report.bin").write_bytes(content)
    reporter = RecordingReporter()
    result = await SendFileTool(redactor.known).run(
        {"path": "report.bin"}, _send_ctx(root, (), reporter)
    )
    assert result.is_error is not sent, result.content
    assert reporter.sent == ([("report.bin", content)] if sent else [])
    if not sent:
        assert "holds a secret this bot knows" in result.content[0]["text"]


async def test_send_file_refuses_a_hidden_file(root: Path, tmp_path: Path) -> None:
    from dispatch_matrix.toolbox.send_file import SendFileTool

    env = root / ".config" / "dispatch-matrix" / "env"
    env.parent.mkdir(parents=True)
    env.write_text("ANTHROPIC_API_KEY=sk-ant-unknown-to-the-redactor\n")
    reporter = RecordingReporter()
    ctx = _send_ctx(root, (root / ".config" / "dispatch-matrix",), reporter)
    result = await SendFileTool(lambda text: text).run({"path": str(env)}, ctx)
    assert result.is_error and reporter.sent == []


async def test_send_file_sends_the_copy_it_checked(root: Path) -> None:
    """A file swapped for a secret between the check and the upload: the checked copy goes."""
    from dispatch_matrix.toolbox.send_file import SendFileTool

    report = root / "report.txt"
    report.write_text("checked\n")

    class Swapping(RecordingReporter):
        async def send_file(self, path: Path, caption: str | None = None) -> str:
            report.write_text("sk-ant-swapped-in-later\n")
            return await super().send_file(path, caption)

    reporter = Swapping()
    result = await SendFileTool(lambda text: text).run(
        {"path": "report.txt"}, _send_ctx(root, (), reporter)
    )
    assert not result.is_error and reporter.sent == [("report.txt", b"checked\n")]
