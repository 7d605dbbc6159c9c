"""The config model: one TOML file plus environment overrides, validated by pydantic.

Environment overrides use the prefix `DISPATCH_` and `__` between section and key, e.g.
`DISPATCH_MATRIX__PASSWORD`. Relative paths in the file are resolved against the file's
own folder, so a config works wherever the daemon is started from. Secrets (the bot's
password, the API key) may be given inline, as a `*_file` path, or through the environment;
they are `SecretStr` so they never print.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from dispatch_matrix.agent.settings import DEFAULT_MODEL, AgentSection
from dispatch_matrix.app.config_checks import env_fix, known_keys, strict_scalars, toml_problem
from dispatch_matrix.app.config_sections import LocalHomeserverSection, LogSection, StoreSection
from dispatch_matrix.connectors.settings import McpSection, WebSection
from dispatch_matrix.core.errors import ConfigError
from dispatch_matrix.matrix.settings import MatrixSection
from dispatch_matrix.permissions.settings import PermissionsSection
from dispatch_matrix.schedule.settings import ScheduleSection
from dispatch_matrix.voice.config import VoiceSection

__all__ = [
    "DEFAULT_MODEL",
    "AgentSection",
    "Config",
    "ConfigError",
    "MatrixSection",
    "VoiceSection",
    "load_config",
]


class Config(BaseSettings):
    """The whole configuration, as read from the file and the environment."""

    model_config = SettingsConfigDict(
        env_prefix="DISPATCH_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    matrix: MatrixSection
    agent: AgentSection = AgentSection()
    permissions: PermissionsSection = PermissionsSection()
    store: StoreSection = StoreSection()
    local_homeserver: LocalHomeserverSection = LocalHomeserverSection()
    log: LogSection = LogSection()
    voice: VoiceSection = VoiceSection()
    schedule: ScheduleSection = ScheduleSection()
    mcp: McpSection = McpSection()
    web: WebSection = WebSection()
    source: Path | None = Field(None, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file, so a service unit can inject secrets.
        return (env_settings, init_settings)

    @property
    def state_dir(self) -> Path:
        """The state folder, absolute."""
        return self.store.path

    @property
    def homeserver_dir(self) -> Path:
        """The local homeserver's folder, absolute."""
        return self.local_homeserver.folder


def default_config_path() -> Path:
    """Where the CLI looks for the config when none is given: store/config.toml here."""
    return Path("store") / "config.toml"


_FIXES = {
    "matrix": "add a [matrix] table with homeserver, user_id, password and owners",
    "matrix.homeserver": 'set homeserver = "https://your.homeserver" under [matrix]',
    "matrix.user_id": 'set user_id = "@yourbot:your.homeserver" under [matrix]',
    "matrix.owners": 'set owners = ["@you:your.homeserver"] under [matrix]',
    "matrix.password_file": "point password_file at a readable file, or use password",
    "agent.api_key_file": "point api_key_file at a readable file, or set ANTHROPIC_API_KEY",
    "voice.api_key_file": "point api_key_file at a readable file, or set DISPATCH_VOICE__API_KEY",
    "agent.env_passthrough": "move it to [agent] secret_env_passthrough: commands still see "
    "it, and its value is hidden from the room, the logs and the model",
}


def type_fix(kind: str, name: str, value: object) -> str | None:
    """How to write a value of the wrong type, from pydantic's error type (pure): the
    reference would only say what the key means, not how TOML spells it."""
    if kind == "list_type":
        example = f"[{json.dumps(value)}]" if isinstance(value, str) else '["…"]'
        return f"write a list in brackets, e.g. {name} = {example}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"write {name} as a whole number, without quotes"
    if kind in ("float_parsing", "float_type"):
        return f"write {name} as a number, without quotes"
    if kind in ("bool_parsing", "bool_type"):
        return f"write {name} = true or {name} = false, without quotes"
    if kind == "string_type":
        example = json.dumps(str(value)) if isinstance(value, int | float) else '"…"'
        return f"write it in double quotes, e.g. {name} = {example}"
    return None


def _fix_for(key: str, problem: str, known: list[str], kind: str = "", value: object = None) -> str:
    if key in _FIXES:
        return _FIXES[key]
    typed = type_fix(kind, key.rsplit(".", 1)[-1], value)
    if typed is not None:
        return typed
    if problem == "unknown key":
        last = key.rsplit(".", 1)[-1]
        close = difflib.get_close_matches(last, known, n=1)
        hint = f"did you mean {close[0]!r}? rename it, or " if close else ""
        return f"{hint}remove it (see the configuration reference in README.md)"
    return "see the configuration reference in README.md"


def _resolve(path: Path, base: Path) -> Path:
    expanded = path.expanduser()
    return expanded if expanded.is_absolute() else (base / expanded).resolve()


def load_config(path: Path) -> Config:
    """Read, validate and resolve a config file; every problem is one ConfigError."""
    path = path.expanduser()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        where = "" if path.is_absolute() else f" (looked for {path.absolute()})"
        raise ConfigError(
            str(path),
            f"no such file{where}",
            "give the one you made with --config FILE (or $DISPATCH_MATRIX_CONFIG), "
            f"or create one with: dispatch-matrix init --config {path}",
        ) from None
    except OSError as err:
        raise ConfigError(
            str(path), f"cannot read: {err.strerror}", "check its permissions"
        ) from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            str(path),
            f"not UTF-8 text (byte {err.start} cannot be read)",
            "save it as UTF-8 text (a config is a plain text file)",
        ) from err
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        problem, fix = toml_problem(str(err), text)
        raise ConfigError(str(path), problem, fix) from err
    config = _validate(data)
    base = path.resolve().parent
    store = config.store.model_copy(update={"path": _resolve(config.store.path, base)})
    local = config.local_homeserver
    local = local.model_copy(update={"folder": _resolve(local.folder, store.path)})
    matrix = config.matrix
    if matrix.password_file is not None:
        matrix = matrix.model_copy(update={"password_file": _resolve(matrix.password_file, base)})
    if matrix.access_token_file is not None:
        token_file = _resolve(matrix.access_token_file, base)
        matrix = matrix.model_copy(update={"access_token_file": token_file})
    agent = config.agent
    if agent.api_key_file is not None:
        agent = agent.model_copy(update={"api_key_file": _resolve(agent.api_key_file, base)})
    voice = config.voice
    voice = voice.model_copy(
        update={
            name: _resolve(getattr(voice, name), base)
            for name in ("api_key_file", "local_model")
            if getattr(voice, name) is not None
        }
    )
    resolved = config.model_copy(
        update={
            "store": store,
            "local_homeserver": local,
            "matrix": matrix,
            "agent": agent,
            "voice": voice,
            "mcp": config.mcp.resolved(base),
            "source": path.resolve(),
        }
    )
    _check_secrets(resolved)
    _check_engine(resolved)
    return resolved


# The import name of the claude-code extra's package.
CLAUDE_CODE_PACKAGE = "claude_agent_sdk"


def _check_engine(config: Config) -> None:
    """The Claude Code engine needs its extra: say so at load, not at the first task."""
    if config.agent.engine == "claude-code" and not engine_installed():
        raise ConfigError(
            "agent.engine",
            '"claude-code" needs the claude-code extra, which is not installed',
            "install it (pip install 'dispatch-matrix[claude-code]', or in a checkout "
            'tools/sync --extra claude-code), or set engine = "api"',
        )


def engine_installed() -> bool:
    """Whether the Claude Code engine's package can be imported here."""
    return importlib.util.find_spec(CLAUDE_CODE_PACKAGE) is not None


def validate_data(data: dict[str, Any]) -> Config:
    """The config a parsed TOML table makes, judged as `load_config` judges a file (paths
    unresolved, secrets unread); what `init` checks its answers with before it writes."""
    return _validate(data)


def _validate(data: dict[str, Any]) -> Config:
    # Before pydantic, whose lax mode would take "yes" for true and "4096" for 4096.
    loose = strict_scalars(data, Config)
    if loose is not None:
        raise loose
    try:
        return Config(**data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        problem = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            problem = "is required but missing"
        elif first["type"] == "extra_forbidden":
            problem = "unknown key"
        loc = tuple(first["loc"])
        known = known_keys(Config, loc)
        fix = _fix_for(key, problem, known, first["type"], first.get("input"))
        if loc and first["type"] != "missing" and not _in_file(data, loc, first.get("input")):
            # Not the file's: an override from the environment, which the fix must name.
            variable = "DISPATCH_" + "__".join(str(part).upper() for part in loc)
            problem = f"{problem} (from the environment variable {variable})"
            fix = env_fix(variable, first["type"], fix)
        raise ConfigError(key, problem, fix) from None


def _in_file(data: dict[str, Any], loc: tuple[str | int, ...], value: object) -> bool:
    """Whether the file gives `value` at `loc` (else the environment overrode it)."""
    here: object = data
    for part in loc:
        if not isinstance(here, dict) or part not in here:
            return False
        here = here[part]
    # A table's own error (an unknown key in it) carries the merged table as its input.
    return isinstance(here, dict) or here == value


def _check_secrets(config: Config) -> None:
    try:
        config.matrix.secret_password()
    except ValueError as err:
        raise ConfigError("matrix.password_file", str(err), _FIXES["matrix.password_file"]) from err
    try:
        config.matrix.secret_access_token()
    except ValueError as err:
        raise ConfigError(
            "matrix.access_token_file", str(err), "point it at a readable file"
        ) from err
    try:
        config.agent.secret_api_key()
    except ValueError as err:
        raise ConfigError("agent.api_key_file", str(err), _FIXES["agent.api_key_file"]) from err
    try:
        config.voice.secret_api_key()
    except ValueError as err:
        raise ConfigError("voice.api_key_file", str(err), _FIXES["voice.api_key_file"]) from err
