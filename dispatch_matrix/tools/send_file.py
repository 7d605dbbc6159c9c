"""`send_file`: the agent sends a file from this computer to the owner's phone, as an
encrypted attachment in the room. The path is confined like any read (and the policy
judges it as a Read)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ..errors import DispatchError
from .base import ToolContext, ToolResult
from .paths import resolve
from .safeopen import Shield, open_file


class SendFileTool:
    """Upload a file to the room."""

    name = "send_file"

    def definition(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": (
                "Send a file from this computer to the owner as an encrypted attachment in "
                "the chat (a report, an image, a log). Use it when the owner asks for a file "
                "or when a result is better read as a file than as a message."
            ),
            "input_schema": {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "Path of the file to send."},
                    "caption": {"type": "string", "description": "Optional text shown with it."},
                },
                "required": ["path"],
            },
        }

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        path_text = tool_input.get("path")
        if not isinstance(path_text, str) or not path_text.strip():
            return ToolResult.error("send_file needs a `path`.")
        try:
            path = resolve(path_text, ctx)
        except DispatchError as err:
            return ToolResult.error(err.message)
        try:
            # By identity too: a hard link to a secret is refused like the secret itself.
            await asyncio.to_thread(_verify, path, ctx)
        except DispatchError as err:
            return ToolResult.error(err.message)
        if ctx.reporter is None:
            return ToolResult.error("There is no room to send files to in this context.")
        caption = tool_input.get("caption")
        try:
            event_id = await ctx.reporter.send_file(
                path, caption if isinstance(caption, str) else None
            )
        except DispatchError as err:
            return ToolResult.error(f"Could not send {path.name}: {err.message}")
        return ToolResult.text(f"Sent {path.name} to the owner (event {event_id}).")


def _verify(path: Path, ctx: ToolContext) -> None:
    """A regular file, reached without a link, that is none of the hidden paths."""
    with open_file(path, Shield.of(ctx.denied_paths), str(path)):
        pass
