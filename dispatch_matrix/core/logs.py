"""Structured logging: readable on a terminal, JSON lines in the state folder, no secrets.

Every record passes the redactor (`REDACTOR`) before it is rendered, so an access token,
password or API key never reaches a terminal or a file, whatever a caller put in the event.
Then, on the console and in the file alike, what a terminal would obey rather than show
(text from an owner, a homeserver, a library) is written as an escape.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import re
import sys
from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import Any

import structlog

from dispatch_matrix.core.faults import is_disk_full
from dispatch_matrix.core.redaction import REDACTED, KnownSecrets, find_secrets, hide
from dispatch_matrix.core.terminal import OBEYED, safe

__all__ = ["REDACTED", "REDACTOR", "Redactor", "get", "setup"]

# Key names whose values are secret whatever they hold.
_SECRET_KEYS = re.compile(
    r"(pass(word)?|secret|token|api[_-]?key|authorization|private|pickle|seed)", re.I
)
# Shorter values would hide ordinary words wherever they occur.
_MIN_VALUE = 6
# Log field values up to this long are scrubbed once and remembered, this many of them.
_FIELD_CACHED_CHARS = 200
_FIELDS_KEPT = 2000
# Libraries whose records our own events already tell (the SDK's HTTP stack is httpx2 /
# httpcore2: a line per request to the API, each one rendered twice).
_NOISY = (
    "nio",
    "peewee",
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
    "aiohttp.access",
    "anthropic",
    # The Markdown renderer logs each rule it enters at debug: thousands per answer.
    "markdown_it",
)
# What a terminal would obey in a log line (JSON escapes the tab and line feed itself).
_OBEYED_IN_LINE = re.compile(f"[{OBEYED}]")


class Redactor:
    """Replaces known secret values and secret-shaped strings with a marker."""

    def __init__(self) -> None:
        self._known = KnownSecrets()
        # Short log fields already scrubbed (room, event and task ids recur in every line).
        self._fields: dict[str, str] = {}

    def add(self, *values: str | None) -> None:
        """Remember secret values (ours: password, token, API key; the environment's) to
        scrub verbatim wherever they appear."""
        for value in values:
            if value and len(value) >= _MIN_VALUE:
                self._known.add(value)
        self._fields.clear()

    def field(self, text: str) -> str:
        """`text` for a log field: the same result, remembered for short values."""
        if len(text) > _FIELD_CACHED_CHARS:
            return self.text(text)
        done = self._fields.get(text)
        if done is None:
            if len(self._fields) >= _FIELDS_KEPT:
                self._fields.clear()
            done = self._fields[text] = self.text(text)
        return done

    def text(self, text: str) -> str:
        """The text with every known secret and every secret-shaped string replaced."""
        if not text:
            return text
        return hide(text, self._known.spans(text) + find_secrets(text))

    def shapes(self, text: str) -> str:
        """The text with only the secret-shaped strings replaced (tokens, keys, `password=…`)."""
        if not text:
            return text
        return hide(text, find_secrets(text))

    def known(self, text: str) -> str:
        """The text with only the known secret values replaced: for what the model reads,
        where a secret-shaped string of the owner's own may be what the task is about."""
        if not text or not self._known:
            return text
        return hide(text, self._known.spans(text))

    def known_spans(self, text: str) -> list[tuple[int, int]]:
        """Where the known secret values occur in `text`: for a tool that must decide
        around them (a search or an edit that may not tell the model what they hold)."""
        if not text or not self._known:
            return []
        return self._known.spans(text)

    def value(self, key: str, value: Any) -> Any:
        """A log field's value, scrubbed by its key's name and its content."""
        if isinstance(value, str):
            return REDACTED if _SECRET_KEYS.search(key) and value else self.field(value)
        if isinstance(value, dict):
            return {self.field(str(k)): self.value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(key, v) for v in value]
        if isinstance(value, BaseException):
            return self.text(f"{type(value).__name__}: {value}")
        if value is None or isinstance(value, bool | int | float):
            return value
        if _SECRET_KEYS.search(key):
            return REDACTED
        # Anything else (a Path, bytes, a model, any object) is rendered by its repr, which
        # went out unscrubbed: `path=Path(…/sk-ant-…)`. Scrubbed as that text; kept as it is
        # when clean, so renderers show it as before.
        shown = repr(value)
        scrubbed = self.field(shown)
        return value if scrubbed == shown else scrubbed

    def __call__(
        self, _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            if key == "event":
                event_dict[key] = self.field(str(event_dict[key]))
                continue
            event_dict[key] = self.value(key, event_dict[key])
            # A field's name is printed too (`**{name: …}` lets a caller put anything there).
            named = self.field(key) if isinstance(key, str) else key
            if named != key:
                event_dict[named] = event_dict.pop(key)
        return event_dict


REDACTOR = Redactor()


def _redact_rendered(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> Any:
    # Tracebacks are rendered text; scrub them after rendering too.
    if "exception" in event_dict and isinstance(event_dict["exception"], str):
        event_dict["exception"] = REDACTOR.text(event_dict["exception"])
    return event_dict


def _shown_on_terminal(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> Any:
    # The console renderer writes a field's value as its repr, but the event (a library's
    # message, text from outside) and a traceback as they are: escape there what a terminal
    # would obey. After redaction, which must see the text as it came. Looked for here
    # first: a record with nothing to escape (nearly all) runs no code of terminal.py.
    event = event_dict.get("event")
    if isinstance(event, str) and ("\n" in event or _OBEYED_IN_LINE.search(event)):
        event_dict["event"] = safe(event)
    shown = event_dict.get("exception")
    if isinstance(shown, str) and _OBEYED_IN_LINE.search(shown):
        event_dict["exception"] = safe(shown, lines=True)
    return event_dict


def in_json(serialized: str) -> str:
    """A JSON text as `json.dumps(..., ensure_ascii=False)` wrote it, with every character
    a terminal would obey written as a JSON `\\uXXXX` escape: the same value when read, safe
    to `cat` or `tail`. JSON escapes the C0 controls itself; this adds DEL, the C1 controls,
    the bidi marks, embeddings, overrides and isolates, the line separators and lone
    surrogates (which a UTF-8 file could not even hold)."""
    return _OBEYED_IN_LINE.sub(lambda match: f"\\u{ord(match.group()):04x}", serialized)


def _json_line(value: Any, **options: Any) -> str:
    """One record of the log file: UTF-8 JSON (names and emoji as they are), with nothing
    in it a terminal would obey when an operator runs `tail` on the file."""
    return in_json(json.dumps(value, ensure_ascii=False, **options))


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
    console.setFormatter(
        _formatter(shared, structlog.dev.ConsoleRenderer(colors=False), _shown_on_terminal)
    )
    root = logging.getLogger()
    root.handlers.clear()
    root.addHandler(console)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        handler = _RotatingFile(
            log_dir / "dispatch.jsonl", maxBytes=20_000_000, backupCount=3, encoding="utf-8"
        )
        handler.setFormatter(
            _formatter(shared, structlog.processors.JSONRenderer(serializer=_json_line))
        )
        root.addHandler(handler)
        (log_dir / "dispatch.jsonl").chmod(0o600)
    root.setLevel(level.upper())
    # nio logs whole HTTP bodies at debug and retries as warnings; our own events say what
    # happened, so only its errors pass.
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(max(logging.ERROR, root.level))


class _RotatingFile(logging.handlers.RotatingFileHandler):
    """A rotating file that renders each record once and knows its size from what it
    wrote: the stdlib's renders every record twice (once only to measure it) and seeks to
    the end and stats the path for each, half of what a log line cost."""

    def __init__(self, path: Path, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self._size = path.stat().st_size if path.exists() else 0
        # Whether the console was told that the disk is full (once per spell).
        self._full_told = False

    def doRollover(self) -> None:  # noqa: N802 - the stdlib's name
        super().doRollover()
        self._size = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
            size = len(line.encode("utf-8"))
            if self.maxBytes > 0 and self._size and self._size + size > self.maxBytes:
                self.doRollover()
            if self.stream is None:
                self.stream = self._open()
            self.stream.write(line)
            self.stream.flush()
            self._size += size
            self._full_told = False
        except RecursionError:
            raise
        except OSError as err:
            if not is_disk_full(err):
                self.handleError(record)
                return
            self._disk_full()
        except Exception:
            self.handleError(record)

    def _disk_full(self) -> None:
        """A full disk is the machine's fault, not a logging bug: one line on the console
        (the record itself still reaches it), not a traceback per record; the next record
        reopens the file, so writing resumes once there is room."""
        if self.stream is not None:
            # Closing flushes what the failed write left buffered, which fails again.
            with contextlib.suppress(OSError):
                self.stream.close()
            self.stream = None
        if not self._full_told:
            self._full_told = True
            sys.stderr.write(
                f"dispatch-matrix: the disk is full: {self.baseFilename} is not written until "
                "there is room (the console still shows every line)\n"
            )


def get_root() -> logging.Logger:
    """The root logger, where handlers that watch every record attach."""
    return logging.getLogger()


def get(name: str) -> Any:
    """A structlog logger for a module."""
    return structlog.get_logger(name)


def _formatter(shared: Iterable[Any], renderer: Any, *before: Any) -> logging.Formatter:
    """Records from structlog and from other libraries alike: redacted, then passed through
    `before` (the console's escapes), then rendered."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=list(shared),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact_rendered,
            *before,
            renderer,
        ],
    )
