"""From a server's config to what starts it: `${VAR}` expanded, secrets read from their
files, and every secret value named so the redactor can scrub it. Pure: the environment
and the file reader are passed in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dispatch_matrix.connectors.secrets import looks_secret
from dispatch_matrix.connectors.settings import McpServerSpec
from dispatch_matrix.core.errors import DispatchError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class LaunchError(DispatchError):
    """A server cannot be started as configured (a missing variable or secret file)."""


@dataclass(frozen=True)
class ServerLaunch:
    """Everything needed to start or reach one server, with its secrets expanded."""

    name: str
    transport: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Values that must never reach a log, the room or the model.
    secrets: tuple[str, ...] = ()
    # The command line or URL as configured, `${VAR}` unexpanded: safe to show.
    shown: str = ""

    def describe(self) -> str:
        """What runs, for people: as configured, with no secret expanded into it."""
        return self.shown


def expand(text: str, lookup: Callable[[str], str | None], where: str) -> str:
    """`text` with `${VAR}` and `${VAR:-default}` replaced; LaunchError for an unset VAR."""

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = lookup(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise LaunchError(
                    f"{where} uses ${{{name}}}, which is not set",
                    fix=f"export {name} in the daemon's environment (e.g. in its service unit) "
                    f"or give it in env / env_files",
                )
            return default
        return value

    return _VAR.sub(one, text)


def prepare(
    name: str,
    spec: McpServerSpec,
    environ: Mapping[str, str],
    read_file: Callable[[Path], str],
) -> ServerLaunch:
    """The launch of server `name`: files read, variables expanded, secrets collected."""
    secrets: list[str] = []
    where = f"mcp.servers.{name}"

    def from_file(kind: str, key: str, path: Path) -> str:
        try:
            value = read_file(path).strip()
        except OSError as err:
            raise LaunchError(
                f"{where}.{kind}.{key}: cannot read {path}: {err.strerror or err}",
                fix="create the file (mode 0600) holding the value, or fix the path",
            ) from None
        secrets.append(value)
        return value

    env_raw = dict(spec.env)
    env_raw.update({k: from_file("env_files", k, p) for k, p in spec.env_files.items()})

    def from_environ(var: str) -> str | None:
        value = environ.get(var)
        if value is not None and looks_secret(var, value):
            secrets.append(value)
        return value

    env: dict[str, str] = {}
    for key, raw in env_raw.items():
        value = raw if key in spec.env_files else expand(raw, from_environ, f"{where}.env.{key}")
        if looks_secret(key, value):
            secrets.append(value)
        env[key] = value

    def lookup(var: str) -> str | None:
        # The server's own env first, so `args = ["${TOKEN}"]` can use an env_files value.
        return env[var] if var in env else from_environ(var)

    args = tuple(expand(a, lookup, f"{where}.args") for a in spec.args)
    headers = {k: from_file("headers_files", k, p) for k, p in spec.headers_files.items()}
    for key, raw in spec.headers.items():
        value = expand(raw, lookup, f"{where}.headers.{key}")
        # Header values are credentials more often than not: all of them are scrubbed.
        secrets.append(value)
        headers[key] = value
    url = expand(spec.url, lookup, f"{where}.url") if spec.url else None
    if spec.transport == "stdio":
        shown = " ".join([spec.command or "", *spec.args]).strip()
    else:
        shown = f"{spec.url} ({spec.transport})"
    return ServerLaunch(
        name=name,
        transport=spec.transport,
        command=expand(spec.command, lookup, f"{where}.command") if spec.command else None,
        args=args,
        env=env,
        cwd=spec.cwd,
        url=url,
        headers=headers,
        secrets=tuple(s for s in dict.fromkeys(secrets) if s),
        shown=shown,
    )
