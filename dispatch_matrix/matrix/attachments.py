"""Encrypted attachments (the spec's "Sending encrypted attachments"): upload a file as
AES-CTR ciphertext with its key in the (encrypted) event, and download-and-decrypt what an
owner sends. Sizes are checked before any byte moves; the work happens off the event loop.
A received file is saved at the path its caller picked, under a temporary name renamed
only once it is whole, so a crash or a full disk never leaves half a file in its place.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import mimetypes
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nio import DownloadError, EncryptionError, UploadResponse
from nio.crypto.attachments import decrypt_attachment, encrypt_attachment

from dispatch_matrix.core.errors import DispatchError, HomeserverError
from dispatch_matrix.core.faults import is_disk_full
from dispatch_matrix.matrix.client import MatrixClient
from dispatch_matrix.matrix.failures import UNREACHABLE, why_unreachable
from dispatch_matrix.matrix.fetching import FetchFailed

# nio waits for a download without a limit; one that hangs would hold the sync loop, whose
# watchdog restarts the bot after 150 s without progress (a 30 s long poll, then the
# handling of what it brought): 30 + 90 s leaves a margin. A file within the size limit
# comes well within this on any working link; one that does not is tried again later.
DOWNLOAD_TIMEOUT_S = 90.0

# Said with every size refusal: the owner (or the operator) can raise the limit.
_LIMIT_SET_BY = "set by `matrix.max_file_mb` in the config"


class AttachmentError(DispatchError):
    """A file could not be sent or received; the message says why, for a person."""


class NotSaved(AttachmentError):
    """A received file could not be written (a full disk, a folder it may not write);
    nothing of it is left on disk. Worth trying again once the cause is gone."""

    def __init__(self, folder: Path, error: OSError) -> None:
        self.full = is_disk_full(error)
        if self.full:
            super().__init__(f"the disk holding {folder} is full")
        else:
            super().__init__(f"I could not write it into {folder} ({error.strerror or error})")


@dataclass(frozen=True)
class Received:
    """A file an owner sent, decrypted and saved."""

    path: Path
    mimetype: str
    size: int
    name: str


def _msgtype(mimetype: str) -> str:
    major = mimetype.split("/", 1)[0]
    return {"image": "m.image", "video": "m.video", "audio": "m.audio"}.get(major, "m.file")


def human_size(size: int) -> str:
    """12 KB, 3.4 MB."""
    if size < 1024 * 1024:
        return f"{max(1, round(size / 1024))} KB"
    return f"{size / 1024 / 1024:.1f} MB"


async def upload_file(
    client: MatrixClient,
    path: Path,
    max_bytes: int,
    caption: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Encrypt and upload a file (shown as `name`, else its own name); returns the
    m.room.message content that shares it."""
    name = name or path.name
    size = path.stat().st_size
    if size > max_bytes:
        raise AttachmentError(
            f"{name} is {human_size(size)}, over the {human_size(max_bytes)} limit for files "
            f"({_LIMIT_SET_BY})"
        )
    plaintext = await asyncio.to_thread(path.read_bytes)
    ciphertext, keys = await asyncio.to_thread(encrypt_attachment, plaintext)
    mimetype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    response, _ = await client.client.upload(
        io.BytesIO(ciphertext),
        content_type="application/octet-stream",
        filename=name,
        filesize=len(ciphertext),
    )
    if not isinstance(response, UploadResponse):
        raise HomeserverError(f"upload of {name} failed: {response}")
    file_info = {
        "url": response.content_uri,
        "key": keys["key"],
        "iv": keys["iv"],
        "hashes": keys["hashes"],
        "v": keys.get("v", "v2"),
        "mimetype": mimetype,
    }
    content: dict[str, Any] = {
        "msgtype": _msgtype(mimetype),
        "body": caption or name,
        "filename": name,
        "info": {"mimetype": mimetype, "size": size},
        "file": file_info,
    }
    return content


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._ -]+", "_", Path(name).name).strip(" .") or "file"
    return cleaned[:120]


def file_name(content: dict[str, Any]) -> str:
    """The name an owner's attachment is saved under: its own, made safe for a path."""
    return _safe_name(str(content.get("filename") or content.get("body") or "file"))


def _info(content: dict[str, Any]) -> dict[str, Any]:
    """The event's `info` block; {} when it has none or it is not an object (anything may
    come in an event: a field of the wrong type is as good as absent)."""
    info = content.get("info")
    return info if isinstance(info, dict) else {}


def _encrypted_file(content: dict[str, Any]) -> dict[str, Any] | None:
    """The event's `file` block (an encrypted attachment), None for a plain one."""
    file_info = content.get("file")
    if file_info is None:
        return None
    if not isinstance(file_info, dict):
        raise AttachmentError("that attachment is malformed (its file is not an object)")
    return file_info


def declared_size(content: dict[str, Any]) -> int | None:
    """The size the sender declared, if it declared a usable one (a whole number, not
    negative); never trusted beyond refusing early: the bytes are counted as they come."""
    size = _info(content).get("size")
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None


def described(content: dict[str, Any], path: Path, size: int) -> Received:
    """What the attachment `content` saved at `path` (`size` bytes) is."""
    file_info = content.get("file")
    said = [
        _info(content).get("mimetype"),
        file_info.get("mimetype") if isinstance(file_info, dict) else None,
    ]
    mimetype = next((kind for kind in said if isinstance(kind, str) and kind), "")
    name = file_name(content)
    guessed = mimetype or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Received(path, guessed, size, name)


def part_of(target: Path) -> Path:
    """The temporary name a file is written under before it is renamed to `target`: one
    per target, so what a crash cut short is overwritten by the next attempt, not kept."""
    return target.with_name(f".{target.name}.part")


def write_whole(target: Path, data: bytes, below: Path) -> None:
    """Write `data` to `target` so that `target` only ever exists whole: written under a
    temporary name, synced, its size checked, then renamed (atomic); on any failure (a
    full disk) the temporary file is removed and the error raised. Blocking.

    `below` is a folder the operator chose (made if missing); the folders from it down to
    `target` are made if missing and must be real folders. A folder that is a symbolic link,
    or a link at the temporary name, is never followed (`OSError`, ELOOP or EEXIST): the
    inbox lies where the sandboxed agent may write, and the daemon writing through a link it
    planted would write outside the sandbox's wall."""
    below.mkdir(parents=True, exist_ok=True)
    folder = _open_folders(below, target.parent.relative_to(below).parts)
    try:
        _write_in(folder, target.name, data)
    finally:
        os.close(folder)


def _open_folders(below: Path, parts: tuple[str, ...]) -> int:
    """The descriptor of `below/parts…`, each part made if missing and opened without
    following a link, relative to the one above it (no name is looked up twice)."""
    folder = os.open(below, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, dir_fd=folder)
            inner = os.open(
                part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder
            )
            os.close(folder)
            folder = inner
    except BaseException:
        os.close(folder)
        raise
    return folder


def _write_in(folder: int, name: str, data: bytes) -> None:
    part = part_of(Path(name)).name
    # What a crash left there, or a link someone planted: removed (unlink never follows a
    # link), then created afresh; O_EXCL refuses whatever appears in between.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(part, dir_fd=folder)
    try:
        handle = os.open(
            part,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o666,
            dir_fd=folder,
        )
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
            written = os.fstat(out.fileno()).st_size
        if written != len(data):
            raise OSError(errno.EIO, f"wrote {written} of {len(data)} bytes", part)
        os.replace(part, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(part, dir_fd=folder)
        raise


def link_of(content: dict[str, Any], max_bytes: int) -> str:
    """The mxc:// link of an owner's attachment, checked before a byte moves: an
    `AttachmentError` when it has none, or declares a size over `max_bytes`."""
    declared = declared_size(content)
    if declared is not None and declared > max_bytes:
        raise AttachmentError(
            f"that file is {human_size(declared)}, over my {human_size(max_bytes)} limit "
            f"({_LIMIT_SET_BY})"
        )
    file_info = _encrypted_file(content)
    url = (file_info or {}).get("url") or content.get("url")
    if not isinstance(url, str) or not url.startswith("mxc://"):
        raise AttachmentError("that attachment has no usable file link")
    return url


async def receive_file(
    client: MatrixClient, content: dict[str, Any], target: Path, max_bytes: int, below: Path
) -> Received:
    """Download, check and decrypt an owner's attachment, and save it whole at `target`
    (replacing what is there: the caller picks a path of its own), every folder between
    `below` and it a real one (`write_whole`). A write that fails (a full disk, a link on
    the way) leaves no file and raises `NotSaved`."""
    url = link_of(content, max_bytes)
    file_info = _encrypted_file(content)
    data = await _download(client, url)
    if len(data) > max_bytes:
        raise AttachmentError(
            f"that file is over my {human_size(max_bytes)} limit ({_LIMIT_SET_BY})"
        )
    if file_info:
        try:
            data = await asyncio.to_thread(
                decrypt_attachment,
                data,
                file_info["key"]["k"],
                file_info["hashes"]["sha256"],
                file_info["iv"],
            )
        except (KeyError, ValueError, TypeError, EncryptionError) as err:
            # A key, hash or iv missing or of the wrong type (anything may come in an event),
            # or bytes that are not the file the event describes (nio's EncryptionError for
            # a hash that does not match: it escaped here, and the event was lost unanswered).
            raise AttachmentError(f"that attachment could not be decrypted ({err})") from err
    try:
        await asyncio.to_thread(write_whole, target, data, below)
    except OSError as err:
        raise NotSaved(target.parent, err) from err
    return described(content, target, len(data))


async def _download(client: MatrixClient, url: str) -> bytes:
    """The bytes at `url`, or `FetchFailed` with what the homeserver answered (its status and
    error code; none when no answer came). nio hands an error page that is not JSON (a
    proxy's 502) over as if it were the file: the status is checked here, or a "Bad
    Gateway" page would be decrypted (and refused) or, for a plain file, saved."""
    try:
        async with asyncio.timeout(DOWNLOAD_TIMEOUT_S):
            response = await client.client.download(mxc=url)
    except UNREACHABLE as err:
        raise FetchFailed(
            f"the homeserver did not answer ({why_unreachable(err)})", status=None
        ) from err
    transport = getattr(response, "transport_response", None)
    status = getattr(transport, "status", None)
    if isinstance(response, DownloadError) or not hasattr(response, "body"):
        errcode = getattr(response, "status_code", None)
        wait_ms = getattr(response, "retry_after_ms", None)
        said = [str(part) for part in (status, errcode, getattr(response, "message", None)) if part]
        raise FetchFailed(
            f"the homeserver answered {' '.join(said) or 'with an error'}",
            status=status,
            errcode=errcode if isinstance(errcode, str) else None,
            retry_after_s=wait_ms / 1000 if isinstance(wait_ms, int) else None,
        )
    if isinstance(status, int) and not 200 <= status < 300:
        raise FetchFailed(f"the homeserver answered HTTP {status}", status=status)
    body: bytes = response.body
    return body
