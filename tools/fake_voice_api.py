"""A stand-in OpenAI-style audio server on loopback: transcription and speech, scripted.

``POST /v1/audio/transcriptions`` checks the multipart request as a real server would
(``file`` and ``model`` required; ``language`` optional) and answers ``{"text": …}`` from a
queue of scripted transcripts; ``POST /v1/audio/speech`` answers with scripted audio bytes.
Every request is recorded. ``down()`` stops listening (connections are refused, as from a
server that is not running) and ``up()`` listens again on the same port.

In tests::

    with FakeVoiceAPI() as voice:
        voice.transcript("list the files")
        voice.fail(503)                  # the next transcription gets HTTP 503
        voice.speech_audio = ogg_bytes
        ...
        await voice.await_transcriptions(1)
        voice.transcriptions[0].file     # the decrypted audio the bot sent

From a shell: ``python tools/fake_voice_api.py --port 8098 --text "what I heard"``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web


@dataclass(frozen=True)
class Transcription:
    """One transcription request as the server saw it."""

    file: bytes
    filename: str
    content_type: str
    model: str
    language: str | None
    fields: dict[str, str]
    authorization: str | None


@dataclass(frozen=True)
class Speech:
    """One speech request: its JSON body and credentials."""

    body: dict[str, Any]
    authorization: str | None


def _error(status: int, message: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "invalid_request_error"}}, status=status
    )


class FakeVoiceAPI:
    """The stand-in server, serving from a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, require_key: str | None = None):
        self.host = host
        self.port = port
        self.require_key = require_key
        self.url = ""
        self.default_text = "(nothing scripted)"
        self.speech_audio = b""
        # Seconds each transcription takes before it answers (to test the bot's timeout).
        self.delay_s = 0.0
        self._answers: deque[str | int] = deque()
        self._cond = threading.Condition()
        self._transcriptions: list[Transcription] = []
        self._speeches: list[Speech] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeVoiceAPI:
        """Bind and serve from a thread with its own event loop; sets ``url``."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._setup())
            ready.set()
            loop.run_forever()
            # Handlers still waiting (a scripted delay) are cancelled, not left pending.
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-voice-api", daemon=True)
        self._loop = loop
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the fake voice API did not start")
        return self

    async def _setup(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/audio/transcriptions", self._transcribe)
        app.router.add_post("/v1/audio/speech", self._speak)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await self._listen()
        host, port = self._runner.addresses[0][:2]
        self.port = port
        self.url = f"http://{host}:{port}"

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self.port)
        await self._site.start()

    async def _unlisten(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    def _call(self, coro: Any) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def down(self) -> None:
        """Stop listening: the bot's connections are refused until ``up()``."""
        self._call(self._unlisten())

    def up(self) -> None:
        """Listen again, on the same port."""
        self._call(self._listen())

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop = self._thread = None

    def __enter__(self) -> FakeVoiceAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting and records ---------------------------------------------------------------

    def transcript(self, *texts: str) -> None:
        """What the next transcriptions return, in order."""
        with self._cond:
            self._answers.extend(texts)

    def fail(self, status: int, times: int = 1) -> None:
        """The next `times` transcriptions get this HTTP status."""
        with self._cond:
            self._answers.extend([status] * times)

    @property
    def transcriptions(self) -> list[Transcription]:
        with self._cond:
            return list(self._transcriptions)

    @property
    def speeches(self) -> list[Speech]:
        with self._cond:
            return list(self._speeches)

    async def await_transcriptions(self, n: int, timeout: float = 30) -> list[Transcription]:
        """Wait (without blocking the caller's loop) until `n` transcriptions arrived."""
        return await asyncio.to_thread(self._wait, lambda: self._transcriptions, n, timeout)

    async def await_speeches(self, n: int, timeout: float = 30) -> list[Speech]:
        """Wait until `n` speech requests arrived."""
        return await asyncio.to_thread(self._wait, lambda: self._speeches, n, timeout)

    def _wait(self, records: Any, n: int, timeout: float) -> Any:
        with self._cond:
            if not self._cond.wait_for(lambda: len(records()) >= n, timeout):
                raise TimeoutError(f"{len(records())} requests after {timeout}s, not {n}")
            return list(records())

    # -- handlers ----------------------------------------------------------------------------

    def _refused(self, request: web.Request) -> web.Response | None:
        if (
            self.require_key
            and request.headers.get("Authorization") != f"Bearer {self.require_key}"
        ):
            return _error(401, "Incorrect API key provided")
        return None

    async def _transcribe(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/form-data"):
            return _error(400, "expected multipart/form-data")
        file: tuple[bytes, str, str] | None = None
        fields: dict[str, str] = {}
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader) or part.name is None:
                continue
            if part.name == "file":
                data = await part.read()
                file = (bytes(data), part.filename or "", part.headers.get("Content-Type", ""))
            else:
                fields[part.name] = await part.text()
        if file is None or not file[0]:
            return _error(400, "file is required")
        if not fields.get("model"):
            return _error(400, "model is required")
        record = Transcription(
            file=file[0],
            filename=file[1],
            content_type=file[2],
            model=fields["model"],
            language=fields.get("language"),
            fields=fields,
            authorization=request.headers.get("Authorization"),
        )
        with self._cond:
            self._transcriptions.append(record)
            answer = self._answers.popleft() if self._answers else self.default_text
            self._cond.notify_all()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        refused = self._refused(request)
        if refused is not None:
            return refused
        if isinstance(answer, int):
            return _error(answer, "scripted failure")
        return web.json_response({"text": answer})

    async def _speak(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(400, "expected a JSON body")
        if not isinstance(body, dict) or not body.get("input") or not body.get("model"):
            return _error(400, "model and input are required")
        with self._cond:
            self._speeches.append(Speech(body, request.headers.get("Authorization")))
            self._cond.notify_all()
        refused = self._refused(request)
        if refused is not None:
            return refused
        return web.Response(body=self.speech_audio, content_type="audio/ogg")

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "whisper-1"}]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8098)
    parser.add_argument("--text", default="what I heard")
    args = parser.parse_args()
    with FakeVoiceAPI(port=args.port) as server:
        server.default_text = args.text
        print(f"fake voice API on {server.url}  (Ctrl-C to stop)", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
