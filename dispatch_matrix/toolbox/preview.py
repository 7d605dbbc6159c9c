"""What a file-changing call would do, for the approval question: the change as a unified
diff, built from the call's own input only. Nothing is read from disk: the file may be the
config or a secret, and its old text must never reach the room through a question."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any


def preview(tool_name: str, tool_input: Mapping[str, Any]) -> str | None:
    """The change a `write` or `edit` asks for, as a diff; None for other tools."""
    path = str(tool_input.get("file_path") or tool_input.get("path") or "")
    if tool_name == "write":
        content = str(tool_input.get("content", ""))
        return _diff("", content, path, note="(the whole new content; any old content goes)")
    if tool_name == "edit":
        old = str(tool_input.get("old_string", ""))
        new = str(tool_input.get("new_string", ""))
        every = " (every occurrence)" if tool_input.get("replace_all") else ""
        return _diff(old, new, path, note=f"(the text replaced{every})")
    return None


def _diff(old: str, new: str, path: str, note: str) -> str:
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"{path} {note}",
        tofile=path,
        n=2,
    )
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    return text or f"--- {path}\n(no change)\n"
