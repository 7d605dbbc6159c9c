"""The agent's memory: `memory.md` in the state folder, and the `memory` tool that edits it.

The file holds what should outlive any one conversation — the owner's stated preferences and
lasting facts — as one Markdown bullet per entry. It is read for every request and sent as
its own system block after the stable prompt, so an edit invalidates the prompt cache only
from there on. It stays small (8 KB) because it travels with every request.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dispatch_matrix.core.errors import ToolError
from dispatch_matrix.store.state import write_private
from dispatch_matrix.toolbox.base import ToolContext, ToolResult

MAX_BYTES = 8 * 1024
_ACTIONS = ("view", "add", "replace", "remove")


class Memory:
    """The memory file: read, and changed one entry at a time within the size cap."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes

    def read(self) -> str:
        """The file's text ('' when there is none yet)."""
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    def add(self, text: str) -> str:
        """Append one entry; returns the new text. Raises ToolError past the size cap."""
        entry = _entry(text)
        current = self.read()
        if entry in current.splitlines():
            raise ToolError("that entry is already in memory")
        joined = current if not current or current.endswith("\n") else current + "\n"
        return self._write(joined + entry + "\n")

    def replace(self, old: str, text: str) -> str:
        """Replace the one occurrence of `old` with `text`; returns the new text."""
        current = self.read()
        _require_once(current, old)
        return self._write(current.replace(old, _one_line(text), 1))

    def remove(self, old: str) -> str:
        """Delete the entry (line) holding `old`, which must name exactly one line."""
        lines = self.read().splitlines()
        hits = [i for i, line in enumerate(lines) if old.strip() and old.strip() in line]
        if not hits:
            raise ToolError(f"no entry contains {old!r}; view the memory to see its entries")
        if len(hits) > 1:
            raise ToolError(f"{len(hits)} entries contain {old!r}; quote more of the one to remove")
        del lines[hits[0]]
        return self._write("\n".join(lines) + ("\n" if lines else ""))

    def _write(self, text: str) -> str:
        size = len(text.encode("utf-8"))
        if size > self.max_bytes:
            raise ToolError(
                f"memory.md would grow to {size} bytes, over its limit of {self.max_bytes} "
                "bytes. Nothing was saved. Remove or shorten entries that matter less "
                "(action remove or replace) first."
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_private(self.path, text)
        return text

    def system_block(self) -> str:
        """The memory as the system prompt's second block (never empty: the API refuses that)."""
        text = self.read().strip()
        if not text:
            return (
                "Your memory (memory.md) is empty. When the owner states a lasting preference "
                "or a fact about themselves or their machine, record it with the memory tool."
            )
        return (
            "Your memory (memory.md): what the owner asked you to keep in mind. Follow it; keep "
            "it current with the memory tool when they state a new lasting preference.\n\n" + text
        )


class MemoryTool:
    """The `memory` tool: view, add, replace or remove an entry of memory.md."""

    name = "memory"

    def __init__(self, memory: Memory) -> None:
        self._memory = memory

    def definition(self) -> dict[str, Any]:
        """The tool's entry in the Messages API `tools` list."""
        return {
            "name": self.name,
            "description": (
                "Your persistent memory across conversations (a short Markdown list, at most "
                f"{self._memory.max_bytes // 1024} KB, shown to you in the system prompt). "
                "Record the owner's stated lasting preferences and facts (e.g. 'prefers metric "
                "units'), not task details. Actions: view; add (text: one entry); replace "
                "(old: text of the entry to change, text: its new wording); remove (old: text "
                "of the entry to delete)."
            ),
            "input_schema": {
                "type": "object",
                "properties": {
                    "action": {"type": "string", "enum": list(_ACTIONS)},
                    "text": {"type": "string", "description": "The entry to add, or new text"},
                    "old": {"type": "string", "description": "Text of the entry to change"},
                },
                "required": ["action"],
            },
        }

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Do one action; mistakes and the size cap come back as error results."""
        action = tool_input.get("action")
        text = str(tool_input.get("text") or "")
        old = str(tool_input.get("old") or "")
        if action == "view":
            current = self._memory.read()
            return ToolResult.text(current if current.strip() else "(memory is empty)")
        if action == "add":
            _need(text, "text", action)
            self._memory.add(text)
            return ToolResult.text(f"Saved to memory: {_entry(text)}")
        if action == "replace":
            _need(old, "old", action)
            _need(text, "text", action)
            self._memory.replace(old, text)
            return ToolResult.text(f"Memory updated: {old!r} is now {_one_line(text)!r}")
        if action == "remove":
            _need(old, "old", action)
            self._memory.remove(old)
            return ToolResult.text(f"Removed from memory the entry with {old!r}")
        return ToolResult.error(f"memory: action must be one of {', '.join(_ACTIONS)}")


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _entry(text: str) -> str:
    line = _one_line(text)
    return line if line.startswith("- ") else f"- {line.removeprefix('-').strip()}"


def _need(value: str, key: str, action: str) -> None:
    if not value.strip():
        raise ToolError(f"action {action} needs {key!r}")


def _require_once(current: str, old: str) -> None:
    count = current.count(old) if old else 0
    if count == 0:
        raise ToolError(f"{old!r} is not in memory; view it to see its entries")
    if count > 1:
        raise ToolError(f"{old!r} occurs {count} times; quote more of the entry to change")
