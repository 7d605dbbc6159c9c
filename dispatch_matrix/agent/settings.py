"""[agent]: the model, its limits and its workdir, the API key. Kept beside the agent, which
receives this section, typed; `app/config.py` only names it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from dispatch_matrix.core.redaction import looks_secret
from dispatch_matrix.core.settings import SECRET_FILE, Section, read_secret

DEFAULT_MODEL = "claude-sonnet-5-5"


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
