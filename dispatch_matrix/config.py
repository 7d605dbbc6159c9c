"""The config model: one TOML file plus environment overrides, validated by pydantic.

Environment overrides use the prefix `DISPATCH_` and `__` between section and key, e.g.
`DISPATCH_MATRIX__PASSWORD`. Relative paths in the file are resolved against the file's
own folder, so a config works wherever the daemon is started from. Secrets (the bot's
password, the API key) may be given inline, as a `*_file` path, or through the environment;
they are `SecretStr` so they never print.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import ConfigError
from .redaction import looks_secret
from .voice.config import VoiceSection

_USER_ID = re.compile(r"^@[a-z0-9._=\-/+]+:[A-Za-z0-9.\-]+(:\d+)?$")
DEFAULT_MODEL = "claude-sonnet-4-6"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _read_secret(inline: SecretStr | None, file: Path | None) -> SecretStr | None:
    if inline is not None:
        return inline
    if file is None:
        return None
    try:
        return SecretStr(file.expanduser().read_text().strip())
    except OSError as err:
        raise ValueError(f"cannot read {file}: {err.strerror}") from err


class MatrixSection(_Section):
    """[matrix]: which homeserver, which bot account, who owns it."""

    homeserver: str = Field(description="Base URL of the homeserver, e.g. https://matrix.org")
    user_id: str = Field(description="The bot's full user id, e.g. @mybot:example.org")
    password: SecretStr | None = Field(None, description="The bot account's password")
    password_file: Path | None = Field(None, description="A file holding the bot's password")
    access_token_file: Path | None = Field(
        None,
        description="Instead of a password: a file holding an access token issued for the bot "
        "(behind MAS: mas-cli manage issue-compatibility-token); its device becomes the bot's",
    )
    owners: list[str] = Field(description="User ids whose messages the bot obeys")
    device_name: str = Field("dispatch-matrix", description="Display name of the bot's device")
    trust: Literal["cross-signed", "encrypted"] = Field(
        "cross-signed",
        description="Which owner devices are obeyed: only those cross-signed by the owner's "
        "pinned identity, or (relaxed, for clients that cannot cross-sign) any encrypted one",
    )
    max_file_mb: float = Field(
        50.0, gt=0, le=1024, description="Largest attachment the bot sends or accepts (MB)"
    )
    undecryptable_grace_s: float = Field(
        120.0, gt=0, description="How long to wait for a message's keys before telling the owner"
    )
    shared_rooms: list[str] = Field(
        default_factory=list,
        description="Room ids where the bot obeys owners even with other members present",
    )
    sync_timeout_ms: int = Field(30_000, ge=1_000, le=120_000, description="Long-poll length")
    send_rate_per_s: float = Field(
        0.2,
        ge=0.0,
        description="The homeserver's limit on the bot's room events, as the bot assumes it "
        "(Synapse's stock rc_message); decorations stay within it so answers never wait. "
        "0 when the bot is exempt (admin API override_ratelimit)",
    )
    send_burst: int = Field(10, ge=1, description="The burst that limit allows (stock: 10)")
    presence_every_s: float = Field(
        30.0, ge=10.0, description="At most one presence update per this many seconds"
    )

    @field_validator("homeserver")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL such as https://matrix.example.org")
        return value.rstrip("/")

    @field_validator("user_id")
    @classmethod
    def _user(cls, value: str) -> str:
        if not _USER_ID.match(value):
            raise ValueError("must be a full Matrix user id such as @bot:example.org")
        return value

    @field_validator("owners")
    @classmethod
    def _owners(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one owner, or the bot obeys nobody")
        for owner in value:
            if not _USER_ID.match(owner):
                raise ValueError(f"{owner!r} is not a full Matrix user id such as @me:example.org")
        return value

    @property
    def max_file_bytes(self) -> int:
        """`max_file_mb` in bytes."""
        return int(self.max_file_mb * 1024 * 1024)

    def secret_password(self) -> SecretStr | None:
        """The password from the file, the file it names, or the environment."""
        return _read_secret(self.password, self.password_file)

    def secret_access_token(self) -> SecretStr | None:
        """The access token from the file it names, if any."""
        return _read_secret(None, self.access_token_file)


class AgentSection(_Section):
    """[agent]: the model and where it may work."""

    model: str = Field(DEFAULT_MODEL, description="Claude model id")
    max_tokens: int = Field(8192, ge=256, le=128_000, description="Output cap per model reply")
    workdir: Path = Field(Path("~"), description="Where shell commands start")
    allowed_roots: list[Path] = Field(
        default_factory=lambda: [Path("~")], description="Folders the tools may touch"
    )
    api_key: SecretStr | None = Field(None, description="Anthropic API key (else the env)")
    api_key_file: Path | None = Field(None, description="A file holding the API key")
    base_url: str | None = Field(None, description="Messages API URL (else ANTHROPIC_BASE_URL)")
    system_prompt: str = Field("", description="Extra instructions appended to the system prompt")
    max_task_chars: int = Field(
        200_000, ge=1_000, description="Longest message taken as one task (characters)"
    )
    request_timeout_s: float = Field(600.0, gt=0, description="Timeout of one model request")
    max_retries: int = Field(4, ge=0, le=20, description="SDK retries for 429/5xx/overloaded")
    outage_retry_s: float = Field(
        30.0, gt=0, description="First wait after the API stays away past the SDK's retries"
    )
    max_steps: int = Field(60, ge=1, description="Model calls one task may take")
    max_task_seconds: float = Field(3600.0, gt=0, description="Wall-clock budget of one task")
    bash_timeout_s: float = Field(120.0, gt=0, description="Default timeout of a shell command")
    sandbox: Literal["none", "bubblewrap"] = Field(
        "none",
        description="Run shell commands in a bubblewrap sandbox (refuses to start if absent)",
    )
    env_passthrough: list[str] = Field(
        default_factory=list,
        description="Environment variables shell commands may see besides PATH, HOME, LANG…; "
        "names that look like secrets (*_KEY, *_TOKEN, *_SECRET, *PASSWORD*) are refused here",
    )
    secret_env_passthrough: list[str] = Field(
        default_factory=list,
        description="Secret environment variables shell commands may see (GITHUB_TOKEN for "
        "gh, say); their values are hidden from the room, the logs and the model",
    )
    context_window: int = Field(
        200_000, ge=1_000, description="The model's context window, in tokens"
    )
    compact_at: float = Field(
        0.7,
        gt=0.0,
        lt=1.0,
        description="Share of the context window a request may fill before older turns are "
        "compacted into a summary",
    )
    keep_recent_messages: int = Field(
        12, ge=2, description="Newest messages always sent verbatim, never compacted"
    )
    max_tool_result_chars: int = Field(
        20_000,
        ge=500,
        description="Longer tool results are sent trimmed (head and tail); the store keeps "
        "them whole",
    )
    daily_budget_usd: float = Field(
        0.0,
        ge=0.0,
        description="Pause the queue once today's model cost reaches this (USD; 0 = no limit)",
    )
    thinking_budget: int = Field(
        0,
        ge=0,
        description="Extended thinking tokens per reply (0 = off, else at least 1024); added "
        "to max_tokens",
    )

    @field_validator("env_passthrough")
    @classmethod
    def _no_secret_passthrough(cls, value: list[str]) -> list[str]:
        # A secret passed to commands silently would reach their output, and so the model
        # and the room; naming it in secret_env_passthrough registers it with the redactor.
        secret = [name for name in value if looks_secret(name)]
        if secret:
            raise ValueError(f"{', '.join(secret)} looks like a secret")
        return value

    @field_validator("thinking_budget")
    @classmethod
    def _thinking(cls, value: int) -> int:
        if 0 < value < 1024:
            raise ValueError("must be 0 (off) or at least 1024 tokens")
        return value

    @property
    def compact_above(self) -> int:
        """The request size, in tokens, past which older turns are compacted."""
        return int(self.context_window * self.compact_at)

    def secret_api_key(self) -> SecretStr | None:
        """The API key from the file or the file it names; None means the SDK reads the env."""
        return _read_secret(self.api_key, self.api_key_file)


class PermissionsSection(_Section):
    """[permissions]: Claude Code's rule syntax; deny beats ask beats allow."""

    allow: list[str] = Field(default_factory=list)
    ask: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    approval_timeout_s: float = Field(
        600.0, gt=0, description="How long an approval question waits before it means no"
    )


class StoreSection(_Section):
    """[store]: the state folder (SQLite ledger, crypto store, keys, logs)."""

    path: Path = Field(Path(), description="State folder; relative to the config file")


class LocalHomeserverSection(_Section):
    """[local_homeserver]: a private Synapse that `run` starts and stops with the bot."""

    enabled: bool = False
    folder: Path = Path("homeserver")
    host: str = "127.0.0.1"
    port: int = Field(8008, ge=1, le=65535)
    server_name: str = "localhost"


class LogSection(_Section):
    """[log]: terminal and file logging."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    file: bool = Field(True, description="Write JSON lines to logs/ in the state folder")


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


def _fix_for(key: str, problem: str, known: list[str]) -> str:
    if key in _FIXES:
        return _FIXES[key]
    if problem == "unknown key":
        last = key.rsplit(".", 1)[-1]
        close = difflib.get_close_matches(last, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"{hint}remove it (see the configuration reference in README.md)"
    return "see the configuration reference in README.md"


def _known_keys(section: str) -> list[str]:
    model = Config.model_fields.get(section)
    annotation = model.annotation if model else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return list(Config.model_fields)


def _resolve(path: Path, base: Path) -> Path:
    expanded = path.expanduser()
    return expanded if expanded.is_absolute() else (base / expanded).resolve()


def load_config(path: Path) -> Config:
    """Read, validate and resolve a config file; every problem is one ConfigError."""
    path = path.expanduser()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            str(path), "no such file", "create one with: dispatch-matrix init --config " + str(path)
        ) from None
    except OSError as err:
        raise ConfigError(
            str(path), f"cannot read: {err.strerror}", "check its permissions"
        ) from err
    try:
        data: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(str(path), f"not valid TOML ({err})", "fix the syntax there") from err
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
            "source": path.resolve(),
        }
    )
    _check_secrets(resolved)
    return resolved


def _validate(data: dict[str, Any]) -> Config:
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
        section = str(first["loc"][0]) if first["loc"] else ""
        raise ConfigError(key, problem, _fix_for(key, problem, _known_keys(section))) from None


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
