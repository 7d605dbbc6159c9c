"""Text from outside reaches the operator's terminal shown, never obeyed: the one function
that makes it so, and each command output that shows an owner's, a model's, a homeserver's
or a connector's words (status, doctor, the CLI's lines and its error line)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dispatch_matrix import cli
from dispatch_matrix.app import health
from dispatch_matrix.app.config import load_config
from dispatch_matrix.app.doctor import Check
from dispatch_matrix.app.status import show_status
from dispatch_matrix.core import terminal
from dispatch_matrix.core.ids import EventID, RoomID, UserID
from dispatch_matrix.store import Database
from dispatch_matrix.store.db import Session
from dispatch_matrix.store.state import StateFolder

# Anything a terminal may obey: C0 but tab and line feed, DEL, C1, bidi controls, line and
# paragraph separators, lone surrogates.
OBEYED = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
    "\u2028\u2029\ud800-\udfff]"
)
# A title change, a screen wipe and a right-to-left override, as an owner might send them.
HOSTILE = "fix \x1b]0;pwned\x07the \x1b[2Jbuild \u202egnp.exe"
SHOWN = "fix \\x1b]0;pwned\\x07the \\x1b[2Jbuild \\u202egnp.exe"


@pytest.mark.parametrize(
    "text, lines, expected",
    [
        ("plain words, émoji 🎉 and 日本語", False, "plain words, émoji 🎉 and 日本語"),
        ("a\ttab stays", False, "a\ttab stays"),
        (HOSTILE, False, SHOWN),
        # 8-bit CSI, DEL, NUL and the bell, one by one.
        ("\x9b31m red \x7f\x00\x07", False, "\\x9b31m red \\x7f\\x00\\x07"),
        # A carriage return would let the text overwrite the line it is on.
        ("ok\rconnected: yes", True, "ok\\x0dconnected: yes"),
        # One line unless lines are asked for: a title cannot forge the next status line.
        ("first\nconnected: yes", False, "first\\x0aconnected: yes"),
        ("first\nsecond", True, "first\nsecond"),
        # Every bidi embedding, override and isolate, and the marks.
        (
            "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c",
            False,
            "\\u202a\\u202b\\u202c\\u202d\\u202e\\u2066\\u2067\\u2068\\u2069\\u200e\\u200f\\u061c",
        ),
        ("line\u2028sep\u2029", True, "line\\u2028sep\\u2029"),
        # A lone surrogate (JSON can carry one) would make print raise.
        ("half \ud83d pair", False, "half \\ud83d pair"),
        # What writing needs stays: joiners in an emoji, a no-break space, Arabic.
        ("👩\u200d💻 a\u00a0b مرحبا", False, "👩\u200d💻 a\u00a0b مرحبا"),
        ("", False, ""),
    ],
)
def test_safe_shows_what_a_terminal_would_obey(text: str, lines: bool, expected: str) -> None:
    assert terminal.safe(text, lines=lines) == expected


def test_safe_leaves_nothing_a_terminal_obeys_in_any_code_point_below_the_astral_planes() -> None:
    every = "".join(chr(code) for code in range(0x10000))
    assert not OBEYED.search(terminal.safe(every))
    assert terminal.safe(every, lines=True).count("\n") == 1
    # Each shown character is one escape: nothing dropped, so the operator sees it all.
    assert terminal.safe(every).count("\\x") == 0x20 - 1 + 0x21
    # A lone surrogate is shown too, so a UTF-8 terminal can take the whole of it.
    assert terminal.safe(every).encode("utf-8")


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        '[store]\npath = "state"\n\n[matrix]\nhomeserver = "http://127.0.0.1:8008"\n'
        'user_id = "@dispatch:localhost"\npassword = "hunter2hunter2"\nowners = ["@me:localhost"]\n'
    )
    return path


def test_status_shows_task_texts_a_session_and_an_error_without_a_control_in_them(
    tmp_path: Path,
) -> None:
    config = load_config(_config(tmp_path))
    state = StateFolder(config.state_dir).ensure()
    db = Database.open(state.db_path)
    owner = UserID("@me:localhost")
    db.add_task(EventID("$a"), RoomID("!r"), owner, HOSTILE, 0)
    db.add_task(EventID("$b"), RoomID("!r"), owner, "\u202eevil\x1b[1A\nsecond line", 0)
    db.save_session(Session("http://hs\x1b[8m", "@dispatch:localhost", "DEV\x07", "token"))
    record = health.Health(
        pid=1, version="1", started_ms=0, last_error="sync.failed: \x1b[31mred\x1b[0m"
    )
    db.set_meta(health.KEY, record.to_json())
    db.close()
    shown: list[str] = []
    assert show_status(config, shown.append) == 1
    assert all(not OBEYED.search(line) and "\n" not in line for line in shown), shown
    text = "\n".join(shown)
    assert f"  #1 queued: {SHOWN}" in text
    assert "#2 queued: \\u202eevil\\x1b[1A" in text
    assert "server:    http://hs\\x1b[8m" in text and "device DEV\\x07" in text
    assert "last error: sync.failed: \\x1b[31mred\\x1b[0m" in text


def test_a_doctor_line_shows_a_servers_words_and_keeps_its_own_fix_line() -> None:
    check = Check(False, "MCP server said \x1b]52;c;cm0gLXJmIH4=\x07\nok", "restart\r\x1b[K it")
    assert check.line() == (
        "✗ MCP server said \\x1b]52;c;cm0gLXJmIH4=\\x07\\x0aok\n    fix: restart\\x0d\\x1b[K it"
    )


def test_the_cli_prints_lines_and_its_error_line_without_a_control(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli._say(f"one\n{HOSTILE}")
    # The config's path is in the error line: a path can hold an escape too.
    assert cli.main(["status", "--config", str(tmp_path / "no\x1b[2J\nconfig.toml")]) == 2
    out, err = capsys.readouterr()
    assert out == f"one\n{SHOWN}\n"
    assert "no\\x1b[2J\\x0aconfig.toml" in err and not OBEYED.search(err)
    assert err.count("\n") == 1, "the error is one line"
