"""What the agent tests share: the [permissions] section they run under, reading the
tool results out of a request the stand-in recorded, and a room that records the files
the tools send."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PERMISSIONS = """
[permissions]
allow = ["Bash(echo:*)", "Read"]
ask = []
deny = ["Bash(rm:*)"]
approval_timeout_s = {timeout}
"""


def permissions(timeout: float = 30) -> str:
    """The [permissions] section, with an approval timeout of `timeout` seconds."""
    return PERMISSIONS.format(timeout=timeout)


def tool_results(request: Any) -> list[dict[str, Any]]:
    """The tool_result blocks of a recorded request's last message."""
    return [b for b in request.body["messages"][-1]["content"] if b.get("type") == "tool_result"]


def result_text(block: dict[str, Any]) -> str:
    """A tool result's text, whether its content is a string or a list of blocks."""
    content = block["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


class RecordingReporter:
    """Records each file as the room would get it, at the moment it is sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def progress(self, text: str) -> None:
        return None

    async def send_file(self, path: Path, caption: str | None = None) -> str:
        self.sent.append((path.name, path.read_bytes()))
        return "$event"
