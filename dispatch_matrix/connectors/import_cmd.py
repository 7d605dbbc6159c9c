"""The effects of `dispatch-matrix mcp import`: read the JSON, write the secret files
(0600, in the state folder), append the tables to the config, and check it still loads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from dispatch_matrix.connectors.importer import (
    Imported,
    ImportProblem,
    config_name,
    convert,
    servers_in,
    to_toml,
)
from dispatch_matrix.connectors.settings import McpSection
from dispatch_matrix.core.errors import ConfigError, DispatchError
from dispatch_matrix.store.state import StateFolder, write_private


class ImportTarget(Protocol):
    """What the import reads of the config it appends to (the app's `Config` is one)."""

    @property
    def mcp(self) -> McpSection: ...

    @property
    def state_dir(self) -> Path: ...

    @property
    def source(self) -> Path | None: ...


def run_import(
    config_path: Path,
    source: Path,
    say: Callable[[str], None],
    load: Callable[[Path], ImportTarget],
    *,
    dry_run: bool = False,
) -> int:
    """Import the servers of `source` into the config at `config_path` (read, and checked
    again once written, with `load`: the app's config loader); 0 on success."""
    config = load(config_path)
    try:
        data = json.loads(source.expanduser().read_text())
        entries = servers_in(data)
    except OSError as err:
        raise DispatchError(f"cannot read {source}: {err.strerror}", fix="check the path") from err
    except (ValueError, ImportProblem) as err:
        raise DispatchError(
            f"{source}: {err}", fix="give a Claude Desktop or .mcp.json file"
        ) from err
    secrets_dir = StateFolder(config.state_dir).secrets_dir / "mcp"
    taken = set(config.mcp.servers)
    imported: list[Imported] = []
    for original, entry in entries.items():
        name = config_name(original)
        if name in taken:
            say(f"- {original}: skipped, the config already has [mcp.servers.{name}]")
            continue
        taken.add(name)
        server = convert(name, entry, secrets_dir)
        imported.append(server)
        renamed = f" (as {name})" if name != original else ""
        state = "skipped" if not server.table else "imported"
        say(f"- {original}{renamed}: {state}" + "".join(f"; {n}" for n in server.notes))
    servers = [s for s in imported if s.table]
    if not servers:
        say("Nothing to import.")
        return 1
    text = to_toml(servers, source.name)
    secrets = [secret for server in servers for secret in server.secrets]
    if dry_run:
        say(f"\nWould append to {config.source}:\n{text}")
        for secret in secrets:
            say(f"Would write {secret.what} to {secret.path} (0600)")
        return 0
    assert config.source is not None
    original_text = config.source.read_text()
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for secret in secrets:
        write_private(secret.path, secret.value + "\n")
    write_private(config.source, original_text.rstrip("\n") + "\n" + text)
    try:
        load(config.source)
    except ConfigError:
        write_private(config.source, original_text)
        raise
    moved = f"; {len(secrets)} secret(s) moved to files in {secrets_dir}" if secrets else ""
    say(
        f"\nImported {len(servers)} server(s) into {config.source}{moved}.\n"
        "Their tools need a rule to run without asking, e.g. "
        f'allow = ["mcp__{servers[0].name}"]; restart dispatch-matrix to start them.'
    )
    return 0
