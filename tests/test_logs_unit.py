"""The log's contents: our events, not the libraries' chatter, and nothing a terminal would
obey, in the file an operator reads or on the console the daemon writes to; secrets hidden
before anything is escaped."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatch_matrix.core import logs, terminal
from dispatch_matrix.matrix.outbox import render


def test_at_debug_rendering_an_answer_writes_our_event_not_the_renderers_steps(
    tmp_path: Path,
) -> None:
    # The Markdown renderer logs every rule it enters at debug (hundreds per answer); an
    # operator who turns on debug to follow the bot found the file flooded with them.
    logs.setup("debug", tmp_path)
    try:
        html = render("# Review\n\n- **one** item\n- `two`\n\n```\ncode\n```\n")
        logs.get("test").debug("test.rendered", size=len(html))
        lines = (tmp_path / "dispatch.jsonl").read_text(encoding="utf-8").splitlines()
    finally:
        logs.setup("error")
    assert "<h1>" in html
    assert [json.loads(line)["event"] for line in lines] == ["test.rendered"]


@pytest.mark.parametrize(
    "text",
    [
        "plain words, é, 名前, 🎙️",
        "csi \x9b[2J and del \x7f",
        "right-to-left \u202eexe.txt and an isolate \u2066x\u2069",
        "a line separator \u2028 here",
        "a lone surrogate \ud800 from a broken decoder",
        "a typed backslash \\x1b stays text",
    ],
)
def test_a_json_line_reads_back_the_same_and_holds_nothing_a_terminal_obeys(text: str) -> None:
    line = logs.in_json(json.dumps({"event": "x", "said": text}, ensure_ascii=False))
    assert json.loads(line) == {"event": "x", "said": text}
    assert terminal.safe(line) == line, "nothing in the line needed an escape"
    line.encode("utf-8")  # a lone surrogate would raise here: the log file could not hold it


def test_the_log_file_shows_an_owners_controls_as_escapes(tmp_path: Path) -> None:
    """The JSON log escaped only C0: C1 controls, bidi overrides and lone surrogates went to
    the file raw (and a lone surrogate made the record fail to write)."""
    logs.setup("info", tmp_path)
    try:
        said = "\x9b]0;owned\x07 \u202egnp.exe \ud800"
        logs.get("test").info("test.said", text=said)
        [line] = (tmp_path / "dispatch.jsonl").read_text(encoding="utf-8").splitlines()
    finally:
        logs.setup("error")
    assert terminal.safe(line) == line
    assert json.loads(line)["text"] == said


@contextlib.contextmanager
def console() -> Iterator[io.StringIO]:
    """What the console log writes, caught in a string; the tests' quiet setup after."""
    stream = io.StringIO()
    logs.setup("info", stream=stream)
    try:
        yield stream
    finally:
        logs.setup("error")


def test_the_console_shows_a_tracebacks_and_a_librarys_controls_as_escapes() -> None:
    """The console renderer writes a field's value as its repr, but the event and a
    traceback as they are: an exception's words or a library's message (text from an owner,
    a homeserver, a connector) went to the operator's terminal raw, where an OSC sequence
    sets the window title and a bidi override shows other text than the bytes say."""
    said = "owner said \x1b]0;owned\x07 \u202egnp.exe\r"
    with console() as stream:
        try:
            raise ValueError(said)
        except ValueError:
            logs.get("test").exception("test.crashed")
        logging.getLogger("some.library").error("a library heard: %s", said)
        logging.getLogger("some.library").error("one record\n[info     ] forged.line")
    out = stream.getvalue()
    assert terminal.safe(out, lines=True) == out, "nothing on the console a terminal obeys"
    assert out.count(terminal.safe(said)) == 2, "both shown, as escapes"
    assert "one record\\x0a[info     ] forged.line" in out, "a library's record stays one line"
    assert "Traceback (most recent call last):\n" in out, "a traceback keeps its lines"


def test_the_console_redacts_a_traceback_before_it_escapes_it() -> None:
    """A known secret with a colour sequence inside it is found (the redactor passes colour
    over); escaped first, the sequence would be letters between its characters."""
    secret = f"console-secret-{uuid.uuid4().hex}"
    logs.REDACTOR.add(secret)
    with console() as stream:
        try:
            raise ValueError(f"token {secret[:12]}\x1b[1m{secret[12:]} refused")
        except ValueError:
            logs.get("test").exception("test.crashed")
    out = stream.getvalue()
    assert f"ValueError: token {logs.REDACTED} refused" in out
    assert secret[12:] not in out


def test_a_console_record_with_nothing_to_escape_runs_no_terminal_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Escaping is looked for in logs first: the path of a message (issue 29's walk) does
    not reach terminal.py for records that hold nothing a terminal would obey."""
    escaped: list[str] = []
    monkeypatch.setattr(logs, "safe", lambda text, **_: escaped.append(text) or text)
    with console() as stream:
        logs.get("test").info("task.started", task="#1", said="plain words, é, 名前")
        logging.getLogger("some.library").error("a plain library line")
    assert "task.started" in stream.getvalue() and escaped == []
