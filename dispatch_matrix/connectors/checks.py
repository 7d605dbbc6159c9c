"""What `doctor` checks of the MCP servers: each one starts and lists its tools, and no
secret is written inline in the config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from dispatch_matrix.connectors.launch import LaunchError, prepare
from dispatch_matrix.connectors.secrets import looks_secret
from dispatch_matrix.connectors.server import ProbeFailed, probe
from dispatch_matrix.connectors.settings import McpSection
from dispatch_matrix.core import logs

Line = tuple[bool, str, str]


class WithServers(Protocol):
    """What the checks read of the config: its [mcp] section (the app's `Config` is one)."""

    @property
    def mcp(self) -> McpSection: ...


def inline_secrets(config: WithServers) -> list[Line]:
    """A failed line per secret-looking literal in `env` or `headers`."""
    lines: list[Line] = []
    for name, spec in config.mcp.servers.items():
        for kind, table in (("env", spec.env), ("headers", spec.headers)):
            for key, value in table.items():
                if looks_secret(key, value):
                    lines.append(
                        (
                            False,
                            f"MCP server {name}: {kind}.{key} holds a secret written inline",
                            f"move it to {kind}_files (a 0600 file) or the environment as "
                            f"${{VAR}}; `dispatch-matrix mcp import` does this",
                        )
                    )
    return lines


async def check_servers(config: WithServers) -> list[Line]:
    """One line per enabled server, then any inline secrets."""
    lines: list[Line] = []
    for name, spec in config.mcp.enabled.items():
        try:
            launch = prepare(name, spec, os.environ, lambda p: Path(p).read_text())
            logs.REDACTOR.add(*launch.secrets)
            tools = await probe(launch, spec)
        except LaunchError as err:
            lines.append((False, f"MCP server {name}: {err.message}", err.fix or ""))
            continue
        except ProbeFailed as err:
            lines.append(
                (
                    False,
                    f"MCP server {name} did not start: {err.message}",
                    f"check that it runs on its own: {launch.describe()}",
                )
            )
            continue
        shown = ", ".join(tools[:8]) + (", …" if len(tools) > 8 else "")
        lines.append((True, f"MCP server {name}: {len(tools)} tools ({shown})", ""))
    return lines + inline_secrets(config)
