"""The `[mcp]` and `[web]` config sections: MCP servers as Claude Desktop and Claude Code
configure them, and the API's own web tools.

A server is either a command (stdio: `command`, `args`, `env`, `cwd`) or an endpoint
(`url`, `headers`; streamable HTTP, or `type = "sse"` for the older transport). Values in
`args`, `env`, `url` and `headers` may say `${VAR}` or `${VAR:-default}`, as in Claude
Code's `.mcp.json`: VAR comes from the server's own `env` / `env_files` first (for an
HTTP server they serve only that), then the daemon's environment. Secrets belong in
`env_files` / `headers_files` (name → a file holding the value) or in the environment,
never inline.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# A server's name becomes part of tool names (`mcp__NAME__TOOL`), so it keeps to the
# characters the API allows in a tool name, and never holds the `__` separator.
SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class McpServerSpec(_Section):
    """[mcp.servers.NAME]: one MCP server, run by us (stdio) or reached over HTTP."""

    type: Literal["stdio", "http", "sse"] | None = Field(
        None, description="Transport; by default stdio with `command`, http with `url`"
    )
    command: str | None = Field(None, description="The program that runs the server (stdio)")
    args: list[str] = Field(default_factory=list, description="Its arguments")
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment of the server; `${VAR}` allowed"
    )
    env_files: dict[str, Path] = Field(
        default_factory=dict,
        description="Environment variables read from files (secrets)",
        # The config_sections.SECRET_FILE mark (not imported: connectors stay below config).
        json_schema_extra={"secret_file": True},
    )
    cwd: Path | None = Field(None, description="Working directory of the server process")
    url: str | None = Field(None, description="Endpoint of an HTTP server")
    headers: dict[str, str] = Field(
        default_factory=dict, description="HTTP headers sent to it; `${VAR}` allowed"
    )
    headers_files: dict[str, Path] = Field(
        default_factory=dict,
        description="HTTP headers read from files (secrets)",
        json_schema_extra={"secret_file": True},
    )
    enabled: bool = Field(True, description="Start it with the daemon")
    timeout_s: float = Field(120.0, gt=0, description="Longest one tool call may take")
    start_timeout_s: float = Field(30.0, gt=0, description="Longest start-up and tool listing")

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerSpec:
        kind = self.transport
        if kind == "stdio":
            if not self.command:
                raise ValueError('a stdio server needs `command` (e.g. command = "npx")')
            if self.url or self.headers or self.headers_files:
                raise ValueError("give either `command` (stdio) or `url` (http), not both")
        else:
            if not self.url:
                raise ValueError(f"a {kind} server needs `url`")
            if not re.match(r"^(https?://|\$\{)", self.url):
                raise ValueError("`url` must be an http(s) URL")
            if self.command or self.args or self.cwd:
                raise ValueError("give either `command` (stdio) or `url` (http), not both")
        return self

    @property
    def transport(self) -> Literal["stdio", "http", "sse"]:
        """stdio, http or sse: as given, else by which of `command` / `url` is set."""
        if self.type is not None:
            return self.type
        return "http" if self.url and not self.command else "stdio"

    def resolved(self, base: Path) -> McpServerSpec:
        """A copy whose file paths are absolute (relative ones are against `base`)."""

        def fix(path: Path) -> Path:
            expanded = path.expanduser()
            return expanded if expanded.is_absolute() else (base / expanded).resolve()

        return self.model_copy(
            update={
                "env_files": {k: fix(v) for k, v in self.env_files.items()},
                "headers_files": {k: fix(v) for k, v in self.headers_files.items()},
                "cwd": fix(self.cwd) if self.cwd is not None else None,
            }
        )


class McpSection(_Section):
    """[mcp]: the MCP servers whose tools the agent may use (`mcp__NAME__TOOL`)."""

    servers: dict[str, McpServerSpec] = Field(default_factory=dict)

    @field_validator("servers")
    @classmethod
    def _names(cls, value: dict[str, McpServerSpec]) -> dict[str, McpServerSpec]:
        for name in value:
            if not SERVER_NAME.match(name) or "__" in name:
                raise ValueError(
                    f"server name {name!r} must be letters, digits, - and _ (no double _), "
                    "at most 40 characters: it becomes part of the tool names mcp__NAME__TOOL"
                )
        return value

    def resolved(self, base: Path) -> McpSection:
        """A copy whose servers' file paths are absolute."""
        return self.model_copy(
            update={"servers": {k: v.resolved(base) for k, v in self.servers.items()}}
        )

    @property
    def enabled(self) -> dict[str, McpServerSpec]:
        """The servers to start, by name."""
        return {name: spec for name, spec in self.servers.items() if spec.enabled}


# The newest versions of the server tools that the installed SDK lists (see
# `anthropic.types.ToolUnionParam`); a test checks they are still there.
WEB_SEARCH_VERSION = "web_search_20260318"
WEB_FETCH_VERSION = "web_fetch_20260318"


class WebSection(_Section):
    """[web]: the Messages API's own web search and web fetch (run by the API, not here)."""

    search: bool = Field(False, description="Offer the model web search")
    fetch: bool = Field(False, description="Offer the model web fetch (reads pages it names)")
    allowed_domains: list[str] = Field(
        default_factory=list, description="Only these domains (e.g. example.com)"
    )
    blocked_domains: list[str] = Field(
        default_factory=list, description="Never these domains; not with allowed_domains"
    )
    max_uses_per_task: int = Field(
        10, ge=1, le=100, description="Searches plus fetches one task may make"
    )
    search_version: str = Field(WEB_SEARCH_VERSION, pattern=r"^web_search_\d{8}$")
    fetch_version: str = Field(WEB_FETCH_VERSION, pattern=r"^web_fetch_\d{8}$")
    fetch_max_content_tokens: int | None = Field(
        None, ge=1000, description="Cap on the page text one fetch adds to the context"
    )

    @model_validator(mode="after")
    def _domains(self) -> WebSection:
        if self.allowed_domains and self.blocked_domains:
            raise ValueError(
                "give allowed_domains or blocked_domains, not both (the API takes only one)"
            )
        for domain in [*self.allowed_domains, *self.blocked_domains]:
            if "://" in domain or not domain.strip():
                raise ValueError(f"{domain!r}: write a domain such as example.com, not a URL")
        return self

    @property
    def enabled(self) -> bool:
        """Whether any web tool is on."""
        return self.search or self.fetch
