"""The `read`, `write` and `edit` tools: confined, off the event loop, atomic on disk.

Every path goes through `paths.resolve` first (roots, denied paths, symlinks), then is
opened race-free by `safeopen` (each component from a folder descriptor, no link followed,
the hidden paths compared by inode so a hard link to a secret is refused too). The
semantics follow the SDK's reference tools (`anthropic.lib.tools.agent_toolset`): `edit`
replaces an exact string that must be unique unless `replace_all`; `read` takes an
inclusive 1-indexed `view_range`. Unlike the reference, `read` numbers its lines, pages
large files instead of refusing them, and `write` replaces files atomically.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import ToolError
from dispatch_matrix.core.redaction import REDACTED, hide
from dispatch_matrix.toolbox.base import ToolContext, ToolResult
from dispatch_matrix.toolbox.paths import resolve, resolve_for_write
from dispatch_matrix.toolbox.safeopen import Shield, open_file, write_atomic
from dispatch_matrix.toolbox.schema import (
    EDIT_SCHEMA,
    READ_SCHEMA,
    WRITE_SCHEMA,
    EditInput,
    ReadInput,
    WriteInput,
    guarded,
    parse_input,
)
from dispatch_matrix.toolbox.secretscan import readable

MAX_LINE_CHARS = 2000
MAX_EDIT_BYTES = 16 * 1024 * 1024
MAX_IMAGE_BASE64_BYTES = 5 * 1024 * 1024
MAX_PDF_BYTES = 20 * 1024 * 1024
# Counting the lines of a file bigger than this would take too long for a note.
COUNT_LINES_MAX_BYTES = 64 * 1024 * 1024
_SNIFF_BYTES = 8192
_CHUNK = 64 * 1024
# Media types the API accepts in a tool result, recognised by their magic bytes rather than
# their name: a mislabelled image would make every later request of the task fail.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
)


def sniff_media_type(head: bytes) -> str | None:
    """The media type of an image or PDF from its first bytes; None for anything else."""
    for magic, media_type in _MAGIC:
        if head.startswith(magic):
            return media_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


class ReadTool:
    """`read`: a text file by line range with line numbers, or an image / PDF as a block.

    Text goes out through the agent's redactor; an image or a PDF is a block the redactor
    cannot read, so one whose bytes hold the daemon's own secrets (`known_spans`) is refused.
    """

    name = "read"

    def __init__(self, known_spans: Callable[[str], list[tuple[int, int]]] | None = None) -> None:
        self.known_spans = known_spans or logs.REDACTOR.known_spans

    def definition(self) -> dict[str, Any]:
        """The Messages API entry."""
        return {
            "name": self.name,
            "description": (
                "Read a file. Text comes back with line numbers (`number<TAB>line`); a long "
                "file is returned up to the output limit with a note telling you which "
                "view_range to ask for next. PNG, JPEG, GIF and WebP images and PDFs come "
                "back as content you can see. Binary files are refused. Lines longer than "
                f"{MAX_LINE_CHARS} characters are cut."
            ),
            "input_schema": READ_SCHEMA,
        }

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Read one file."""
        return await guarded(self.name, self._run(tool_input, ctx))

    async def _run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        args = parse_input(ReadInput, tool_input)
        view_range = args.view_range
        if view_range is not None and len(view_range) != 2:
            raise ToolError("view_range must be [start_line, end_line]")
        if view_range is not None and 0 < view_range[1] < view_range[0]:
            raise ToolError("view_range ends before it starts")
        target = resolve(args.file_path, ctx)
        return await asyncio.to_thread(
            _read,
            target,
            args.file_path,
            view_range,
            max(ctx.output_limit, 1000),
            ctx,
            self.known_spans,
        )


class WriteTool:
    """`write`: replace a file's contents atomically, creating folders inside the roots.

    A file that holds one of the daemon's secrets (`known_spans`), which `read` showed the
    model as the marker, is not replaced by content holding the marker: the secret would be
    lost for the marker.
    """

    name = "write"

    def __init__(self, known_spans: Callable[[str], list[tuple[int, int]]] | None = None) -> None:
        self.known_spans = known_spans or logs.REDACTOR.known_spans

    def definition(self) -> dict[str, Any]:
        """The Messages API entry."""
        return {
            "name": self.name,
            "description": (
                "Write a whole file (UTF-8), replacing it if it exists and creating missing "
                "parent folders. The file is replaced atomically and keeps its permissions. "
                "Prefer `edit` for changing part of an existing file."
            ),
            "input_schema": WRITE_SCHEMA,
        }

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Write one file."""
        return await guarded(self.name, self._run(tool_input, ctx))

    async def _run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        args = parse_input(WriteInput, tool_input)
        data = _encode(args.content)
        target = resolve_for_write(args.file_path, ctx)
        existed = await asyncio.to_thread(
            _write, target, data, args.file_path, ctx, self.known_spans
        )
        verb = "replaced" if existed else "created"
        return ToolResult.text(f"{verb} {args.file_path} ({len(data)} bytes)")


class EditTool:
    """`edit`: exact string replacement, unique unless `replace_all`.

    Text that holds one of the daemon's own secrets (the redactor's `known_spans`) is never
    matched: it stays as it is, and old_string cannot be used to guess it.
    """

    name = "edit"

    def __init__(self, known_spans: Callable[[str], list[tuple[int, int]]] | None = None) -> None:
        self.known_spans = known_spans or logs.REDACTOR.known_spans

    def definition(self) -> dict[str, Any]:
        """The Messages API entry."""
        return {
            "name": self.name,
            "description": (
                "Replace exact text in a file. old_string must match the file exactly "
                "(whitespace and indentation included, without read's line-number prefix) "
                "and occur once, unless replace_all is true. The file is rewritten atomically."
            ),
            "input_schema": EDIT_SCHEMA,
        }

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Edit one file."""
        return await guarded(self.name, self._run(tool_input, ctx))

    async def _run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        args = parse_input(EditInput, tool_input)
        if args.old_string == "":
            raise ToolError("old_string is empty; use write to create or replace a whole file")
        if args.old_string == args.new_string:
            raise ToolError("old_string and new_string are identical; nothing would change")
        target = resolve_for_write(args.file_path, ctx)
        count = await asyncio.to_thread(_edit, target, args, ctx, self.known_spans)
        return ToolResult.text(f"edited {args.file_path} ({count} replacement(s))")


def _read(
    target: Path,
    shown: str,
    view_range: list[int] | None,
    limit: int,
    ctx: ToolContext,
    known_spans: Callable[[str], list[tuple[int, int]]],
) -> ToolResult:
    with open_file(target, Shield.of(ctx.denied_paths), shown) as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(_SNIFF_BYTES)
        media_type = sniff_media_type(head)
        if media_type is not None:
            if view_range is not None:
                raise ToolError("view_range is not supported for images and PDFs")
            # The size comes from the open descriptor, before anything big is read.
            _check_media_size(size, shown, media_type)
            rest = handle.read(max(size - len(head), 0) + 1)
            # `%PDF-` before a copy of a `.env` made a "PDF" whose text the model read whole.
            if known_spans(readable(head + rest)):
                raise ToolError(
                    f"{shown} holds a secret this bot knows (a password, token or key it was "
                    "given); it is not shown"
                )
            return _media_result(head + rest, shown, media_type)
        if b"\x00" in head:
            raise ToolError(
                f"{shown} looks like a binary file ({size} bytes, NUL bytes near the start); "
                "use bash (e.g. `file`, `xxd | head`) to inspect it"
            )
        handle.seek(0)
        return ToolResult.text(_numbered(handle, size, view_range, limit, known_spans))


def _check_media_size(size: int, shown: str, media_type: str) -> None:
    if media_type == "application/pdf":
        if size > MAX_PDF_BYTES:
            raise ToolError(f"{shown} is {size} bytes; PDFs over {MAX_PDF_BYTES} are refused")
    elif (size + 2) // 3 * 4 > MAX_IMAGE_BASE64_BYTES:
        raise ToolError(f"{shown} is {size} bytes; too large to send as an image")


def _media_result(data: bytes, shown: str, media_type: str) -> ToolResult:
    if media_type == "application/pdf":
        if len(data) > MAX_PDF_BYTES:
            raise ToolError(f"{shown} is {len(data)} bytes; PDFs over {MAX_PDF_BYTES} are refused")
        block: dict[str, Any] = {"type": "document"}
    else:
        if (len(data) + 2) // 3 * 4 > MAX_IMAGE_BASE64_BYTES:
            raise ToolError(f"{shown} is {len(data)} bytes; too large to send as an image")
        block = {"type": "image"}
    encoded = base64.standard_b64encode(data).decode("ascii")
    block["source"] = {"type": "base64", "media_type": media_type, "data": encoded}
    return ToolResult(
        [{"type": "text", "text": f"{shown} ({media_type}, {len(data)} bytes)"}, block]
    )


def iter_lines(handle: IO[bytes]) -> Iterator[tuple[bytes, bool]]:
    """Each line without its newline, and whether it was cut; memory stays bounded."""
    cap = MAX_LINE_CHARS * 4
    while True:
        chunk = handle.readline(cap)
        if not chunk:
            return
        if chunk.endswith(b"\n") or len(chunk) < cap:
            yield chunk.removesuffix(b"\n"), False
            continue
        while True:
            rest = handle.readline(cap)
            if not rest or rest.endswith(b"\n"):
                break
        yield chunk, True


def _numbered(
    handle: IO[bytes],
    size: int,
    view_range: list[int] | None,
    limit: int,
    known_spans: Callable[[str], list[tuple[int, int]]] = lambda _text: [],
) -> str:
    start, end = (view_range[0], view_range[1]) if view_range else (1, 0)
    start = max(start, 1)
    stop = end if end > 0 else None
    shown: list[str] = []
    used = 0
    lossy = False
    consumed = 0
    last_shown = 0
    cut_short = False
    exhausted = True
    # The lines on either side of those shown, for the secret check only.
    before: str | None = None
    after: str | None = None
    for raw, cut in iter_lines(handle):
        consumed += 1
        if consumed < start - 1:
            continue
        text, undecodable = _decoded(raw, cut)
        if consumed < start:
            before = text
            continue
        if stop is not None and consumed > stop:
            exhausted = False
            after = text
            break
        lossy = lossy or undecodable
        if shown and used + len(f"{consumed:>6}\t{text}") + 1 > limit:
            cut_short = True
            exhausted = False
            after = text
            break
        shown.append(text)
        used += len(f"{consumed:>6}\t{text}") + 1
        last_shown = consumed
    first = last_shown - len(shown) + 1
    out = [
        f"{first + at:>6}\t{text}"
        for at, text in enumerate(_hidden(shown, before, after, known_spans))
    ]
    total = consumed if exhausted else _total_lines(handle, consumed, size)
    notes: list[str] = []
    if size == 0:
        notes.append("[empty file]")
    elif last_shown == 0:
        notes.append(f"[the file has {_count(total)}; nothing at line {start} or after]")
    elif cut_short:
        notes.append(
            f"[showing lines {start}–{last_shown} of {_count(total)} ({size} bytes); the output "
            f"limit was reached. Continue with view_range [{last_shown + 1}, 0].]"
        )
    elif start > 1 or (total is not None and last_shown < total):
        notes.append(f"[showing lines {start}–{last_shown} of {_count(total)}]")
    if lossy:
        notes.append("[note: the file is not valid UTF-8; undecodable bytes are shown as \ufffd]")
    return "\n".join(out + notes)


def _decoded(raw: bytes, cut: bool) -> tuple[str, bool]:
    """A line as shown, and whether it had undecodable bytes."""
    lossy = False
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        lossy = True
    text = text.removesuffix("\r")
    if cut or len(text) > MAX_LINE_CHARS:
        text = text[:MAX_LINE_CHARS] + " … [line cut]"
    return text, lossy


def _hidden(
    lines: list[str],
    before: str | None,
    after: str | None,
    known_spans: Callable[[str], list[tuple[int, int]]],
) -> list[str]:
    """`lines` with the daemon's secrets hidden, found in the lines joined as the file has
    them: numbered one by one, a key wrapped over two lines (`KEY=sk-ant-…` then the rest)
    had a line number between its halves and went to the model whole. The lines around
    them count too, so the part of a key at either edge of a view_range is hidden."""
    block = [*([before] if before is not None else []), *lines, *([after] if after else [])]
    text = "\n".join(block)
    found = known_spans(text)
    if not found:
        return lines
    hidden: list[str] = []
    at = len(before) + 1 if before is not None else 0
    for line in lines:
        stop = at + len(line)
        mine = [(max(s, at) - at, min(e, stop) - at) for s, e in found if s < stop and e > at]
        hidden.append(hide(line, mine) if mine else line)
        at = stop + 1
    return hidden


def _count(total: int | None) -> str:
    return f"{total} lines" if total is not None else "an uncounted number of lines (huge file)"


def _total_lines(handle: IO[bytes], seen: int, size: int) -> int | None:
    """Lines in the file, given that `seen` lines were consumed; None when too big to count."""
    if size > COUNT_LINES_MAX_BYTES:
        return None
    newlines = 0
    last = b""
    consumed_any = False
    # Up to the size the file had when it was opened: one still growing (a log being
    # written) is counted as it was, not followed for as long as it grows.
    left = max(size - handle.tell(), 0)
    while left > 0 and (chunk := handle.read(min(_CHUNK, left))):
        left -= len(chunk)
        consumed_any = True
        newlines += chunk.count(b"\n")
        last = chunk[-1:]
    trailing = 1 if consumed_any and last != b"\n" else 0
    return seen + newlines + trailing


def _encode(content: str) -> bytes:
    try:
        return content.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ToolError(f"content is not valid Unicode text ({err.reason})") from None


def _write(
    target: Path,
    data: bytes,
    shown: str,
    ctx: ToolContext,
    known_spans: Callable[[str], list[tuple[int, int]]],
) -> bool:
    shield = Shield.of(ctx.denied_paths)
    if REDACTED.encode() in data and _holds_secret(target, shield, shown, known_spans):
        # Measured: read `.env` (the key shown as the marker), write it back with one line
        # changed, and the owner's key was gone.
        raise ToolError(
            f"{shown} holds a secret this bot knows, which you were shown as {REDACTED}; "
            f"writing the file whole would replace the secret with {REDACTED}. Change the "
            "file with edit, around the secret."
        )
    return write_atomic(target, data, shield, shown)


def _holds_secret(
    target: Path, shield: Shield, shown: str, known_spans: Callable[[str], list[tuple[int, int]]]
) -> bool:
    """Whether the file `target` exists and holds a known secret (in its first 16 MB)."""
    try:
        with open_file(target, shield, shown) as handle:
            raw = handle.read(MAX_EDIT_BYTES)
    except ToolError:
        # Missing, or not a file: the write says why, if it must.
        return False
    return bool(known_spans(readable(raw)))


def _edit(
    target: Path,
    args: EditInput,
    ctx: ToolContext,
    known_spans: Callable[[str], list[tuple[int, int]]],
) -> int:
    shown = args.file_path
    shield = Shield.of(ctx.denied_paths)
    with open_file(target, shield, shown) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_EDIT_BYTES:
            raise ToolError(f"{shown} is {size} bytes; edit handles files up to {MAX_EDIT_BYTES}")
        # Never past the limit: a file still growing would be read until the disk filled.
        raw = handle.read(MAX_EDIT_BYTES + 1)
        if len(raw) > MAX_EDIT_BYTES:
            raise ToolError(f"{shown} grew past {MAX_EDIT_BYTES} bytes while it was read")
    if b"\x00" in raw[:_SNIFF_BYTES]:
        raise ToolError(f"{shown} looks like a binary file; edit works on text only")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolError(f"{shown} is not valid UTF-8 text; edit cannot change it safely") from None
    old, new = args.old_string, args.new_string
    # The daemon's own secrets are not there for old_string: "found" or "not found" for
    # `KEY=sk-ant-a` would spell the key out one character a call, as grep's lines did.
    secrets = known_spans(text)
    found = _found(text, old, secrets)
    if not found and "\r\n" in text and "\n" in old:
        # The model usually writes "\n"; match the file's CRLF line endings instead.
        old, new = _crlf(old), _crlf(new)
        found = _found(text, old, secrets)
    count = len(found)
    if count == 0:
        raise ToolError(
            f"old_string was not found in {shown}; read the file and copy the text exactly, "
            "with its whitespace and without the line-number prefix"
        )
    if count > 1 and not args.replace_all:
        raise ToolError(
            f"old_string occurs {count} times in {shown}; include more surrounding text to "
            "make it unique, or set replace_all to replace every occurrence"
        )
    updated = _replaced(text, found if args.replace_all else found[:1], len(old), new)
    write_atomic(target, _encode(updated), shield, shown)
    return count if args.replace_all else 1


def _found(text: str, old: str, secrets: list[tuple[int, int]]) -> list[int]:
    """Where `old` starts in `text`, left to right without overlaps as `str.replace` finds
    it, leaving out every place that touches a span of `secrets`: which places are left
    depends only on the text around the secrets, never on what they hold."""
    found: list[int] = []
    at = text.find(old)
    while at != -1:
        end = at + len(old)
        if any(start < end and at < stop for start, stop in secrets):
            at = text.find(old, at + 1)
            continue
        found.append(at)
        at = text.find(old, end)
    return found


def _replaced(text: str, starts: list[int], length: int, new: str) -> str:
    pieces: list[str] = []
    last = 0
    for at in starts:
        pieces += [text[last:at], new]
        last = at + length
    pieces.append(text[last:])
    return "".join(pieces)


def _crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")
