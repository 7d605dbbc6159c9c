"""`send_file`: the agent sends a file from this computer to the owner's phone, as an
encrypted attachment in the room. The path is confined like any read (and the policy
judges it as a Read); a hidden file is refused, and so is any file that holds a secret the
daemon knows (the redactor's) in its content or its name, which a message would have hidden.
What is sent is the copy that was checked, so the file cannot change between the check and
the upload. A file over the room's size limit is refused before anything is copied: an 8 GB
sparse file used to be copied whole into the temporary folder (filling its disk) and only
then refused by the upload."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import DispatchError, ToolError
from dispatch_matrix.toolbox.base import ToolContext, ToolResult
from dispatch_matrix.toolbox.paths import resolve
from dispatch_matrix.toolbox.safeopen import Shield, open_file
from dispatch_matrix.toolbox.secretscan import Readable

_CHUNK = 1 << 20
# A secret cut in two by a chunk boundary is still found: each chunk is checked together
# with this much of the one before it.
_OVERLAP = 4096
# The bound when the daemon names none: the local homeserver's own upload limit.
DEFAULT_MAX_BYTES = 100 * 1024 * 1024


class SendFileTool:
    """Upload a file to the room."""

    name = "send_file"

    def __init__(
        self, known_secrets: Callable[[str], str] | None = None, max_bytes: int | None = None
    ) -> None:
        # The redactor's public check: the text with every secret it knows replaced.
        self._known = known_secrets or logs.REDACTOR.known
        # The room's limit for a file ([matrix] max_file_mb).
        self._max_bytes = max_bytes if max_bytes is not None else DEFAULT_MAX_BYTES

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
        # The name goes to the room as the attachment's name, unredacted like its content.
        if self._known(path.name) != path.name:
            return ToolResult.error(
                "The file's name holds a secret this bot knows; it is not sent. Send a copy "
                "under another name."
            )
        folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="dispatch-send-"))
        try:
            # By identity too: a hard link to a secret is refused like the secret itself.
            copy = await asyncio.to_thread(
                _checked_copy, path, ctx, folder, self._known, self._max_bytes
            )
            if ctx.reporter is None:
                return ToolResult.error("There is no room to send files to in this context.")
            caption = tool_input.get("caption")
            event_id = await ctx.reporter.send_file(
                copy, caption if isinstance(caption, str) else None
            )
        except ToolError as err:
            return ToolResult.error(err.message)
        except DispatchError as err:
            return ToolResult.error(f"Could not send {path.name}: {err.message}")
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)
        return ToolResult.text(f"Sent {path.name} to the owner (event {event_id}).")


def _checked_copy(
    path: Path, ctx: ToolContext, folder: Path, known: Callable[[str], str], max_bytes: int
) -> Path:
    """A private copy of `path` (a regular file, reached without a link, none of the hidden
    paths, at most `max_bytes`) in `folder`; ToolError when its content holds a secret the
    daemon knows or it is too big."""
    copy = folder / path.name
    with open_file(path, Shield.of(ctx.denied_paths), str(path)) as source:
        size = os.fstat(source.fileno()).st_size
        if size > max_bytes:
            raise ToolError(_too_big(path, max_bytes))
        with copy.open("xb") as out:
            _copy_checked(source, out, path, known, max_bytes)
    return copy


def _copy_checked(
    source: IO[bytes], out: IO[bytes], path: Path, known: Callable[[str], str], max_bytes: int
) -> None:
    reader = Readable()
    tail = ""
    copied = 0
    # Never past the limit: a file still growing is refused, not copied until the disk fills.
    while chunk := source.read(min(_CHUNK, max_bytes + 1 - copied)):
        copied += len(chunk)
        if copied > max_bytes:
            raise ToolError(_too_big(path, max_bytes))
        text = tail + reader.text(chunk)
        if known(text) != text:
            raise ToolError(
                f"{path} holds a secret this bot knows (a password, token or key it was "
                "given); it is not sent. Send a copy without it."
            )
        tail = text[-_OVERLAP:]
        out.write(chunk)


def _too_big(path: Path, max_bytes: int) -> str:
    return (
        f"{path} is larger than the {max_bytes / 1024 / 1024:.1f} MB limit for files in the "
        "room (set by `matrix.max_file_mb` in the config); it is not sent. Send a smaller "
        "file (compress or split it)."
    )
