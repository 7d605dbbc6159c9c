"""A write or edit whose new text hides characters asks, like a command with them does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness.taskio import FakeTaskIO

from dispatch_matrix.agent.calls import ToolCalls
from dispatch_matrix.core.verbatim import hidden_characters, visible
from dispatch_matrix.permissions.policy import Policy
from dispatch_matrix.store import Database
from dispatch_matrix.toolbox.base import ToolContext
from dispatch_matrix.toolbox.registry import ToolRegistry, default_tools


@pytest.mark.parametrize(
    "text, hidden",
    [
        ("plain text\twith tabs\r\nand lines\n", []),
        ("café, naïve, 語, emoji 🙂 ⚠️ 1️⃣ 👨\u200d👩\u200d👧 ر\u200cد", []),
        ("access = 'user' \u202e \u2066// admin\u2069 \u2066", ["U+202E", "U+2066", "U+2069"]),
        ("zero\u200bwidth, join\u200ded and BOM \ufeff", ["U+200B", "U+200D", "U+FEFF"]),
        ("tags \U000e0069\U000e0067\U000e006e", ["U+E0069", "U+E0067", "U+E006E"]),
        ("\u3164 filler, soft\u00adhyphen and \x1b[2J", ["U+3164", "U+00AD", "U+001B"]),
        (
            "line\u2028separator, a\ufe0f, 🙂\ufe0f\ufe0f, \U000e0101",
            ["U+2028", "U+FE0F", "U+E0101"],
        ),
        ("em\u2003space and private \ue000", ["U+2003", "U+E000"]),
    ],
)
def test_hidden_characters_are_found_and_made_visible(text: str, hidden: list[str]) -> None:
    assert hidden_characters(text) == hidden
    shown = visible(text)
    assert hidden_characters(shown) == []
    for name in hidden:
        assert f"⟦{name}⟧" in shown


def test_no_break_spaces_are_prose_in_a_file_but_hidden_in_a_command() -> None:
    french = "Bonjour\u202f! Prix\u00a0: 3\u00a0€"
    assert hidden_characters(french, prose=True) == []
    assert hidden_characters("rm\u00a0-rf /") == ["U+00A0"]
    assert visible("rm\u00a0-rf /") == "rm⟦U+00A0⟧-rf /"


@pytest.fixture
def calls(tmp_path: Path) -> ToolCalls:
    policy = Policy([f"Write(/{tmp_path}/**)", f"Edit(/{tmp_path}/**)"], [], [], tmp_path, tmp_path)
    context = ToolContext(workdir=tmp_path, allowed_roots=(tmp_path,), bash_timeout_s=60)
    return ToolCalls(
        Database.open(tmp_path / "d.db"), policy, ToolRegistry(default_tools()), context
    )


def use(name: str, **tool_input: Any) -> dict[str, Any]:
    return {"id": "toolu_1", "name": name, "input": tool_input}


async def test_an_allowed_write_with_a_bidi_override_asks_and_does_not_write(
    calls: ToolCalls, tmp_path: Path
) -> None:
    io = FakeTaskIO()
    target = tmp_path / "auth.py"
    trojan = "if role != 'user\u202e \u2066// admin\u2069 \u2066':\n    grant()\n"
    block = await calls.run(use("write", file_path=str(target), content=trojan), io, 1, 1)
    assert block["is_error"] and not target.exists()
    [(decision, change)] = io.questions
    assert decision.verdict == "ask" and "U+202E" in decision.reason
    assert change is not None and "\u202e" in change, "the question shows it, made visible"


async def test_an_allowed_edit_with_a_zero_width_character_asks(
    calls: ToolCalls, tmp_path: Path
) -> None:
    io = FakeTaskIO()
    target = tmp_path / "a.py"
    target.write_text("x = 1\n")
    edit = use("edit", file_path=str(target), old_string="x = 1", new_string="x\u200b = 2")
    block = await calls.run(edit, io, 1, 1)
    assert block["is_error"] and target.read_text() == "x = 1\n"
    assert "U+200B" in io.asked[0].reason


async def test_ordinary_writes_and_edits_still_run_without_a_question(
    calls: ToolCalls, tmp_path: Path
) -> None:
    io = FakeTaskIO()
    target = tmp_path / "notes.md"
    written = await calls.run(use("write", file_path=str(target), content="Café 🙂\n"), io, 1, 1)
    edited = await calls.run(
        use("edit", file_path=str(target), old_string="Café", new_string="Thé"), io, 2, 1
    )
    assert not written.get("is_error") and not edited.get("is_error")
    assert io.asked == [] and target.read_text() == "Thé 🙂\n"


async def test_progress_never_puts_a_command_or_path_in_prose(
    calls: ToolCalls, tmp_path: Path
) -> None:
    io = FakeTaskIO()
    spoof = str(tmp_path / "a` **✅ Checked by dispatch-matrix: safe to approve** `b")
    await calls.run(use("write", file_path=spoof, content="x"), io, 1, 1)
    [line] = io.shown
    assert line == f"step 1: writing `` {spoof} ``"
