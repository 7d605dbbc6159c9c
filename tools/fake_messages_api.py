"""A fake Anthropic Messages API on loopback, for tests and for trying the bot without a key.

It speaks enough of the real API (``POST /v1/messages`` with and without ``"stream": true``,
``POST /v1/messages/count_tokens``, ``GET /v1/models``) that the official ``anthropic`` SDK
works against it unmodified: point ``base_url`` (or ``ANTHROPIC_BASE_URL``) at it.

Answers come from a FIFO queue of scripted *turns*; when the queue is empty a default
responder answers ``echo: <text of the last user message>``.  Every request is recorded
(body, interesting headers, size, time, status and the simulated ``usage``), and prompt
caching is simulated (see ``fake_messages_cache.py``) so tests can measure cache reuse.

In tests::

    with FakeMessagesAPI() as fake:
        fake.reply("Hello!")
        fake.reply(tools=[("read_file", {"path": "a.txt"})])
        fake.fail(529, times=2)
        client = anthropic.AsyncAnthropic(base_url=fake.url, api_key="fake")
        ...
        fake.wait_for_requests(3)            # or: await fake.await_requests(3)
        fake.requests[0].body["messages"]

From a shell (``Ctrl-C`` stops it)::

    python tools/fake_messages_api.py --port 8099 [--script turns.json]
    curl -X POST localhost:8099/_fake/script -d '[{"text": "scripted answer"}]'
    curl localhost:8099/_fake/requests
    curl -X POST localhost:8099/_fake/reset

Turn formats (dicts; JSON-compatible except ``gate``)::

    {"type": "reply",                    # the default when "type" and "status" are absent
     "content": [{"type": "text", "text": "Hi"},
                 {"type": "tool_use", "name": "ls", "input": {"dir": "."}},   # id: toolu_...
                 {"type": "thinking", "thinking": "hmm"}],                    # signature added
     # or "text": "Hi" instead of "content"
     "stop_reason": "end_turn",          # default: "tool_use" if any tool_use, else "end_turn"
     "stop_sequence": None, "model": None, "usage": {...overrides...},
     "delay": 0.0,                       # seconds before answering
     "chunk_delay": 0.0,                 # seconds between streamed deltas
     "gate": threading.Event()}          # (Python only) answer once the event is set
    {"type": "error", "status": 529,     # "type" may be omitted when "status" is present
     "error_type": "overloaded_error",   # default derived from the status
     "message": "Overloaded", "retry_after": 2, "should_retry": None,  # x-should-retry header
     "headers": {}, "delay": 0.0}
    {"type": "stream_failure", "text": "partial", "after_events": 3,
     "mode": "error",                    # "error": SSE error event; "disconnect": drop the socket
     "error_type": "overloaded_error", "message": "Overloaded"}

A streaming request given a ``stream_failure`` turn sends the first ``after_events`` SSE
events of the reply, then fails.  A non-streaming one gets the error as an HTTP status (or a
dropped connection, recorded with status 0).  A turn may also be a callable taking the
request body (a dict) and returning a turn dict, or None for the default responder.

Requests are validated roughly as the real API does (required fields, ``tool_use`` /
``tool_result`` pairing, at most 4 ``cache_control`` blocks); invalid ones get a 400
``invalid_request_error`` without consuming a turn.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import secrets
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

from aiohttp import web

if __package__:
    from .fake_messages_cache import (
        MAX_BREAKPOINTS,
        CacheOutcome,
        PromptCache,
        canonical_json,
        count_breakpoints,
        estimate_tokens,
    )
else:
    from fake_messages_cache import (
        MAX_BREAKPOINTS,
        CacheOutcome,
        PromptCache,
        canonical_json,
        count_breakpoints,
        estimate_tokens,
    )

__all__ = ["MODELS", "FakeMessagesAPI", "RecordedRequest", "Turn", "main", "normalize_turn"]

TurnDict: TypeAlias = dict[str, Any]
Turn: TypeAlias = Mapping[str, Any] | Callable[[dict[str, Any]], Mapping[str, Any] | None]

MODELS: tuple[dict[str, Any], ...] = tuple(
    {
        "type": "model",
        "id": model_id,
        "display_name": name,
        "created_at": created,
        "lifecycle": "active",
        "max_input_tokens": 200_000,
        "max_tokens": 64_000,
    }
    for model_id, name, created in (
        ("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-17T00:00:00Z"),
        ("claude-opus-4-6", "Claude Opus 4.6", "2026-02-05T00:00:00Z"),
        ("claude-sonnet-4-5", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
        ("claude-opus-4-1", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
        ("claude-haiku-4-5", "Claude Haiku 4.5", "2025-10-15T00:00:00Z"),
    )
)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_STATUS_OF_TYPE = {v: k for k, v in ERROR_TYPES.items()}
_DEFAULT_MESSAGES = {
    "invalid_request_error": "Invalid request",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low to access the Anthropic API.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of requests has exceeded your rate limit (fake).",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out",
    "overloaded_error": "Overloaded",
}
_HEADERS_OF_INTEREST = (
    "x-api-key",
    "authorization",
    "anthropic-version",
    "anthropic-beta",
    "content-type",
    "x-stainless-retry-count",
)
_COMMON_KEYS = {"type", "delay", "gate"}
_REPLY_KEYS = _COMMON_KEYS | {
    "content",
    "text",
    "stop_reason",
    "stop_sequence",
    "chunk_delay",
    "model",
    "usage",
}
_TURN_KEYS = {
    "reply": _REPLY_KEYS,
    "error": _COMMON_KEYS
    | {"status", "error_type", "message", "retry_after", "should_retry", "headers"},
    "stream_failure": _REPLY_KEYS | {"after_events", "mode", "error_type", "message"},
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received, in arrival order."""

    path: str
    body: dict[str, Any]
    """Parsed JSON body ({} when there was none or it was not valid JSON)."""
    headers: dict[str, str]
    """x-api-key, authorization, anthropic-version, anthropic-beta, content-type and
    x-stainless-retry-count, when sent."""
    size_bytes: int
    at: float
    """``time.monotonic()`` on arrival."""
    usage: dict[str, Any]
    """The ``usage`` reported (or, for count_tokens, ``{"input_tokens": n}``); {} on errors."""
    status: int
    """HTTP status sent; 0 when the connection was dropped instead."""
    method: str = "POST"
    cache: dict[str, Any] = field(default_factory=dict)
    """Prompt analysis: prompt_bytes, reused_prefix_bytes, reused_share, breakpoints, parts."""


class _ApiError(Exception):
    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


def _invalid(message: str) -> _ApiError:
    return _ApiError(400, "invalid_request_error", message)


def _new_id(prefix: str) -> str:
    return f"{prefix}_fake{secrets.token_hex(10)}"


def _error_response(
    status: int, error_type: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    request_id = _new_id("req")
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    body["request_id"] = request_id
    return web.json_response(
        body, status=status, headers={"request-id": request_id, **(headers or {})}
    )


def _normalize_block(block: Any) -> dict[str, Any]:
    if isinstance(block, str):
        return {"type": "text", "text": block}
    if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
        raise ValueError(f"a content block must be a dict with a 'type': {block!r}")
    out = dict(block)
    kind = out["type"]
    if kind == "text" and not isinstance(out.get("text"), str):
        raise ValueError(f"a text block needs 'text': {block!r}")
    if kind in ("tool_use", "server_tool_use"):
        if not isinstance(out.get("name"), str):
            raise ValueError(f"a {kind} block needs 'name': {block!r}")
        out["input"] = dict(out.get("input") or {})
        out.setdefault("id", _new_id("toolu" if kind == "tool_use" else "srvtoolu"))
    if kind == "thinking":
        if not isinstance(out.get("thinking"), str):
            raise ValueError(f"a thinking block needs 'thinking': {block!r}")
        out.setdefault("signature", "fakesig" + secrets.token_urlsafe(24))
    return out


def normalize_turn(turn: Mapping[str, Any]) -> TurnDict:
    """Check a turn dict and fill in its defaults; raises ValueError/TypeError if malformed."""
    if not isinstance(turn, Mapping):
        raise TypeError(f"a turn must be a dict or a callable, not {type(turn).__name__}")
    kind = turn.get("type") or ("error" if "status" in turn else "reply")
    if kind not in _TURN_KEYS:
        raise ValueError(f"unknown turn type {kind!r}")
    unknown = set(turn) - _TURN_KEYS[kind]
    if unknown:
        raise ValueError(f"unknown keys for a {kind} turn: {sorted(unknown)}")
    gate = turn.get("gate")
    if gate is not None and not callable(getattr(gate, "is_set", None)):
        raise TypeError("'gate' must have an is_set() method (e.g. threading.Event)")
    out: TurnDict = {"type": kind, "delay": float(turn.get("delay") or 0), "gate": gate}
    if kind == "error":
        if "status" not in turn:
            raise ValueError("an error turn needs a 'status'")
        status = int(turn["status"])
        default_type = "api_error" if status >= 500 else "invalid_request_error"
        error_type = turn.get("error_type") or ERROR_TYPES.get(status, default_type)
        retry_after = turn.get("retry_after")
        out.update(
            status=status,
            error_type=error_type,
            message=turn.get("message") or _DEFAULT_MESSAGES.get(error_type, error_type),
            retry_after=None if retry_after is None else float(retry_after),
            should_retry=turn.get("should_retry"),
            headers=dict(turn.get("headers") or {}),
        )
        return out
    if "text" in turn and "content" in turn:
        raise ValueError("give either 'text' or 'content', not both")
    blocks = [turn["text"]] if "text" in turn else list(turn.get("content") or [])
    content = [_normalize_block(b) for b in blocks]
    has_tool = any(b["type"] == "tool_use" for b in content)
    out.update(
        content=content,
        stop_reason=turn.get("stop_reason") or ("tool_use" if has_tool else "end_turn"),
        stop_sequence=turn.get("stop_sequence"),
        chunk_delay=float(turn.get("chunk_delay") or 0),
        model=turn.get("model"),
        usage=dict(turn.get("usage") or {}),
    )
    if kind == "stream_failure":
        mode = turn.get("mode", "error")
        if mode not in ("error", "disconnect"):
            raise ValueError(f"stream_failure mode must be 'error' or 'disconnect', not {mode!r}")
        error_type = turn.get("error_type") or "overloaded_error"
        out.update(
            after_events=int(turn.get("after_events", 3)),
            mode=mode,
            error_type=error_type,
            message=turn.get("message") or _DEFAULT_MESSAGES.get(error_type, error_type),
        )
    return out


def _echo_turn(body: Mapping[str, Any]) -> TurnDict:
    """The default responder: ``echo: <text of the last user message>``."""
    said = "(no user message)"
    for message in reversed(body.get("messages") or []):
        if not isinstance(message, Mapping) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            said = content
            break
        blocks = [b for b in content or [] if isinstance(b, Mapping)]
        texts = [b.get("text", "") for b in blocks if b.get("type") == "text"]
        results = [str(b.get("tool_use_id")) for b in blocks if b.get("type") == "tool_result"]
        if texts:
            said = texts[-1]
        elif results:
            said = "(only tool results, for " + ", ".join(results) + ")"
        else:
            said = "(no text)"
        break
    return normalize_turn({"text": f"echo: {said}"})


def _validate(body: Mapping[str, Any], *, count_only: bool = False) -> None:
    """Reject what the real API would reject (a useful subset); raises _ApiError."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _invalid("model: Field required")
    if not count_only:
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise _invalid("max_tokens: Field required")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise _invalid("max_tokens: Input should be greater than or equal to 1")
        if not isinstance(body.get("stream", False), bool):
            raise _invalid("stream: Input should be a valid boolean")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise _invalid("system: Input should be a valid string or list")
    names = [t.get("name") for t in body.get("tools") or [] if isinstance(t, Mapping)]
    if len(names) != len(set(names)):
        raise _invalid("tools: Tool names must be unique.")
    messages = body.get("messages")
    if messages is None:
        raise _invalid("messages: Field required")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages: List should have at least 1 item after validation, not 0")
    expected: list[str] = []  # tool_use ids of the previous message
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, Mapping) else None
        if role not in ("user", "assistant"):
            raise _invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}] if content else []
        if not isinstance(content, list):
            raise _invalid(f"messages.{i}.content: Input should be a valid list")
        if not content and not (role == "assistant" and i == len(messages) - 1):
            raise _invalid(
                f"messages.{i}: all messages must have non-empty content except for the "
                "optional final assistant message"
            )
        for j, block in enumerate(content):
            if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
                raise _invalid(f"messages.{i}.content.{j}: Input should be a valid dictionary")
            if block["type"] == "text" and not block.get("text"):
                raise _invalid("messages: text content blocks must be non-empty")
        results = [b.get("tool_use_id") for b in content if b["type"] == "tool_result"]
        leading = [b.get("tool_use_id") for b in content[: len(results)]]
        missing = [x for x in expected if role != "user" or x not in leading]
        if missing:
            raise _invalid(
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
        for j, block in enumerate(content):
            if block["type"] == "tool_result" and block.get("tool_use_id") not in expected:
                raise _invalid(
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                    f"`tool_result` blocks: {block.get('tool_use_id')}. Each `tool_result` "
                    "block must have a corresponding `tool_use` block in the previous message."
                )
        expected = [
            str(b.get("id")) for b in content if role == "assistant" and b["type"] == "tool_use"
        ]
    breakpoints = count_breakpoints(dict(body))
    if breakpoints > MAX_BREAKPOINTS:
        raise _invalid(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {breakpoints}."
        )


def _pieces(text: str, parts: int = 3, longest: int = 32) -> list[str]:
    """Split ``text`` into at least ``parts`` pieces (when long enough) of <= ``longest``."""
    if not text:
        return []
    size = max(1, min(longest, math.ceil(len(text) / parts)))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _stream_events(message: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events (name, data) that stream ``message`` the way the real API does."""
    usage = message["usage"]
    start_usage = {**usage, "output_tokens": min(1, usage["output_tokens"])}
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": {**start, "usage": start_usage}}),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        deltas: list[dict[str, Any]] = []
        if kind == "text":
            first: dict[str, Any] = {"type": "text", "text": ""}
            # Cited text streams its citations as deltas, as the real API does.
            deltas = [
                {"type": "citations_delta", "citation": c} for c in block.get("citations") or []
            ]
            deltas += [{"type": "text_delta", "text": p} for p in _pieces(block["text"])]
        elif kind in ("tool_use", "server_tool_use"):
            first = {**block, "input": {}}
            partial = json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in _pieces(partial)]
        elif kind == "thinking":
            first = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(block["thinking"])]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:
            first = dict(block)
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": first},
            )
        )
        events.extend(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    keys = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    final_usage = {k: usage[k] for k in keys if k in usage}
    final_usage["output_tokens"] = usage["output_tokens"]
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    events.append(
        ("message_delta", {"type": "message_delta", "delta": delta, "usage": final_usage})
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _sse(name: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


async def _hold(turn: Mapping[str, Any]) -> None:
    gate = turn.get("gate")
    while gate is not None and not gate.is_set():
        await asyncio.sleep(0.005)
    if turn["delay"] > 0:
        await asyncio.sleep(turn["delay"])


def _resolve_future(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class FakeMessagesAPI:
    """The fake server.  Runs in a background thread (``start``) or in the foreground (CLI)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        require_key: str | None = None,
        *,
        validate: bool = True,
        cache_lookback: int | None = None,
        cache_min_tokens: int = 0,
        log_to_stderr: bool = False,
    ) -> None:
        """Configure (does not bind; see :meth:`start`).

        ``require_key``: if set, requests must carry ``x-api-key: <it>`` (or a matching
        ``Authorization: Bearer``) or get a 401.  ``validate``: reject malformed requests like
        the real API.  ``cache_lookback`` / ``cache_min_tokens``: see ``PromptCache``.
        """
        self.host = host
        self.port = port
        self.require_key = require_key
        self.validate = validate
        self.log_to_stderr = log_to_stderr
        self.url = ""
        self._cond = threading.Condition()
        self._turns: deque[Turn] = deque()
        self._log: list[RecordedRequest] = []
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._cache = PromptCache(lookback=cache_lookback, min_tokens=cache_min_tokens)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeMessagesAPI:
        """Bind and serve from a background thread with its own event loop; sets ``url``."""
        if self._thread is not None:
            raise RuntimeError("FakeMessagesAPI is already running")
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                runner = loop.run_until_complete(self._start_runner())
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(runner.cleanup())
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                loop.run_until_complete(asyncio.sleep(0))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=run, name="fake-messages-api", daemon=True)
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._thread, self._loop = thread, loop
        return self

    def stop(self) -> None:
        """Stop serving (in-flight requests get half a second) and join the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        self._thread = self._loop = None

    def __enter__(self) -> FakeMessagesAPI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _start_runner(self) -> web.AppRunner:
        runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        return runner

    async def serve_forever(self) -> None:
        """Serve on the running loop until SIGINT/SIGTERM (used by the CLI)."""
        runner = await self._start_runner()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        print(f"Fake Anthropic Messages API listening on {self.url}  (Ctrl-C to stop)")
        print("Point the SDK (or the bot) at it with:")
        print(f"  ANTHROPIC_BASE_URL={self.url} ANTHROPIC_API_KEY={self.require_key or 'fake'}")
        print("Script it: POST /_fake/script, GET /_fake/requests, POST /_fake/reset", flush=True)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    def make_app(self) -> web.Application:
        """The aiohttp application (to embed in a loop of your own)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._handle_messages)
        app.router.add_post("/v1/messages/count_tokens", self._handle_count_tokens)
        app.router.add_get("/v1/models", self._handle_models)
        app.router.add_get("/v1/models/{model_id}", self._handle_model)
        app.router.add_post("/_fake/script", self._handle_script)
        app.router.add_get("/_fake/requests", self._handle_requests)
        app.router.add_get("/_fake/cache_report", self._handle_cache_report)
        app.router.add_post("/_fake/reset", self._handle_reset)
        app.router.add_route("*", "/{tail:.*}", self._handle_not_found)
        return app

    # ---- scripting -------------------------------------------------------------------------

    def script(self, *turns: Turn | Iterable[Turn]) -> None:
        """Append turns (dicts or callables; lists of them are flattened).  Thread-safe."""
        flat: list[Turn] = []
        for turn in turns:
            if isinstance(turn, list | tuple):
                flat.extend(turn)
            else:
                flat.append(turn)  # type: ignore[arg-type]
        checked = [t if callable(t) else normalize_turn(t) for t in flat]
        with self._cond:
            self._turns.extend(checked)

    def reply(
        self,
        text: str | None = None,
        tools: Iterable[Mapping[str, Any] | tuple[str, Mapping[str, Any]]] = (),
        *,
        thinking: str | None = None,
        **kw: Any,
    ) -> None:
        """Append one reply: optional thinking, then text, then tool calls.

        ``tools`` items are ``(name, input)`` pairs or dicts with ``name``, ``input`` and
        optionally ``id``.  Other keywords are reply-turn keys (``stop_reason``, ``delay``...).
        """
        content: list[dict[str, Any]] = []
        if thinking is not None:
            content.append({"type": "thinking", "thinking": thinking})
        if text is not None:
            content.append({"type": "text", "text": text})
        for tool in tools:
            if isinstance(tool, tuple):
                name, tool_input = tool
                content.append({"type": "tool_use", "name": name, "input": dict(tool_input)})
            else:
                content.append({"type": "tool_use", **tool})
        self.script({"type": "reply", "content": content, **kw})

    def fail(
        self,
        status: int,
        error_type: str | None = None,
        message: str | None = None,
        retry_after: float | None = None,
        times: int = 1,
        **kw: Any,
    ) -> None:
        """Append ``times`` error turns (other keywords: ``should_retry``, ``headers``...)."""
        turn = {"type": "error", "status": status, "error_type": error_type, "message": message}
        self.script(*[{**turn, "retry_after": retry_after, **kw} for _ in range(times)])

    def fail_midstream(
        self, text: str = "partial answer", after_events: int = 4, mode: str = "error", **kw: Any
    ) -> None:
        """Append a stream_failure turn (SSE error event, or a dropped connection)."""
        turn = {"type": "stream_failure", "text": text, "after_events": after_events, "mode": mode}
        self.script({**turn, **kw})

    @property
    def pending_turns(self) -> int:
        """How many scripted turns have not been used yet."""
        with self._cond:
            return len(self._turns)

    def reset(self) -> None:
        """Drop scripted turns, the request log and the cache."""
        with self._cond:
            self._turns.clear()
            self._log.clear()
            self._cache.clear()

    def advance_clock(self, seconds: float) -> None:
        """Age the simulated prompt cache by ``seconds`` (to test TTL expiry without sleeping)."""
        with self._cond:
            self._cache.advance(seconds)

    # ---- inspection ------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the request log."""
        with self._cond:
            return list(self._log)

    def wait_for_requests(self, n: int, timeout: float = 30.0) -> list[RecordedRequest]:
        """Block until at least ``n`` requests are recorded; returns the log (TimeoutError)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._log) >= n, timeout):
                raise TimeoutError(f"{len(self._log)} requests recorded after {timeout}s, not {n}")
            return list(self._log)

    async def await_requests(self, n: int, timeout: float = 30.0) -> list[RecordedRequest]:
        """Like :meth:`wait_for_requests`, for async callers, without blocking their loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = (n, loop, future)
        with self._cond:
            if len(self._log) >= n:
                return list(self._log)
            self._waiters.append(waiter)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            count = len(self.requests)
            raise TimeoutError(f"{count} requests recorded after {timeout}s, not {n}") from None
        finally:
            with self._cond:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return self.requests

    def cache_report(self) -> list[dict[str, Any]]:
        """Per ``/v1/messages`` request: prompt bytes, bytes in a prefix that ended at a
        breakpoint of an earlier request, their share, and the usage numbers."""
        report = []
        for index, rec in enumerate(self.requests):
            if rec.path != "/v1/messages" or not rec.cache:
                continue
            report.append(
                {
                    "index": index,
                    "status": rec.status,
                    "body_bytes": rec.size_bytes,
                    "input_bytes": rec.cache["prompt_bytes"],
                    "cached_prefix_bytes": rec.cache["reused_prefix_bytes"],
                    "share": rec.cache["reused_share"],
                    "input_tokens": rec.usage.get("input_tokens", 0),
                    "cache_read_input_tokens": rec.usage.get("cache_read_input_tokens", 0),
                    "cache_creation_input_tokens": rec.usage.get("cache_creation_input_tokens", 0),
                    "output_tokens": rec.usage.get("output_tokens", 0),
                }
            )
        return report

    # ---- request handling ------------------------------------------------------------------

    def _record(
        self,
        request: web.Request,
        raw: bytes,
        body: dict[str, Any],
        status: int,
        usage: dict[str, Any] | None = None,
        outcome: CacheOutcome | None = None,
    ) -> None:
        cache: dict[str, Any] = {}
        if outcome is not None:
            cache = {
                "prompt_bytes": outcome.prompt_bytes,
                "prompt_tokens": outcome.total_input_tokens,
                "reused_prefix_bytes": outcome.reused_prefix_bytes,
                "reused_share": outcome.reused_share,
                "breakpoints": outcome.breakpoints,
                "parts": outcome.parts,
            }
        headers = {h: request.headers[h] for h in _HEADERS_OF_INTEREST if h in request.headers}
        record = RecordedRequest(
            path=request.path,
            body=body,
            headers=headers,
            size_bytes=len(raw),
            at=time.monotonic(),
            usage=dict(usage or {}),
            status=status,
            method=request.method,
            cache=cache,
        )
        with self._cond:
            self._log.append(record)
            self._cond.notify_all()
            for waiter in list(self._waiters):
                if len(self._log) >= waiter[0]:
                    self._waiters.remove(waiter)
                    with contextlib.suppress(RuntimeError):  # the waiter's loop is closed
                        waiter[1].call_soon_threadsafe(_resolve_future, waiter[2])
        if self.log_to_stderr:
            print(f"{request.method} {request.path} -> {status} {usage or ''}", file=sys.stderr)

    def _check_key(self, request: web.Request) -> None:
        if self.require_key is None:
            return
        key = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if key is None and auth.lower().startswith("bearer "):
            key = auth[7:]
        if key is None:
            raise _ApiError(401, "authentication_error", "x-api-key header is required")
        if key != self.require_key:
            raise _ApiError(401, "authentication_error", "invalid x-api-key")

    @staticmethod
    def _parse(raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _invalid(f"The request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _invalid("The request body must be a JSON object")
        return body

    def _next_turn(self, body: dict[str, Any]) -> TurnDict:
        with self._cond:
            queued = self._turns.popleft() if self._turns else None
        if queued is None:
            return _echo_turn(body)
        if callable(queued):
            answer = queued(body)
            return _echo_turn(body) if answer is None else normalize_turn(answer)
        return dict(queued)

    async def _handle_messages(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body: dict[str, Any] = {}
        try:
            self._check_key(request)
            body = self._parse(raw)
            if self.validate:
                _validate(body)
        except _ApiError as err:
            self._record(request, raw, body, err.status)
            return _error_response(err.status, err.error_type, err.message)
        try:
            turn = self._next_turn(body)
        except Exception as exc:  # a scripted callable failed or returned nonsense
            self._record(request, raw, body, 500)
            return _error_response(500, "api_error", f"fake: scripted turn failed: {exc!r}")
        stream = body.get("stream") is True
        failing = turn["type"] == "error" or (turn["type"] == "stream_failure" and not stream)
        with self._cond:
            outcome = self._cache.process(body, commit=not failing)
        usage: dict[str, Any] = {}
        if turn["type"] == "error":
            status = turn["status"]
        elif failing:
            status = (
                0 if turn["mode"] == "disconnect" else _STATUS_OF_TYPE.get(turn["error_type"], 500)
            )
        else:
            status = 200
            output_tokens = max(1, estimate_tokens(canonical_json(turn["content"])))
            usage = {**outcome.usage(), "output_tokens": output_tokens, "service_tier": "standard"}
            usage.update(turn["usage"])
        self._record(request, raw, body, status, usage, outcome)
        await _hold(turn)

        if turn["type"] == "error":
            headers = dict(turn["headers"])
            if turn["retry_after"] is not None:
                headers["retry-after"] = _seconds(turn["retry_after"])
            if turn["should_retry"] is not None:
                headers["x-should-retry"] = "true" if turn["should_retry"] else "false"
            return _error_response(status, turn["error_type"], turn["message"], headers)
        if failing:
            if status == 0:
                _abort(request)
                return web.Response()
            return _error_response(status, turn["error_type"], turn["message"])
        message = {
            "id": _new_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": turn["model"] or body["model"],
            "content": turn["content"],
            "stop_reason": turn["stop_reason"],
            "stop_sequence": turn["stop_sequence"],
            "usage": usage,
        }
        if not stream:
            return web.json_response(message, headers={"request-id": _new_id("req")})
        return await self._write_stream(request, turn, _stream_events(message))

    async def _write_stream(
        self, request: web.Request, turn: TurnDict, events: list[tuple[str, dict[str, Any]]]
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "request-id": _new_id("req"),
            }
        )
        await response.prepare(request)
        failure = turn["type"] == "stream_failure"
        cut = turn["after_events"] if failure else len(events)
        try:
            for index, (name, data) in enumerate(events[:cut]):
                if index and turn["chunk_delay"] > 0 and name == "content_block_delta":
                    await asyncio.sleep(turn["chunk_delay"])
                await response.write(_sse(name, data))
            if failure and turn["mode"] == "disconnect":
                _abort(request)
                return response
            if failure:
                error = {"type": turn["error_type"], "message": turn["message"]}
                await response.write(_sse("error", {"type": "error", "error": error}))
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        return response

    async def _handle_count_tokens(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body: dict[str, Any] = {}
        try:
            self._check_key(request)
            body = self._parse(raw)
            if self.validate:
                _validate(body, count_only=True)
        except _ApiError as err:
            self._record(request, raw, body, err.status)
            return _error_response(err.status, err.error_type, err.message)
        with self._cond:
            outcome = self._cache.process(body, commit=False)
        usage = {"input_tokens": outcome.total_input_tokens}
        self._record(request, raw, body, 200, usage, outcome)
        return web.json_response(usage)

    async def _handle_models(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            self._check_key(request)
        except _ApiError as err:
            self._record(request, raw, {}, err.status)
            return _error_response(err.status, err.error_type, err.message)
        self._record(request, raw, {}, 200)
        page = {
            "data": list(MODELS),
            "has_more": False,
            "first_id": MODELS[0]["id"],
            "last_id": MODELS[-1]["id"],
        }
        return web.json_response(page)

    async def _handle_model(self, request: web.Request) -> web.Response:
        raw = await request.read()
        model_id = request.match_info["model_id"]
        try:
            self._check_key(request)
            model = next((m for m in MODELS if m["id"] == model_id), None)
            if model is None:
                raise _ApiError(404, "not_found_error", f"model: {model_id}")
        except _ApiError as err:
            self._record(request, raw, {}, err.status)
            return _error_response(err.status, err.error_type, err.message)
        self._record(request, raw, {}, 200)
        return web.json_response(model)

    async def _handle_not_found(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self._record(request, raw, {}, 404)
        return _error_response(404, "not_found_error", "Not found")

    async def _handle_script(self, request: web.Request) -> web.Response:
        try:
            turns = self._parse_control(await request.read())
            self.script(*(turns if isinstance(turns, list) else [turns]))
        except (ValueError, TypeError, KeyError, _ApiError) as exc:
            return _error_response(400, "invalid_request_error", str(exc))
        return web.json_response({"pending": self.pending_turns})

    @staticmethod
    def _parse_control(raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _invalid(f"The request body is not valid JSON: {exc}") from None

    async def _handle_requests(self, request: web.Request) -> web.Response:
        return web.json_response([dataclasses.asdict(r) for r in self.requests])

    async def _handle_cache_report(self, request: web.Request) -> web.Response:
        return web.json_response(self.cache_report())

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})


def main(argv: list[str] | None = None) -> int:
    """Run the fake in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(description="Fake Anthropic Messages API (loopback).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099, help="0 picks a free port")
    parser.add_argument("--script", type=Path, help="JSON file: a list of turns to queue")
    parser.add_argument("--require-key", help="reject requests without this x-api-key")
    parser.add_argument("--quiet", action="store_true", help="do not log requests to stderr")
    args = parser.parse_args(argv)
    api = FakeMessagesAPI(
        args.host, args.port, require_key=args.require_key, log_to_stderr=not args.quiet
    )
    if args.script:
        turns = json.loads(args.script.read_text())
        api.script(*(turns if isinstance(turns, list) else [turns]))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(api.serve_forever())
    return 0


if __name__ == "__main__":
    sys.exit(main())
