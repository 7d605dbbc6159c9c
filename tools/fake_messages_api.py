"""A fake Anthropic Messages API on loopback, for tests and for trying the bot without a key.

It speaks enough of the real API (``POST /v1/messages`` with and without ``"stream": true``,
``POST /v1/messages/count_tokens``, ``GET /v1/models``) that the official ``anthropic`` SDK
works against it unmodified: point ``base_url`` (or ``ANTHROPIC_BASE_URL``) at it.

Answers come from a FIFO queue of scripted *turns* (formats in ``fakeapi/turns.py``); when
the queue is empty a default responder answers ``echo: <text of the last user message>``.
Every request is recorded (body, interesting headers, size, time, status and the simulated
``usage``), and prompt caching is simulated (``fakeapi/cache.py``) so tests can measure
cache reuse.

It is as strict as the service by default (``fakeapi/validate.py``): the minimum cacheable
prefix of the model's family and the 20-block lookback; thinking blocks signed, and a 400
when one comes back altered; tool_use / tool_result pairing; image limits; the context
window; a 413 past 32 MB; retired and unknown models. A test loosens one rule at a time::

    FakeMessagesAPI(strict=Strictness(signatures=False))
    FakeMessagesAPI(cache_min_tokens=0, cache_lookback=None)   # the two cache rules
    FakeMessagesAPI(strict=LOOSE)                              # everything off

In tests::

    with FakeMessagesAPI() as fake:
        fake.reply("Hello!")
        fake.reply(tools=[("read_file", {"path": "a.txt"})])
        fake.fail(529, times=2)
        fake.fail_midstream(after_events=5)                  # an SSE error event
        fake.fail_midstream(mode="disconnect")               # the connection cut
        fake.stop_with("max_tokens", "The first half of")
        client = anthropic.AsyncAnthropic(base_url=fake.url, api_key="fake")
        ...
        fake.wait_for_requests(3)            # or: await fake.await_requests(3)
        fake.requests[0].body["messages"]
        fake.advance_clock(3600)             # the cache's clock: an hour later, no waiting

From a shell (``Ctrl-C`` stops it)::

    python tools/fake_messages_api.py --port 8099 [--script turns.json]
    curl -X POST localhost:8099/_fake/script -d '[{"text": "scripted answer"}]'
    curl localhost:8099/_fake/requests
    curl -X POST localhost:8099/_fake/reset

A streaming request given a ``stream_failure`` turn sends the first ``after_events`` SSE
events of the reply, then fails.  A non-streaming one gets the error as an HTTP status (or a
dropped connection, recorded with status 0).  A turn may also be a callable taking the
request body (a dict) and returning a turn dict, or None for the default responder.
Invalid requests are refused without consuming a turn.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from fakeapi.cache import CacheOutcome, PromptCache, canonical_json, estimate_tokens
from fakeapi.models import MODELS, find
from fakeapi.record import HEADERS_OF_INTEREST, RecordedRequest, cache_fields, report_row
from fakeapi.server import BackgroundServer
from fakeapi.signing import Signer
from fakeapi.stream import sse, stream_events
from fakeapi.turns import STATUS_OF_TYPE, Turn, TurnDict, echo_turn, new_id, normalize_turn
from fakeapi.validate import LOOSE, ApiError, Strictness, invalid, validate

__all__ = [
    "LOOSE",
    "MODELS",
    "FakeMessagesAPI",
    "RecordedRequest",
    "Strictness",
    "Turn",
    "main",
    "normalize_turn",
]

_UNSET: Any = object()


def _error_response(
    status: int,
    error_type: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    error_code: str | None = None,
) -> web.Response:
    request_id = new_id("req")
    error: dict[str, Any] = {"type": error_type, "message": message}
    if error_code:
        error["details"] = {"error_code": error_code}
    body = {"type": "error", "error": error, "request_id": request_id}
    return web.json_response(
        body, status=status, headers={"request-id": request_id, **(headers or {})}
    )


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


class FakeMessagesAPI(BackgroundServer):
    """The fake server.  Runs in a background thread (``start``) or in the foreground (CLI)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        require_key: str | None = None,
        *,
        validate: bool = True,
        strict: Strictness | None = None,
        cache_lookback: int | None = _UNSET,
        cache_min_tokens: int | None = _UNSET,
        log_to_stderr: bool = False,
    ) -> None:
        """Configure (does not bind; see :meth:`start`).

        ``require_key``: if set, requests must carry ``x-api-key: <it>`` (or a matching
        ``Authorization: Bearer``) or get a 401.  ``validate``: refuse malformed requests
        like the real API.  ``strict``: which of the service's rules apply (all, by
        default); ``cache_lookback`` / ``cache_min_tokens`` override its two cache rules.
        """
        super().__init__(host, port)
        rules = strict or Strictness()
        if cache_lookback is not _UNSET:
            rules = dataclasses.replace(rules, cache_lookback=cache_lookback)
        if cache_min_tokens is not _UNSET:
            rules = dataclasses.replace(rules, cache_min_tokens=cache_min_tokens)
        self.strict = rules
        self.require_key = require_key
        self.validate = validate
        self.log_to_stderr = log_to_stderr
        self.signer = Signer()
        self._cond = threading.Condition()
        self._turns: deque[Turn] = deque()
        self._log: list[RecordedRequest] = []
        # Reads of the model catalogue are kept apart: the bot reads it at start and for
        # `!model`, and tests assert on what was asked of the model itself.
        self._model_log: list[RecordedRequest] = []
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._cache = PromptCache(lookback=rules.cache_lookback, min_tokens=rules.cache_min_tokens)

    def banner(self) -> str:
        return "\n".join(
            [
                f"Fake Anthropic Messages API listening on {self.url}  (Ctrl-C to stop)",
                "Point the SDK (or the bot) at it with:",
                f"  ANTHROPIC_BASE_URL={self.url} ANTHROPIC_API_KEY={self.require_key or 'fake'}",
                "Script it: POST /_fake/script, GET /_fake/requests, POST /_fake/reset",
            ]
        )

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

    def stop_with(self, stop_reason: str, text: str | None = None, **kw: Any) -> None:
        """Append one reply that ends with ``stop_reason`` (``max_tokens``, ``refusal``,
        ``pause_turn``, ``model_context_window_exceeded``...)."""
        self.reply(text, stop_reason=stop_reason, **kw)

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
            self._model_log.clear()
            self._cache.clear()

    def advance_clock(self, seconds: float) -> None:
        """Age the simulated prompt cache by ``seconds`` (to test TTL expiry without sleeping)."""
        with self._cond:
            self._cache.advance(seconds)

    # ---- inspection ------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the request log (every request but the model catalogue's)."""
        with self._cond:
            return list(self._log)

    @property
    def model_requests(self) -> list[RecordedRequest]:
        """The reads of the model catalogue (``GET /v1/models``, ``/v1/models/ID``)."""
        with self._cond:
            return list(self._model_log)

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
        return [
            report_row(index, rec)
            for index, rec in enumerate(self.requests)
            if rec.path == "/v1/messages" and rec.cache
        ]

    # ---- request handling ------------------------------------------------------------------

    def _record(
        self,
        request: web.Request,
        raw: bytes,
        body: dict[str, Any],
        status: int,
        usage: dict[str, Any] | None = None,
        outcome: CacheOutcome | None = None,
        error_type: str | None = None,
    ) -> None:
        headers = {h: request.headers[h] for h in HEADERS_OF_INTEREST if h in request.headers}
        record = RecordedRequest(
            path=request.path,
            body=body,
            headers=headers,
            size_bytes=len(raw),
            at=time.monotonic(),
            usage=dict(usage or {}),
            status=status,
            method=request.method,
            cache=cache_fields(outcome),
            error_type=error_type,
        )
        if request.method == "GET" and request.path.startswith("/v1/models"):
            with self._cond:
                self._model_log.append(record)
            return
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
            raise ApiError(401, "authentication_error", "x-api-key header is required")
        if key != self.require_key:
            raise ApiError(401, "authentication_error", "invalid x-api-key")

    def _parse(self, raw: bytes) -> dict[str, Any]:
        limit = self.strict.max_body_bytes
        if self.validate and limit is not None and len(raw) > limit:
            raise ApiError(
                413, "request_too_large", "Request exceeds the maximum allowed number of bytes."
            )
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid(f"The request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise invalid("The request body must be a JSON object")
        return body

    def _next_turn(self, body: dict[str, Any]) -> TurnDict:
        with self._cond:
            queued = self._turns.popleft() if self._turns else None
        if queued is None:
            return echo_turn(body)
        if callable(queued):
            answer = queued(body)
            return echo_turn(body) if answer is None else normalize_turn(answer)
        return dict(queued)

    def _signed(self, content: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The reply's content with each thinking block signed by this server."""
        out = []
        for block in content:
            if block["type"] == "thinking" and "signature" not in block:
                block = {**block, "signature": self.signer.sign(block["thinking"])}
            elif block["type"] == "redacted_thinking" and "data" not in block:
                block = {**block, "data": self.signer.redacted()}
            out.append(block)
        return out

    async def _handle_messages(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body: dict[str, Any] = {}
        try:
            self._check_key(request)
            body = self._parse(raw)
            if self.validate:
                validate(body, self.strict, self.signer)
        except ApiError as err:
            self._record(request, raw, body, err.status, error_type=err.error_type)
            return _error_response(err.status, err.error_type, err.message)
        try:
            turn = self._next_turn(body)
        except Exception as exc:  # a scripted callable failed or returned nonsense
            self._record(request, raw, body, 500, error_type="api_error")
            return _error_response(500, "api_error", f"fake: scripted turn failed: {exc!r}")
        stream = body.get("stream") is True
        failing = turn["type"] == "error" or (turn["type"] == "stream_failure" and not stream)
        with self._cond:
            outcome = self._cache.process(body, commit=not failing)
        usage: dict[str, Any] = {}
        error_type = turn.get("error_type")
        if turn["type"] == "error":
            status = turn["status"]
        elif failing:
            status = (
                0 if turn["mode"] == "disconnect" else STATUS_OF_TYPE.get(turn["error_type"], 500)
            )
        else:
            status = 200
            output_tokens = max(1, estimate_tokens(canonical_json(turn["content"])))
            usage = {**outcome.usage(), "output_tokens": output_tokens, "service_tier": "standard"}
            usage.update(turn["usage"])
        self._record(request, raw, body, status, usage, outcome, error_type)
        await _hold(turn)

        if turn["type"] == "error":
            headers = dict(turn["headers"])
            if turn["retry_after"] is not None:
                headers["retry-after"] = _seconds(turn["retry_after"])
            if turn["should_retry"] is not None:
                headers["x-should-retry"] = "true" if turn["should_retry"] else "false"
            return _error_response(
                status, turn["error_type"], turn["message"], headers, turn["error_code"]
            )
        if failing:
            if status == 0:
                _abort(request)
                return web.Response()
            return _error_response(status, turn["error_type"], turn["message"])
        message = {
            "id": new_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": turn["model"] or body["model"],
            "content": self._signed(turn["content"]),
            "stop_reason": turn["stop_reason"],
            "stop_sequence": turn["stop_sequence"],
            "usage": usage,
        }
        if not stream:
            return web.json_response(message, headers={"request-id": new_id("req")})
        return await self._write_stream(request, turn, stream_events(message))

    async def _write_stream(
        self, request: web.Request, turn: TurnDict, events: list[tuple[str, dict[str, Any]]]
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "request-id": new_id("req"),
            }
        )
        await response.prepare(request)
        failure = turn["type"] == "stream_failure"
        cut = turn["after_events"] if failure else len(events)
        try:
            for index, (name, data) in enumerate(events[:cut]):
                if index and turn["chunk_delay"] > 0 and name == "content_block_delta":
                    await asyncio.sleep(turn["chunk_delay"])
                await response.write(sse(name, data))
            if failure and turn["mode"] == "disconnect":
                _abort(request)
                return response
            if failure:
                error = {"type": turn["error_type"], "message": turn["message"]}
                await response.write(sse("error", {"type": "error", "error": error}))
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
                validate(
                    body,
                    dataclasses.replace(self.strict, context_window=False),
                    self.signer,
                    count_only=True,
                )
        except ApiError as err:
            self._record(request, raw, body, err.status, error_type=err.error_type)
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
        except ApiError as err:
            self._record(request, raw, {}, err.status, error_type=err.error_type)
            return _error_response(err.status, err.error_type, err.message)
        self._record(request, raw, {}, 200)
        wanted = request.query.getall("lifecycle", []) + request.query.getall("lifecycle[]", [])
        lifecycles = set(wanted) or {"active", "deprecated"}
        listed = [m for m in MODELS if m["lifecycle"] in lifecycles]
        after = request.query.get("after_id")
        if after:
            ids = [m["id"] for m in listed]
            listed = listed[ids.index(after) + 1 :] if after in ids else []
        limit = max(1, min(1000, int(request.query.get("limit", "20"))))
        page = listed[:limit]
        return web.json_response(
            {
                "data": page,
                "has_more": len(listed) > limit,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
            }
        )

    async def _handle_model(self, request: web.Request) -> web.Response:
        raw = await request.read()
        model_id = request.match_info["model_id"]
        try:
            self._check_key(request)
            model = find(model_id)
            if model is None:
                raise ApiError(404, "not_found_error", f"model: {model_id}")
        except ApiError as err:
            self._record(request, raw, {}, err.status, error_type=err.error_type)
            return _error_response(err.status, err.error_type, err.message)
        self._record(request, raw, {}, 200)
        return web.json_response(model)

    async def _handle_not_found(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self._record(request, raw, {}, 404, error_type="not_found_error")
        return _error_response(404, "not_found_error", "Not found")

    async def _handle_script(self, request: web.Request) -> web.Response:
        try:
            turns = self._parse_control(await request.read())
            self.script(*(turns if isinstance(turns, list) else [turns]))
        except (ValueError, TypeError, KeyError, ApiError) as exc:
            return _error_response(400, "invalid_request_error", str(exc))
        return web.json_response({"pending": self.pending_turns})

    @staticmethod
    def _parse_control(raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid(f"The request body is not valid JSON: {exc}") from None

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
    parser.add_argument("--loose", action="store_true", help="enforce none of the strict rules")
    args = parser.parse_args(argv)
    api = FakeMessagesAPI(
        args.host,
        args.port,
        require_key=args.require_key,
        strict=LOOSE if args.loose else None,
        log_to_stderr=not args.quiet,
    )
    if args.script:
        turns = json.loads(args.script.read_text())
        api.script(*(turns if isinstance(turns, list) else [turns]))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(api.serve_forever())
    return 0


if __name__ == "__main__":
    sys.exit(main())
