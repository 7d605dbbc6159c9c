"""Tool names as Claude Code spells them: `mcp__SERVER__TOOL`, within the API's limits.

The API takes tool names of 1–64 characters from `[A-Za-z0-9_-]`. A tool whose name does
not fit is renamed (other characters become `_`, a long name is cut) and gets a short
hash, so two tools never share a name and a name never changes between listings. Pure.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

PREFIX = "mcp__"
MAX_NAME = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def api_names(server: str, tools: Iterable[str]) -> dict[str, str]:
    """API name → the server's own tool name, for every tool of `server`."""
    out: dict[str, str] = {}
    for tool in sorted(set(tools)):
        base = f"{PREFIX}{server}__{_UNSAFE.sub('_', tool)}"
        name = base
        if name != f"{PREFIX}{server}__{tool}" or len(name) > MAX_NAME:
            name = f"{base[: MAX_NAME - 7]}_{_hash(tool)}"
        out[name] = tool
    return out


def server_of(name: str) -> str | None:
    """The server part of an `mcp__SERVER__TOOL` name; None for other names."""
    if not name.startswith(PREFIX):
        return None
    server, sep, _tool = name[len(PREFIX) :].partition("__")
    return server if sep and server else None
