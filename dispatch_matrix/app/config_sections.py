"""The config sections besides [matrix]: the agent, permissions, the state folder, the local
homeserver, logging and schedules. Part of the config model (`config.py` assembles them and
loads the file); each field's default and check live here and nowhere else."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from dispatch_matrix.core.redaction import looks_secret

DEFAULT_MODEL = "claude-sonnet-5-5"


class Section(BaseModel):
    """A config table: unknown keys are errors, values never change after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# The mark a config field carries when the file(s) it names hold a secret: every path under a
# marked field is hidden from shell commands and refused to the file tools (`secret_files`).
# A unit test fails when a field that names a file is neither marked nor listed as harmless.
SECRET_FILE: dict[str, Any] = {"secret_file": True}


def is_secret_file_field(extra: object) -> bool:
    """Whether a field's `json_schema_extra` carries the secret-file mark."""
    return isinstance(extra, dict) and extra.get("secret_file") is True


def _paths_in(value: object) -> Iterator[Path]:
    if isinstance(value, Path):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _paths_in(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _paths_in(item)


def secret_files(model: object) -> list[Path]:
    """Every path named by a field marked `SECRET_FILE`, anywhere in `model` (sections,
    dicts and lists of sections included), in field order. Generic: a new marked field is
    found without changing this function."""
    found: list[Path] = []
    if isinstance(model, BaseModel):
        for name, info in type(model).model_fields.items():
            value = getattr(model, name)
            if is_secret_file_field(info.json_schema_extra):
                found += _paths_in(value)
            else:
                found += secret_files(value)
    elif isinstance(model, dict):
        for item in model.values():
            found += secret_files(item)
    elif isinstance(model, list | tuple):
        for item in model:
            found += secret_files(item)
    return found


def read_secret(inline: SecretStr | None, file: Path | None) -> SecretStr | None:
    """A secret given inline, or read from the file named."""
    if inline is not None:
        return inline
    if file is None:
        return None
    try:
        return SecretStr(file.expanduser().read_text().strip())
    except OSError as err:
        raise ValueError(f"cannot read {file}: {err.strerror}") from err


class AgentSection(Section):
    """[agent]: the model and where it may work."""

    engine: Literal["api", "claude-code"] = Field(
        "api",
        description='Who runs the conversation: "api" (our loop on the Messages API, an API '
        'key) or "claude-code" (Claude Code through its Agent SDK, the owner\'s own Claude Code '
        "login or API key; the claude-code extra)",
    )
    model: str = Field(DEFAULT_MODEL, description="Claude model id")
    max_tokens: int = Field(8192, ge=256, le=128_000, description="Output cap per model reply")
    workdir: Path = Field(Path("~"), description="Where shell commands start")
    allowed_roots: list[Path] = Field(
        default_factory=lambda: [Path("~")], description="Folders the tools may touch"
    )
    api_key: SecretStr | None = Field(None, description="Anthropic API key (else the env)")
    api_key_file: Path | None = Field(
        None, description="A file holding the API key", json_schema_extra=SECRET_FILE
    )
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
    outage_probe_s: float = Field(
        5.0,
        gt=0,
        description="While the API cannot be reached at all, how often a wait probes it (a "
        "free read), so a task goes again within this long of its return",
    )
    max_steps: int = Field(60, ge=1, description="Model calls one task may take")
    keep_awake: bool = Field(
        True,
        description="Hold a sleep inhibitor (systemd-inhibit, caffeinate) while tasks run, "
        "released when the queue is empty",
    )
    max_task_seconds: float = Field(3600.0, gt=0, description="Wall-clock budget of one task")
    bash_timeout_s: float = Field(120.0, gt=0, description="Default timeout of a shell command")
    sandbox: Literal["auto", "bubblewrap", "sandbox-exec", "none"] = Field(
        "auto",
        description="The OS sandbox around every shell command: auto (bubblewrap on Linux, "
        "sandbox-exec on macOS), one of those by name, or none. The bot refuses to start "
        'when the sandbox cannot run; only an explicit "none" runs commands unconfined',
    )
    sandbox_network: bool = Field(
        True, description="Whether sandboxed shell commands may use the network"
    )
    sandbox_max_processes: int = Field(
        1024,
        ge=0,
        description="Processes and threads one shell call may have at once (bubblewrap: "
        "counted per call, in its own user namespace; 0 = no limit)",
    )
    sandbox_max_memory_mb: int = Field(
        8192,
        ge=0,
        description="Memory (data segment and heap) each process of a shell call may take, in "
        "MB (0 = no limit)",
    )
    sandbox_max_file_mb: int = Field(
        4096, ge=0, description="Largest file a shell call may write, in MB (0 = no limit)"
    )
    sandbox_max_cpu_s: int = Field(
        3600, ge=0, description="CPU seconds each process of a shell call may use (0 = none)"
    )
    sandbox_max_tmp_mb: int = Field(
        2048,
        ge=0,
        description="Size of a shell call's private /tmp, which lives in memory, in MB (0 = "
        "the kernel's default, half the memory)",
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

    max_continuations: int = Field(
        2,
        ge=0,
        le=10,
        description="Times a reply cut off by the output limit (max_tokens) is continued "
        "before the owner is told the answer was cut",
    )
    cache_ttl: Literal["5m", "1h", "mix"] = Field(
        "1h",
        description="Prompt-cache lifetime: 5m everywhere, 1h everywhere (writes cost 2x "
        "input instead of 1.25x), or mix (1h for tools, system and memory, 5m for the "
        "conversation); see tools/bench/results/day_cost.json",
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
    def prefix_ttl(self) -> str:
        """The lifetime of the stable prefix's cache breakpoints."""
        return "5m" if self.cache_ttl == "5m" else "1h"

    @property
    def tail_ttl(self) -> str:
        """The lifetime of the breakpoint on the conversation's tail."""
        return "1h" if self.cache_ttl == "1h" else "5m"

    @property
    def compact_above(self) -> int:
        """The request size, in tokens, past which older turns are compacted."""
        return int(self.context_window * self.compact_at)

    def secret_api_key(self) -> SecretStr | None:
        """The API key from the file or the file it names; None means the SDK reads the env."""
        return read_secret(self.api_key, self.api_key_file)


class PermissionsSection(Section):
    """[permissions]: Claude Code's rule syntax; deny beats ask beats allow."""

    allow: list[str] = Field(default_factory=list)
    ask: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    approval_timeout_s: float = Field(
        600.0, gt=0, description="How long an approval question waits before it means no"
    )


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


class ScheduleSection(Section):
    """[schedule]: the owner's time zone (reminders, cron, the agent's sense of "Friday")
    and the daily check-in."""

    timezone: str = Field(
        "", description="The owner's IANA time zone, e.g. Europe/Berlin (empty: the machine's)"
    )
    digest_at: str = Field(
        "",
        description="Time of day (HH:MM, in the owner's zone) of the daily check-in digest; "
        "empty: no daily digest (`!digest` still shows it)",
    )
    test_clock: bool = Field(
        False,
        description="For end-to-end tests only: the clock adds the seconds written in "
        "<state>/clock-offset, so a test moves time instead of sleeping",
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if value.strip():
            try:
                ZoneInfo(value.strip())
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"{value!r} is not a time zone name such as Europe/Berlin"
                ) from None
        return value.strip()

    @field_validator("digest_at")
    @classmethod
    def _time_of_day(cls, value: str) -> str:
        if value.strip() and not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", value.strip()):
            raise ValueError("must be a time of day such as 18:30, or empty for none")
        return value.strip()
