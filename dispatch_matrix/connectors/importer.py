"""`dispatch-matrix mcp import FILE`: Claude Desktop's or Claude Code's `mcpServers` as
`[mcp.servers.NAME]` tables. Pure: it decides the tables and the secret files; the CLI
writes them.

A value that looks like a secret (by name or shape, see `secrets.looks_secret`) never
becomes a literal in the config: an `env` value goes to a file named in `env_files`, a
header to `headers_files`, and an argument to a file-backed variable the argument names
as `${VAR}`. References that are already `${VAR}` stay as they are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dispatch_matrix.connectors.secrets import looks_secret
from dispatch_matrix.connectors.settings import SERVER_NAME

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_KNOWN = {"type", "command", "args", "env", "url", "headers", "cwd", "disabled"}


@dataclass(frozen=True)
class SecretFile:
    """A secret taken out of the imported file, to be written (0600) at `path`."""

    path: Path
    value: str = field(repr=False)
    what: str = ""


@dataclass(frozen=True)
class Imported:
    """One server: the table to write, the secrets to store, and what to tell the user."""

    name: str
    table: dict[str, Any]
    secrets: tuple[SecretFile, ...] = ()
    notes: tuple[str, ...] = ()


class ImportProblem(ValueError):
    """The file holds no servers we can read."""


def servers_in(data: Any) -> dict[str, Mapping[str, Any]]:
    """The `mcpServers` of a Claude Desktop config, a `.mcp.json`, or `~/.claude.json`
    (its top level and each project's)."""
    if not isinstance(data, Mapping):
        raise ImportProblem("the file is not a JSON object")
    found: dict[str, Mapping[str, Any]] = {}
    tables = [data.get("mcpServers")]
    projects = data.get("projects")
    if isinstance(projects, Mapping):
        tables += [p.get("mcpServers") for p in projects.values() if isinstance(p, Mapping)]
    for table in tables:
        if isinstance(table, Mapping):
            found.update({str(k): v for k, v in table.items() if isinstance(v, Mapping)})
    if not found:
        raise ImportProblem('no "mcpServers" in it (is it a Claude Desktop or Claude Code file?)')
    return found


def config_name(name: str) -> str:
    """A server name our config accepts (it becomes part of tool names)."""
    clean = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-_")
    clean = re.sub(r"_{2,}", "_", clean)[:40] or "server"
    return clean if SERVER_NAME.match(clean) else f"s{clean}"[:40]


def convert(name: str, entry: Mapping[str, Any], secrets_dir: Path) -> Imported:
    """One server's table, with its secrets moved to files under `secrets_dir`."""
    table: dict[str, Any] = {}
    secrets: list[SecretFile] = []
    notes: list[str] = []

    def secret_file(kind: str, key: str, value: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9_.-]", "_", key)
        path = secrets_dir / f"{name}.{kind}.{slug}"
        secrets.append(SecretFile(path, value, f"{kind} {key}"))
        return path

    kind = str(entry.get("type") or ("http" if entry.get("url") else "stdio"))
    if kind == "streamable-http":
        kind = "http"
    if kind not in ("stdio", "http", "sse"):
        return Imported(name, {}, notes=(f"skipped: transport {kind!r} is not supported",))
    if entry.get("type"):
        table["type"] = kind
    if entry.get("disabled"):
        table["enabled"] = False
    env_files: dict[str, str] = {}
    if kind == "stdio":
        table["command"] = str(entry.get("command") or "")
        if not table["command"]:
            return Imported(name, {}, notes=("skipped: no command",))
        args = [str(a) for a in entry.get("args") or []]
        table["args"], moved = _args(name, args, env_files, secret_file)
        notes += moved
        if entry.get("cwd"):
            table["cwd"] = str(entry["cwd"])
    else:
        url = str(entry.get("url") or "")
        if looks_secret("url", url):
            var = f"{name.upper().replace('-', '_')}_URL"
            env_files[var] = str(secret_file("env", var, url))
            url = f"${{{var}}}"
            notes.append("the URL held a secret: moved to a file, the config says ${" + var + "}")
        table["url"] = url
        headers, header_files = {}, {}
        for key, value in _strings(entry.get("headers")).items():
            if looks_secret(key, value):
                header_files[key] = str(secret_file("header", key, value))
                notes.append(f"header {key}: moved to a file")
            else:
                headers[key] = value
        if headers:
            table["headers"] = headers
        if header_files:
            table["headers_files"] = header_files
    env: dict[str, str] = {}
    for key, value in _strings(entry.get("env")).items():
        if looks_secret(key, value):
            env_files[key] = str(secret_file("env", key, value))
            notes.append(f"env {key}: moved to a file")
        else:
            env[key] = value
    if env:
        table["env"] = env
    if env_files:
        table["env_files"] = env_files
    ignored = sorted(set(entry) - _KNOWN)
    if ignored:
        notes.append("ignored: " + ", ".join(ignored))
    return Imported(name, table, tuple(secrets), tuple(notes))


def _args(
    name: str, args: list[str], env_files: dict[str, str], secret_file: Any
) -> tuple[list[str], list[str]]:
    """Arguments with secret ones replaced by `${VAR}` (VAR in env_files)."""
    out: list[str] = []
    notes: list[str] = []
    for index, arg in enumerate(args):
        flag = args[index - 1] if index and args[index - 1].startswith("-") else ""
        key, eq, value = arg.partition("=") if arg.startswith("-") else ("", "", arg)
        label = key or flag
        secret = looks_secret(key.lstrip("-"), value) if eq else looks_secret(flag.lstrip("-"), arg)
        if secret:
            var = f"{name.upper().replace('-', '_')}_ARG{index}"
            env_files[var] = str(secret_file("env", var, value if eq else arg))
            out.append(f"{key}=${{{var}}}" if eq else f"${{{var}}}")
            notes.append(f"argument {index}{f' ({label})' if label else ''}: moved to a file")
        else:
            out.append(arg)
    return out, notes


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items() if v is not None}


def to_toml(servers: list[Imported], source: str) -> str:
    """The tables as TOML, to append to the config."""
    out = [f"\n# Imported from {source} by `dispatch-matrix mcp import`."]
    for server in servers:
        if not server.table:
            continue
        out.append(f"\n[mcp.servers.{_key(server.name)}]")
        out.extend(f"{_key(k)} = {_value(v)}" for k, v in server.table.items())
    return "\n".join(out) + "\n"


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value), ensure_ascii=False)
