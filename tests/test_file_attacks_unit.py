"""A hostile model against the file tools, on real files in a temporary home: every try
is a row. The tools stay inside their roots and away from the control plane, never tell
the model a secret the daemon knows (not even one character at a time, as an answer's
"found" or "not found"), and bad input ends in an error result, never in a hang or an
exception that fails the task."""

from __future__ import annotations

import asyncio
import base64
import io
import os
from pathlib import Path
from typing import Any

import pytest
from harness.toolcalls import RecordingReporter as Room

from dispatch_matrix.core.errors import ToolError
from dispatch_matrix.core.logs import Redactor
from dispatch_matrix.toolbox.base import ToolContext, ToolResult
from dispatch_matrix.toolbox.files import EditTool, ReadTool, WriteTool
from dispatch_matrix.toolbox.registry import ToolRegistry, default_tools
from dispatch_matrix.toolbox.search import GlobTool, GrepTool
from dispatch_matrix.toolbox.secretscan import Readable, readable
from dispatch_matrix.toolbox.send_file import SendFileTool, _copy_checked

KEY = "sk-ant-api03-Zq7XwP2mK9vLrT4nB8cD1eF6gH3jS5uY0aQwErTyUiOp"
CONFIG_SECRET = "config-password-never-read-9471"


@pytest.fixture
def redactor() -> Redactor:
    known = Redactor()
    known.add(KEY, CONFIG_SECRET)
    return known


@pytest.fixture
def home(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "root"
    state = tmp_path / "state"
    root.mkdir()
    state.mkdir()
    (state / "config.toml").write_text(f'password = "{CONFIG_SECRET}"\n')
    (root / ".env").write_text(f"ANTHROPIC_API_KEY={KEY}\nDEBUG=1\n")
    return {"root": root, "state": state}


@pytest.fixture
def room() -> Room:
    return Room()


@pytest.fixture
def ctx(home: dict[str, Path], room: Room) -> ToolContext:
    root = home["root"]
    return ToolContext(
        workdir=root,
        allowed_roots=(root,),
        bash_timeout_s=30,
        denied_paths=(home["state"],),
        reporter=room,
    )


@pytest.fixture
def tools(redactor: Redactor) -> ToolRegistry:
    # The tools that decide around the daemon's secrets, given this test's redactor.
    mine = {
        "read": ReadTool(redactor.known_spans),
        "edit": EditTool(redactor.known_spans),
        "write": WriteTool(redactor.known_spans),
        "grep": GrepTool(known_spans=redactor.known_spans),
        "glob": GlobTool(redactor.known),
    }
    registry = ToolRegistry([mine.get(tool.name, tool) for tool in default_tools()])
    registry.add(SendFileTool(redactor.known, max_bytes=1024 * 1024))
    return registry


async def model_reads(
    tools: ToolRegistry, ctx: ToolContext, redactor: Redactor, name: str, **tool_input: Any
) -> tuple[bool, str]:
    """What the model would get back: whether it failed, and every text and media block,
    after the agent's cut of known secrets (calls.py's, with this test's redactor)."""
    result: ToolResult = await asyncio.wait_for(tools.run(name, tool_input, ctx), 60)
    block = result.as_block("toolu_1")
    for part in block["content"]:
        if part.get("type") == "text":
            part["text"] = redactor.known(part["text"])
    parts = []
    for part in block["content"]:
        if part["type"] == "text":
            parts.append(part["text"])
        else:
            parts.append(base64.b64decode(part["source"]["data"]).decode("latin-1"))
    return result.is_error, "\n".join(parts)


# --- bad input ends in an error result --------------------------------------------------


@pytest.mark.parametrize("spelled", ["sub", "sub/", ".", "/"])
async def test_reading_a_folder_is_an_error_result_not_a_failed_task(
    tools: ToolRegistry, ctx: ToolContext, redactor: Redactor, home: dict[str, Path], spelled: str
) -> None:
    (home["root"] / "sub").mkdir()
    for name in ("read", "edit"):
        tool_input = {"file_path": spelled, "old_string": "a", "new_string": "b"}
        # Before: os.fdopen of the folder raised IsADirectoryError out of the tool.
        result = await tools.run(name, tool_input, ctx)
        assert result.is_error


async def test_a_fifo_is_refused_at_once_by_every_reader(
    tools: ToolRegistry, ctx: ToolContext, redactor: Redactor, home: dict[str, Path], room: Room
) -> None:
    os.mkfifo(home["root"] / "pipe")
    for name, key in (("read", "file_path"), ("grep", "path"), ("send_file", "path")):
        tool_input = {key: "pipe", "pattern": "x"}
        failed, _ = await model_reads(tools, ctx, redactor, name, **tool_input)
        assert failed, name
    assert room.sent == []


async def test_a_huge_sparse_file_is_refused_by_send_file_before_a_byte_is_copied(
    tools: ToolRegistry, ctx: ToolContext, redactor: Redactor, home: dict[str, Path], room: Room
) -> None:
    with (home["root"] / "sparse.img").open("wb") as sparse:
        sparse.truncate(8 * 1024**3)
    # Before: the 8 GB were copied into the temporary folder, then refused by the upload.
    failed, said = await model_reads(tools, ctx, redactor, "send_file", path="sparse.img")
    assert failed and "1.0 MB limit for files" in said and "`matrix.max_file_mb`" in said
    assert room.sent == []
    failed, said = await model_reads(tools, ctx, redactor, "read", file_path="sparse.img")
    assert failed and "binary" in said


def test_a_file_that_grows_past_the_limit_while_it_is_copied_is_refused(
    tmp_path: Path,
) -> None:
    # The size was checked at the open; the reads then bring more than the limit.
    growing = io.BytesIO(b"x" * 5000)
    with (tmp_path / "copy").open("wb") as out, pytest.raises(ToolError, match="limit"):
        _copy_checked(growing, out, tmp_path / "log", lambda text: text, 4096)
    assert (tmp_path / "copy").stat().st_size <= 4096


# --- the roots and the control plane ----------------------------------------------------


def _tricks(home: dict[str, Path]) -> dict[str, str]:
    root, state = home["root"], home["state"]
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "state").symlink_to(state)
    (root / "proc").symlink_to("/proc/self/root")
    (root / "dots").symlink_to(state / "config.toml")
    return {
        "absolute": str(state / "config.toml"),
        "proc root": f"/proc/self/root{state}/config.toml",
        "proc pid cwd": f"/proc/{os.getpid()}/root{state}/config.toml",
        "link to proc": f"proc{state}/config.toml",
        "symlinked parent": "sub/state/config.toml",
        "dot-dot after a link": "sub/state/../state/config.toml",
        "symlinked leaf": "dots",
        "home tilde": "~/../state/config.toml",
        "fd of the process": "/dev/fd/0",
        "very long": "a/" * 3000 + "config.toml",
    }


async def test_path_tricks_never_reach_the_config(
    tools: ToolRegistry, ctx: ToolContext, redactor: Redactor, home: dict[str, Path], room: Room
) -> None:
    tricks = _tricks(home)
    ctx = ToolContext(**{**ctx.__dict__, "env": {"HOME": str(home["root"])}})
    for trick, spelled in tricks.items():
        for name, tool_input in (
            ("read", {"file_path": spelled}),
            ("grep", {"pattern": "password", "path": spelled}),
            ("send_file", {"path": spelled}),
            ("edit", {"file_path": spelled, "old_string": "password", "new_string": "x"}),
            ("write", {"file_path": spelled, "content": "x"}),
        ):
            failed, said = await model_reads(tools, ctx, redactor, name, **tool_input)
            assert failed, (trick, name, said)
            assert "config-password" not in said, (trick, name)
    assert room.sent == []
    assert CONFIG_SECRET in (home["state"] / "config.toml").read_text()


# --- a secret the daemon knows, in a file the model may read ----------------------------

GUESSES = ["sk-ant-api03-Z", "sk-ant-api03-A", "KEY=sk-ant-api03-Zq7X", "KEY=sk-ant-api03-Zq7Y"]


async def test_grep_tells_a_right_guess_of_a_key_from_a_wrong_one_in_no_way(
    tools: ToolRegistry, ctx: ToolContext, redactor: Redactor
) -> None:
    answers = set()
    for guess in GUESSES:
        for pattern in (guess, f"^ANTHROPIC_API_KEY={guess[-5:]}", f"{guess}|DEBUG"):
            failed, said = await model_reads(
                tools, ctx, redactor, "grep", pattern=pattern, path=".env"
            )
            assert not failed
            answers.add((pattern.replace(guess, "?"), said))
    # Before: the right guess answered with a (redacted) line, a wrong one "no matches".
    assert len({said for key, said in answers if key == "?"}) == 1
    assert {said for key, said in answers if key == "?|DEBUG"} == {f"{ctx.workdir}/.env:2:DEBUG=1"}


async def test_grep_finds_the_lines_around_a_key_and_shows_its_line_hidden(
    tools: ToolRegistry, ctx: ToolContext, redactor: Redactor, home: dict[str, Path]
) -> None:
    (home["root"] / "notes.txt").write_text(f"one\nthe key is {KEY} here\nthree\n")
    failed, said = await model_reads(tools, ctx, redactor, "grep", pattern="key is", path=".")
    assert not failed
    assert said.splitlines()[0] == f"{ctx.workdir}/notes.txt:2:the key is «redacted» here"


async def test_grep_cannot_guess_a_key_broken_over_two_lines(
    tools: ToolRegistry, ctx: ToolContext, redactor: Redactor, home: dict[str, Path]
) -> None:
    (home["root"] / "wrapped.txt").write_text(f"key:\n{KEY[:30]}\n{KEY[30:]}\nend\n")
    answers = set()
    for guess in (KEY[26:33], "aaaaaaa", KEY[33:36], "zzz"):
        _, said = await model_reads(tools, ctx, redactor, "grep", pattern=guess, path="wrapped.txt")
        answers.add(said)
    assert answers == {"no matches"}


@pytest.mark.parametrize(
    "view_range", [None, [2, 2], [3, 3], [2, 3], [1, 2], [3, 0]], ids=lambda v: f"lines-{v}"
)
@pytest.mark.parametrize("split", [30, 50], ids=["half", "six-chars-left"])
async def test_read_hides_a_key_wrapped_over_two_lines_in_any_view_range(
    tools: ToolRegistry,
    ctx: ToolContext,
    redactor: Redactor,
    home: dict[str, Path],
    view_range: list[int] | None,
    split: int,
) -> None:
    (home["root"] / "wrapped.txt").write_text(f"key:\n{KEY[:split]}\n{KEY[split:]}\nend\n")
    tool_input: dict[str, Any] = {"file_path": "wrapped.txt"}
    if view_range is not None:
        tool_input["view_range"] = view_range
    failed, said = await model_reads(tools, ctx, redactor, "read", **tool_input)
    # Before: numbered, the halves had a line number between them and went out whole.
    assert not failed
    for part in (KEY[:split], KEY[split:]):
        assert part not in said, said
    assert "«redacted»" in said


@pytest.mark.parametrize("folder", ["", "vault/", "a/b/"])
async def test_glob_tells_a_right_guess_of_a_name_holding_a_key_from_a_wrong_one_in_no_way(
    tools: ToolRegistry,
    ctx: ToolContext,
    redactor: Redactor,
    home: dict[str, Path],
    folder: str,
) -> None:
    # A key as a file's name, at the root or deeper. (Split between a folder's name and a
    # file's, each part is no secret to the redactor: a glob lists the folder in clear.)
    spelled = f"{folder}{KEY}.txt"
    (home["root"] / spelled).parent.mkdir(parents=True, exist_ok=True)
    (home["root"] / spelled).write_text("x\n")
    answers = set()
    for guess in ("sk-ant-api03-Z", "sk-ant-api03-A", "*Zq7X*", "*Zq7Y*", "**/*Zq7X*", "**/*Zq7Y*"):
        failed, said = await model_reads(tools, ctx, redactor, "glob", pattern=guess)
        answers.add(said)
        assert not failed and KEY[14:30] not in said
    # Before: the right guess listed the (redacted) file, a wrong one "no matches".
    assert answers == {"no matches"}
    failed, said = await model_reads(tools, ctx, redactor, "glob", pattern="**/*.txt")
    assert "«redacted»" in said


async def test_edit_tells_a_right_guess_of_a_key_from_a_wrong_one_in_no_way(
    tools: ToolRegistry, ctx: ToolContext, redactor: Redactor, home: dict[str, Path]
) -> None:
    env = home["root"] / ".env"
    before = env.read_text()
    answers = set()
    for guess in GUESSES:
        failed, said = await model_reads(
            tools, ctx, redactor, "edit", file_path=".env", old_string=guess, new_string=guess + "!"
        )
        answers.add((failed, said.replace(guess, "?")))
    # Before: the right guess "edited .env (1 replacement(s))", a wrong one "not found".
    assert len(answers) == 1 and next(iter(answers))[0]
    assert env.read_text() == before


async def test_edit_still_changes_the_text_around_a_key_and_leaves_the_key(
    tools: ToolRegistry, ctx: ToolContext, redactor: Redactor, home: dict[str, Path]
) -> None:
    env = home["root"] / ".env"
    env.write_text(f"A=1\nANTHROPIC_API_KEY={KEY}\nA=1\n")
    failed, said = await model_reads(
        tools,
        ctx,
        redactor,
        "edit",
        file_path=".env",
        old_string="A=1",
        new_string="A=2",
        replace_all=True,
    )
    assert not failed, said
    assert env.read_text() == f"A=2\nANTHROPIC_API_KEY={KEY}\nA=2\n"
    failed, said = await model_reads(
        tools,
        ctx,
        redactor,
        "edit",
        file_path=".env",
        old_string="ANTHROPIC_API_KEY=",
        new_string="OLD_KEY=",
    )
    assert not failed, said
    assert env.read_text() == f"A=2\nOLD_KEY={KEY}\nA=2\n"


async def test_writing_back_a_file_read_with_a_hidden_key_does_not_lose_the_key(
    tools: ToolRegistry, ctx: ToolContext, redactor: Redactor, home: dict[str, Path]
) -> None:
    env = home["root"] / ".env"
    _, shown = await model_reads(tools, ctx, redactor, "read", file_path=".env")
    assert "ANTHROPIC_API_KEY=«redacted»" in shown
    rewritten = "ANTHROPIC_API_KEY=«redacted»\nDEBUG=0\n"
    failed, said = await model_reads(
        tools, ctx, redactor, "write", file_path=".env", content=rewritten
    )
    # Before: written, and the owner's key was replaced by the marker.
    assert failed and "with edit, around the secret" in said
    assert KEY in env.read_text()
    failed, _ = await model_reads(
        tools, ctx, redactor, "edit", file_path=".env", old_string="DEBUG=1", new_string="DEBUG=0"
    )
    assert not failed and env.read_text() == f"ANTHROPIC_API_KEY={KEY}\nDEBUG=0\n"
    # A new file, or one without a secret, may hold the marker (documentation of it).
    failed, _ = await model_reads(
        tools, ctx, redactor, "write", file_path="doc.md", content=rewritten
    )
    assert not failed


@pytest.mark.parametrize(
    "content",
    [
        b"%PDF-1.4\n" + f"ANTHROPIC_API_KEY={KEY}\n".encode(),
        b"%PDF-1.4\n" + f"ANTHROPIC_API_KEY={KEY}\n".encode("utf-16-le"),
        b"\x89PNG\r\n\x1a\n" + os.urandom(2000) + b"tEXt" + KEY.encode() + os.urandom(100),
        b"GIF89a" + base64.b64encode(KEY.encode()),
    ],
    ids=["pdf", "pdf-utf16", "png-text-chunk", "gif-base64"],
)
async def test_a_media_file_holding_a_key_is_not_shown_to_the_model(
    tools: ToolRegistry, ctx: ToolContext, redactor: Redactor, home: dict[str, Path], content: bytes
) -> None:
    (home["root"] / "page.bin").write_bytes(content)
    failed, said = await model_reads(tools, ctx, redactor, "read", file_path="page.bin")
    # Before: the bytes went to the model as a document or image block, never redacted.
    assert failed and "holds a secret this bot knows" in said
    assert KEY not in said and KEY.encode("utf-16-le").decode("latin-1") not in said


async def test_an_ordinary_pdf_is_still_shown(
    tools: ToolRegistry, ctx: ToolContext, redactor: Redactor, home: dict[str, Path]
) -> None:
    (home["root"] / "doc.pdf").write_bytes(b"%PDF-1.4\n" + os.urandom(4000))
    failed, said = await model_reads(tools, ctx, redactor, "read", file_path="doc.pdf")
    assert not failed and "application/pdf" in said


async def test_send_file_refuses_a_file_whose_name_is_a_key(
    tools: ToolRegistry, ctx: ToolContext, redactor: Redactor, home: dict[str, Path], room: Room
) -> None:
    (home["root"] / f"{KEY}.txt").write_text("nothing secret inside\n")
    failed, said = await model_reads(tools, ctx, redactor, "send_file", path=f"{KEY}.txt")
    assert failed and "name holds a secret" in said
    assert room.sent == []


def test_binary_data_is_read_as_its_ascii_and_text_as_its_utf8() -> None:
    password = "pässwörd-ünïcode-1234"
    known = Redactor()
    known.add(KEY, password)
    binary = os.urandom(3000) + KEY.encode("utf-16-le") + os.urandom(3000)
    assert known.known_spans(readable(binary))
    # A UTF-8 character cut by a chunk's end is kept for the next chunk.
    data = ("x" * 9 + password).encode()
    cut = data.index("ä".encode()) + 1
    reader = Readable()
    text = reader.text(data[:cut]) + reader.text(data[cut:], final=True)
    assert password in text and known.known_spans(text)


# --- the agent's cut of known secrets, on every kind of block ----------------------------


@pytest.fixture
def daemon_knows(monkeypatch: pytest.MonkeyPatch, redactor: Redactor) -> Redactor:
    """This test's redactor as the daemon's own (calls.py reads `logs.REDACTOR`)."""
    from dispatch_matrix.core import logs

    monkeypatch.setattr(logs, "REDACTOR", redactor)
    return redactor


def _image(data: bytes, media_type: str = "image/png") -> dict[str, Any]:
    encoded = base64.standard_b64encode(data).decode("ascii")
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": media_type, "data": encoded},
    }


@pytest.mark.parametrize(
    "part, withheld",
    [
        # An MCP server's screenshot whose metadata holds the key, in UTF-16.
        (_image(b"\x89PNG\r\n\x1a\n" + os.urandom(500) + KEY.encode("utf-16-le")), True),
        (_image(b"%PDF-1.7\n" + f"token: {KEY}".encode()) | {"type": "document"}, True),
        (
            {
                "type": "document",
                "source": {"type": "text", "media_type": "text/plain", "data": f"the key: {KEY}"},
            },
            True,
        ),
        (_image(b"\x89PNG\r\n\x1a\n" + os.urandom(500)), False),
        (
            {"type": "document", "source": {"type": "url", "url": "https://example.org/a.pdf"}},
            False,
        ),
    ],
    ids=["png-utf16", "pdf", "text-document", "plain-png", "url-document"],
)
def test_a_media_block_holding_a_known_secret_never_reaches_the_model(
    daemon_knows: Redactor, part: dict[str, Any], withheld: bool
) -> None:
    from dispatch_matrix.agent.calls import without_known_secrets

    kept = dict(part)
    block = without_known_secrets({"type": "tool_result", "content": [part]})
    [after] = block["content"]
    if withheld:
        assert after["type"] == "text" and "withheld" in after["text"]
    else:
        assert after == kept


async def test_a_refusal_naming_a_links_target_does_not_name_a_known_secret(
    daemon_knows: Redactor, tmp_path: Path
) -> None:
    from harness.taskio import FakeTaskIO

    from dispatch_matrix.agent.calls import ToolCalls
    from dispatch_matrix.core.paths import canonicalize
    from dispatch_matrix.permissions.policy import Policy
    from dispatch_matrix.store import Database

    private = tmp_path / f"vault-{KEY}"
    private.mkdir()
    (private / "notes.txt").write_text("x\n")
    (tmp_path / "innocent").symlink_to(private / "notes.txt")
    deny = [f"Read(/{tmp_path}/vault-*/**)"]
    policy = Policy([], [], deny, tmp_path, tmp_path, canonical=canonicalize)
    context = ToolContext(workdir=tmp_path, allowed_roots=(tmp_path,), bash_timeout_s=60)
    calls = ToolCalls(
        Database.open(tmp_path / "d.db"), policy, ToolRegistry(default_tools()), context
    )
    use = {"id": "toolu_1", "name": "read", "input": {"file_path": "innocent"}}
    block = await calls.run(use, FakeTaskIO(), 1, 1)
    said = block["content"][0]["text"]
    # Before: "Not allowed: …/innocent → …/vault-sk-ant-…/notes.txt is denied by …".
    assert block["is_error"] and "is denied by" in said
    assert KEY not in said and "vault-«redacted»" in said


# --- the logs, whatever a caller puts in a record ---------------------------------------


class _Model:
    def __repr__(self) -> str:
        return f"Model(token_file=/run/{KEY})"


@pytest.mark.parametrize(
    "fields",
    [
        {"path": Path(f"/home/me/{KEY}.txt")},
        {"data": KEY.encode()},
        {"model": _Model()},
        {"seen": {KEY}},
        {"nested": {"paths": [Path(KEY)]}},
        {KEY: 1},
        {"nested": {KEY: "x"}},
        {"password": b"hunter2-bytes"},
    ],
    ids=[
        "path",
        "bytes",
        "object",
        "set",
        "nested-path",
        "field-name",
        "nested-name",
        "secret-name",
    ],
)
def test_no_field_of_a_log_record_carries_a_known_secret(
    redactor: Redactor, fields: dict[str, Any]
) -> None:
    import json

    # Before: only str, dict, list, tuple and exceptions were scrubbed; a Path, bytes or
    # any object went to the renderer whole, and so did a field's name.
    record = redactor(None, "debug", {"event": "tool.opened", **fields})
    rendered = json.dumps(record, default=repr) + repr(record)
    assert KEY not in rendered and KEY[:30] not in rendered
    assert "hunter2" not in rendered


def test_clean_values_keep_their_type_in_a_log_record(redactor: Redactor) -> None:
    path = Path("/home/me/notes.txt")
    record = redactor(None, "info", {"event": "e", "path": path, "n": 3, "ok": True})
    assert record == {"event": "e", "path": path, "n": 3, "ok": True}


# --- patterns and inputs that used to raise out of the tool -----------------------------


@pytest.mark.parametrize(
    "name, tool_input, said",
    [
        ("glob", {"pattern": "{" * 500 + "}" * 500}, "nests too deeply"),
        ("grep", {"pattern": "(" * 1000 + ")" * 1000}, "nests too deeply"),
        ("grep", {"pattern": "(?:" * 5000 + ")" * 5000}, "nests too deeply"),
        ("grep", {"pattern": "a{99999999999}"}, "too large"),
        ("read", {"file_path": "\ud800x"}, "lone surrogate"),
        ("write", {"file_path": "\udfffx", "content": "x"}, "lone surrogate"),
        ("edit", {"file_path": "a\ud800", "old_string": "a", "new_string": "b"}, "surrogate"),
        ("send_file", {"path": "\ud800"}, "lone surrogate"),
        ("grep", {"pattern": "x", "path": "\ud800"}, "lone surrogate"),
        ("glob", {"pattern": "*", "path": "\ud800"}, "lone surrogate"),
    ],
)
async def test_hostile_patterns_and_paths_end_in_an_error_result(
    tools: ToolRegistry, ctx: ToolContext, name: str, tool_input: dict[str, Any], said: str
) -> None:
    # Before: RecursionError, OverflowError or UnicodeEncodeError out of the tool.
    result = await asyncio.wait_for(tools.run(name, tool_input, ctx), 60)
    assert result.is_error and said in result.content[0]["text"]


@pytest.mark.parametrize(
    "name, tool_input, where",
    [
        ("read", {"file_path": "\ud800x"}, "input.file_path"),
        ("write", {"file_path": "ok.txt", "content": "a\udc00"}, "input.content"),
        ("bash", {"command": "echo \ud800"}, "input.command"),
        ("mcp__x__y", {"items": [{"q": "ok"}, {"q": "\udfff"}]}, "input.items[1].q"),
    ],
)
async def test_a_tool_input_that_is_not_text_is_refused_before_the_policy_judges_it(
    tmp_path: Path, name: str, tool_input: dict[str, Any], where: str
) -> None:
    from harness.taskio import FakeTaskIO

    from dispatch_matrix.agent.calls import ToolCalls
    from dispatch_matrix.core.paths import canonicalize
    from dispatch_matrix.permissions.policy import Policy
    from dispatch_matrix.store import Database

    policy = Policy(["Read", "Write"], [], [], tmp_path, tmp_path, canonical=canonicalize)
    context = ToolContext(workdir=tmp_path, allowed_roots=(tmp_path,), bash_timeout_s=60)
    calls = ToolCalls(
        Database.open(tmp_path / "d.db"), policy, ToolRegistry(default_tools()), context
    )
    io = FakeTaskIO()
    # Before: the policy's canonical path raised UnicodeEncodeError, failing the task.
    block = await calls.run({"id": "toolu_1", "name": name, "input": tool_input}, io, 1, 1)
    assert block["is_error"] and f"{where} holds a lone surrogate" in block["content"][0]["text"]
    assert io.asked == [] and not (tmp_path / "ok.txt").exists()


# --- bind mounts of what is inside a hidden folder ---------------------------------------


def _mount(source: Path, target: Path) -> bool:
    import subprocess

    done = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True)
    return done.returncode == 0


def _umount(target: Path) -> None:
    import subprocess

    subprocess.run(["umount", str(target)], check=True)


@pytest.mark.parametrize("what", ["file", "folder"])
async def test_a_bind_mount_from_inside_the_state_folder_gives_nothing_to_any_file_tool(
    tools: ToolRegistry,
    ctx: ToolContext,
    redactor: Redactor,
    home: dict[str, Path],
    room: Room,
    what: str,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root")
    state, root = home["state"], home["root"]
    (state / "crypto").mkdir()
    (state / "crypto" / "keys.txt").write_text("password = 'crypto-store-key-5521'\n")
    if what == "file":
        target, source, read = root / "innocent.toml", state / "config.toml", "innocent.toml"
        target.touch()
    else:
        target, source, read = root / "docs", state / "crypto", "docs/keys.txt"
        target.mkdir()
    if not _mount(source, target):
        pytest.skip("this machine allows no bind mount")
    try:
        calls: list[tuple[str, dict[str, Any]]] = [
            ("read", {"file_path": read}),
            ("grep", {"pattern": "password", "path": read}),
            ("grep", {"pattern": "password", "path": "."}),
            ("send_file", {"path": read}),
            ("edit", {"file_path": read, "old_string": "password", "new_string": "x"}),
        ]
        for name, tool_input in calls:
            # Before: the file's own identity was compared with nothing (it is no hidden
            # path, has one name): read, grep and send_file gave the config whole.
            _, said = await model_reads(tools, ctx, redactor, name, **tool_input)
            assert "password =" not in said and "crypto-store-key" not in said, (name, said)
    finally:
        _umount(target)
    assert room.sent == []
    assert "password = " in (state / "config.toml").read_text()


# --- what git runs later, in git folders not named .git -----------------------------------


def _git(*args: str) -> None:
    import subprocess

    subprocess.run(
        [
            "git",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
            *args,
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repos(home: dict[str, Path]) -> Path:
    root = home["root"]
    _git("init", "-q", "--separate-git-dir", str(root / "sep.git"), str(root / "sepwork"))
    _git("init", "-q", "--bare", str(root / "remote.git"))
    _git("init", "-q", str(root / "main"))
    (root / "main" / "f").write_text("x\n")
    _git("-C", str(root / "main"), "add", "f")
    _git("-C", str(root / "main"), "commit", "-qm", "x")
    _git("-C", str(root / "main"), "worktree", "add", "-q", str(root / "wt"))
    return root


@pytest.mark.parametrize(
    "target",
    [
        "sep.git/hooks/pre-commit",
        "sep.git/config",
        "sepwork/.git",
        "remote.git/hooks/pre-receive",
        "remote.git/config",
        "wt/.git",
        "main/.git/worktrees/wt/config.worktree",
        "main/.git/worktrees/wt/commondir",
        "fresh/.git",
        "fresh/.GIT",
    ],
)
async def test_no_file_tool_changes_what_git_runs_later_in_a_git_folder_of_any_name(
    tools: ToolRegistry, ctx: ToolContext, redactor: Redactor, repos: Path, target: str
) -> None:
    before = (repos / target).read_bytes() if (repos / target).is_file() else None
    failed, said = await model_reads(
        tools, ctx, redactor, "write", file_path=target, content="gitdir: /tmp/evil\n"
    )
    # Before: each of these was written (hooks run at the owner's next commit or push).
    assert failed and "obeys later" in said, said
    after = (repos / target).read_bytes() if (repos / target).is_file() else None
    assert after == before
    if before is not None:
        failed, _ = await model_reads(
            tools,
            ctx,
            redactor,
            "edit",
            file_path=target,
            old_string=before.decode()[:4],
            new_string="EVIL",
        )
        assert failed and (repos / target).read_bytes() == before


async def test_the_files_of_a_checkout_with_a_separate_git_folder_stay_writable(
    tools: ToolRegistry, ctx: ToolContext, redactor: Redactor, repos: Path
) -> None:
    failed, said = await model_reads(
        tools, ctx, redactor, "write", file_path="sepwork/src/app.py", content="print(1)\n"
    )
    assert not failed, said
    failed, said = await model_reads(
        tools, ctx, redactor, "write", file_path="wt/notes.md", content="# notes\n"
    )
    assert not failed, said


# --- a key in pieces on numbered lines (cat -n, nl, grep -n, a list, a table) -------------


def _pieces(size: int) -> list[str]:
    return [KEY[at : at + size] for at in range(0, len(KEY), size)]


@pytest.mark.parametrize(
    "numbered",
    [
        "\n".join(f"{n:>6}\t{piece}" for n, piece in enumerate(_pieces(10), 1)),
        "\n".join(f"notes.txt:{n}:{piece}" for n, piece in enumerate(_pieces(9), 12)),
        "\n".join(f"{n}. {piece}" for n, piece in enumerate(_pieces(7), 1)),
        "| # | part |\n|---|---|\n"
        + "\n".join(f"| {n} | {piece} |" for n, piece in enumerate(_pieces(8))),
    ],
    ids=["cat-n", "grep-n", "numbered-list", "table"],
)
def test_a_key_in_pieces_on_numbered_lines_is_hidden(redactor: Redactor, numbered: str) -> None:
    # Before: the numbers stood between the pieces in the redactor's view; every piece
    # went out (from a shell's `cat -n` of a wrapped key, or in an answer).
    text = f"here it is:\n{numbered}\ndone"
    hidden = redactor.known(text)
    assert all(piece not in hidden for piece in _pieces(7)[1:-1]), hidden
    assert hidden.startswith("here it is:\n") and hidden.endswith("\ndone")
    # What goes to the room and the logs (shapes too) hides them as well.
    assert all(piece not in redactor.text(text) for piece in _pieces(7)[1:-1])


def test_numbered_lines_without_a_key_are_left_as_they_are(redactor: Redactor) -> None:
    listing = "\n".join(f"{n:>6}\tline {n} of an ordinary file" for n in range(1, 200))
    assert redactor.known(listing) == listing
