"""Structured logging: readable on a terminal, JSON lines in the state folder, no secrets.

Every record passes `redact` before it is rendered, so an access token, password or API
key never reaches a terminal or a file, whatever a caller put in the event.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import Any

import structlog

# Key names whose values are secret whatever they hold.
_SECRET_KEYS = re.compile(
    r"(pass(word)?|secret|token|api[_-]?key|authorization|private|pickle|seed)", re.I
)
# Shapes of secrets wherever they appear in text.
_SECRET_PATTERNS = [
    re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}"),  # Anthropic keys
    re.compile(r"syt_[A-Za-z0-9_]+_[A-Za-z0-9]+_[A-Za-z0-9]+"),  # Synapse access tokens
    re.compile(r"(?i)(access_token=)[^&\s\"']+"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/\-]+=*"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"gh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub tokens
    re.compile(r"AKIA[0-9A-Z]{16}"),  # AWS access key ids
    re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_\-]{32,}"),  # OpenAI-style keys
    re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"),  # Slack tokens
    re.compile(r"\bglpat-[A-Za-z0-9_\-]{20,}"),  # GitLab tokens
    # `password = hunter2`, `API_KEY: abc…` in a config or an environment dump.
    re.compile(
        r"(?i)(\b(?:password|passwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token)"
        r"\b[\"']?\s*[=:]\s*[\"']?)[^\s\"',;]{4,}"
    ),
]
REDACTED = "«redacted»"


class Redactor:
    """Replaces known secret values and secret-shaped strings with a marker."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, *values: str | None) -> None:
        """Remember secret values (ours: password, token, API key) to scrub verbatim."""
        for value in values:
            if value and len(value) >= 6:
                self._values.add(value)

    def text(self, text: str) -> str:
        """The text with every secret replaced."""
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return self.shapes(text)

    def shapes(self, text: str) -> str:
        """The text with secret-shaped strings replaced (tokens, keys, `password=…`)."""
        for pattern in _SECRET_PATTERNS:
            text = pattern.sub(
                lambda m: (m.group(1) if m.groups() and m.group(1) else "") + REDACTED, text
            )
        return text

    def value(self, key: str, value: Any) -> Any:
        """A log field's value, scrubbed by its key's name and its content."""
        if isinstance(value, str):
            return REDACTED if _SECRET_KEYS.search(key) and value else self.text(value)
        if isinstance(value, dict):
            return {k: self.value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(key, v) for v in value]
        if isinstance(value, BaseException):
            return self.text(f"{type(value).__name__}: {value}")
        return value

    def __call__(
        self, _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            if key == "event":
                event_dict[key] = self.text(str(event_dict[key]))
            else:
                event_dict[key] = self.value(key, event_dict[key])
        return event_dict


REDACTOR = Redactor()


def _redact_rendered(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> Any:
    # Tracebacks are rendered text; scrub them after rendering too.
    if "exception" in event_dict and isinstance(event_dict["exception"], str):
        event_dict["exception"] = REDACTOR.text(event_dict["exception"])
    return event_dict


def setup(level: str = "info", log_dir: Path | None = None, stream: Any = None) -> None:
    """Configure structlog and stdlib logging: console to stderr, JSON lines to a file."""
    shared: Iterable[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        REDACTOR,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    console = logging.StreamHandler(stream or sys.stderr)
    console.setFormatter(_formatter(shared, structlog.dev.ConsoleRenderer(colors=False)))
    root = logging.getLogger()
    root.handlers.clear()
    root.addHandler(console)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        handler = logging.handlers.RotatingFileHandler(
            log_dir / "dispatch.jsonl", maxBytes=20_000_000, backupCount=3, encoding="utf-8"
        )
        handler.setFormatter(
            _formatter(shared, structlog.processors.JSONRenderer(ensure_ascii=False))
        )
        root.addHandler(handler)
        (log_dir / "dispatch.jsonl").chmod(0o600)
    root.setLevel(level.upper())
    # nio logs whole HTTP bodies at debug and retries as warnings; our own events say what
    # happened, so only its errors pass.
    for noisy in ("nio", "peewee", "httpx", "httpcore", "aiohttp.access", "anthropic"):
        logging.getLogger(noisy).setLevel(max(logging.ERROR, root.level))


def get_root() -> logging.Logger:
    """The root logger, where handlers that watch every record attach."""
    return logging.getLogger()


def get(name: str) -> Any:
    """A structlog logger for a module."""
    return structlog.get_logger(name)


def _formatter(shared: Iterable[Any], renderer: Any) -> logging.Formatter:
    """Records from structlog and from other libraries alike: redacted, then rendered."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=list(shared),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact_rendered,
            renderer,
        ],
    )
