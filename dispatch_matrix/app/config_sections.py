"""The config sections of the application itself: the state folder, the local homeserver and
logging. Part of the config model (`config.py` assembles them with the features' sections
and loads the file); each field's default and check live here and nowhere else."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from dispatch_matrix.core.settings import Section


class StoreSection(Section):
    """[store]: the state folder (SQLite ledger, crypto store, keys, logs)."""

    path: Path = Field(Path(), description="State folder; relative to the config file")


class LocalHomeserverSection(Section):
    """[local_homeserver]: a private Synapse that `run` starts and stops with the bot."""

    enabled: bool = False
    folder: Path = Path("homeserver")
    host: str = "127.0.0.1"
    port: int = Field(8008, ge=1, le=65535)
    server_name: str = "localhost"


class LogSection(Section):
    """[log]: terminal and file logging."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    file: bool = Field(True, description="Write JSON lines to logs/ in the state folder")
