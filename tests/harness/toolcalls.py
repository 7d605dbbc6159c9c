"""What the agent tests share: the [permissions] section they run under, and reading the
tool results out of a request the stand-in recorded."""

from __future__ import annotations

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
