"""Drive a second, independent Matrix client from the tests: matrix-js-sdk with its Rust crypto.

`tests/jsclient/client.mjs` runs under Node and speaks JSON lines on stdin/stdout (one answer per
request, matched by id, plus unsolicited notifications); this module spawns it and wraps the
protocol in asyncio. One process is one logged-in device with an in-memory crypto store: a fresh
`JsClient.start(...)` is a fresh device.

Needs `npm ci --prefix tests/jsclient` once (node_modules is not committed).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import itertools
import json
import os
import shutil
from pathlib import Path
from typing import Any

JSCLIENT_DIR = Path(__file__).resolve().parent.parent / "jsclient"
SCRIPT = JSCLIENT_DIR / "client.mjs"
STDERR_LINES = 200


class JsClientError(RuntimeError):
    """The js client answered a request with ok:false, or died."""


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        raise JsClientError("node is not installed (needed for tests/jsclient)")
    return node


def check_installed() -> None:
    """Raise a clear error if the js client's dependencies are not installed."""
    if not (JSCLIENT_DIR / "node_modules" / "matrix-js-sdk").is_dir():
        raise JsClientError(
            f"{JSCLIENT_DIR / 'node_modules'} is missing: run `npm ci --prefix tests/jsclient`"
        )


class JsClient:
    """One matrix-js-sdk device in a Node child process."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.user_id = ""
        self.device_id = ""
        self.password = ""
        self.strict = False
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.notifications: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._closed = False
        self._exit_error: JsClientError | None = None
        self._reader = asyncio.create_task(self._read_stdout(), name=f"{name}-stdout")
        self._stderr_reader = asyncio.create_task(self._read_stderr(), name=f"{name}-stderr")

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    async def spawn(cls, *, name: str = "js", log_level: str | None = None) -> JsClient:
        """Start the Node process without logging in."""
        check_installed()
        env = dict(os.environ)
        env["JSCLIENT_LOG_LEVEL"] = log_level or os.environ.get("JSCLIENT_LOG_LEVEL", "warn")
        env.setdefault("NODE_NO_WARNINGS", "1")
        proc = await asyncio.create_subprocess_exec(
            node_binary(),
            str(SCRIPT),
            cwd=str(JSCLIENT_DIR),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            limit=16 * 1024 * 1024,
        )
        return cls(proc, name)

    @classmethod
    async def start(
        cls,
        homeserver: str,
        user_id: str,
        password: str,
        *,
        strict: bool = False,
        name: str = "js",
        device_id: str | None = None,
        log_level: str | None = None,
        timeline_limit: int | None = None,
    ) -> JsClient:
        """Spawn node, log in, start crypto and sync; return once the first sync is PREPARED.

        strict=True sets OnlySignedDevicesIsolationMode (MSC4153 "exclude insecure devices");
        otherwise AllDevicesIsolationMode. timeline_limit: events per room per sync (the
        homeserver's default is 10, and the sdk does not fill the gap when more arrive).
        """
        client = await cls.spawn(name=name, log_level=log_level)
        try:
            args: dict[str, Any] = {
                "homeserver": homeserver,
                "user_id": user_id,
                "password": password,
                "strict": strict,
            }
            if device_id:
                args["device_id"] = device_id
            if timeline_limit:
                args["timeline_limit"] = timeline_limit
            result = await client.call("login", timeout=90, **args)
        except BaseException:
            await client.close()
            raise
        client.password = password
        client.user_id = result["user_id"]
        client.device_id = result["device_id"]
        client.strict = bool(result.get("strict", strict))
        return client

    async def close(self, timeout: float = 10) -> None:
        """Send stop, wait for the process to exit, kill it if it hangs."""
        if self._closed:
            return
        self._closed = True
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.call("stop", timeout=timeout)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        for task in (self._reader, self._stderr_reader):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)
        self._fail_pending(JsClientError(f"{self.name}: closed"))

    async def __aenter__(self) -> JsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- protocol ----------------------------------------------------------------------------

    async def call(self, cmd: str, timeout: float = 60, **args: Any) -> Any:
        """Send one command; return its result or raise JsClientError."""
        if self._exit_error is not None:
            raise self._exit_error
        if self.proc.returncode is not None or self.proc.stdin is None:
            raise JsClientError(f"{self.name}: node has exited{self._tail()}")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        line = json.dumps({"id": request_id, "cmd": cmd, **args}) + "\n"
        try:
            self.proc.stdin.write(line.encode())
            await self.proc.stdin.drain()
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise JsClientError(
                f"{self.name}: {cmd} got no answer within {timeout:.0f}s{self._tail()}"
            ) from None
        except (BrokenPipeError, ConnectionResetError) as err:
            raise JsClientError(f"{self.name}: node has exited{self._tail()}") from err
        finally:
            self._pending.pop(request_id, None)

    async def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                self.stderr_tail.append(f"[stdout, not JSON] {line.decode(errors='replace')}")
                continue
            if "id" in msg and ("ok" in msg):
                future = self._pending.get(msg["id"])
                if future is None or future.done():
                    continue
                if msg["ok"]:
                    future.set_result(msg.get("result"))
                else:
                    future.set_exception(JsClientError(f"{self.name}: {msg.get('error')}"))
            elif "event" in msg:
                self.notifications.append(msg)
        code = await self.proc.wait()
        # Let the stderr reader drain so the tail is complete.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._stderr_reader), 2)
        err = JsClientError(f"{self.name}: node exited with code {code}{self._tail()}")
        if not self._closed:
            self._exit_error = err
        self._fail_pending(err)

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while True:
            line = await self.proc.stderr.readline()
            if not line:
                return
            self.stderr_tail.append(line.decode(errors="replace").rstrip("\n"))

    def _fail_pending(self, err: JsClientError) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(err)

    def _tail(self, lines: int = 40) -> str:
        tail = list(self.stderr_tail)[-lines:]
        return ("\n--- node stderr (tail) ---\n" + "\n".join(tail)) if tail else ""

    # -- typed helpers -----------------------------------------------------------------------

    async def bootstrap_cross_signing(self, password: str) -> dict[str, Any]:
        """Create and upload cross-signing keys; this device ends up signed by its owner."""
        result: dict[str, Any] = await self.call("bootstrap_cross_signing", password=password)
        return result

    async def create_dm(self, invite: str, *, encrypted: bool = True) -> str:
        result = await self.call("create_dm", invite=invite, encrypted=encrypted)
        return str(result["room_id"])

    async def join(self, room_id: str, timeout: float = 30) -> str:
        result = await self.call(
            "join", timeout=timeout + 5, room_id=room_id, timeout_ms=int(timeout * 1000)
        )
        return str(result["room_id"])

    async def invite(self, room_id: str, user_id: str) -> None:
        await self.call("invite", room_id=room_id, user_id=user_id)

    async def wait_invite(self, room_id: str | None = None, timeout: float = 30) -> str:
        result = await self.call(
            "wait_invite", timeout=timeout + 5, room_id=room_id, timeout_ms=int(timeout * 1000)
        )
        return str(result["room_id"])

    async def room_info(self, room_id: str) -> dict[str, Any]:
        """What the app shows of a room, an invite included: {membership, inviter,
        is_direct, encryption, power_levels, creator, additional_creators, room_version,
        join_rule}."""
        result: dict[str, Any] = await self.call("room_info", room_id=room_id)
        return result

    async def wait_join(self, room_id: str, user_id: str, timeout: float = 30) -> None:
        await self.call(
            "wait_join",
            timeout=timeout + 5,
            room_id=room_id,
            user_id=user_id,
            timeout_ms=int(timeout * 1000),
        )

    async def send_text(
        self,
        room_id: str,
        body: str,
        html: str | None = None,
        *,
        timeout: float = 30,
        relates_to: dict[str, Any] | None = None,
    ) -> str:
        """Send m.text (encrypted in an encrypted room; raises if it would go out in clear).

        Waits up to `timeout` for the room to be joined and known to the client first.
        `relates_to` is the message's `m.relates_to` (a thread, a reply), as given.
        """
        args: dict[str, Any] = {"room_id": room_id, "body": body}
        if html is not None:
            args["html"] = html
        if relates_to is not None:
            args["relates_to"] = relates_to
        result = await self.call(
            "send_text", timeout=timeout + 30, timeout_ms=int(timeout * 1000), **args
        )
        return str(result["event_id"])

    async def send_many(
        self, room_id: str, bodies: list[str], *, in_flight: int = 4, timeout: float = 30
    ) -> list[str]:
        """Send m.text messages with up to `in_flight` sends outstanding (their order in the
        room may then differ from `bodies`); the event ids, in the order of `bodies`."""
        result = await self.call(
            "send_many",
            timeout=timeout * max(1, len(bodies)) + 30,
            room_id=room_id,
            bodies=bodies,
            in_flight=in_flight,
            timeout_ms=int(timeout * 1000),
        )
        return [str(x) for x in result["event_ids"]]

    async def count_messages(
        self, room_id: str, sender: str, contains: str, count: int, *, timeout: float = 30
    ) -> int:
        """Wait until at least `count` decrypted messages from `sender` contain `contains`."""
        result = await self.call(
            "count_messages",
            timeout=timeout + 5,
            room_id=room_id,
            sender=sender,
            contains=contains,
            count=count,
            timeout_ms=int(timeout * 1000),
        )
        return int(result["count"])

    async def forget(self, room_id: str) -> int:
        """Empty this client's buffer of the room's events (long benchmark runs)."""
        return int((await self.call("forget", room_id=room_id))["dropped"])

    async def send_voice(
        self,
        room_id: str,
        audio: bytes,
        duration_ms: int,
        *,
        declared_size: int | None = None,
        timeout: float = 30,
    ) -> str:
        """Send a voice message as Element records one: the audio as an encrypted attachment,
        m.audio with the MSC3245 voice flag. `declared_size` overrides the size in `info`."""
        args: dict[str, Any] = {
            "room_id": room_id,
            "data_b64": base64.b64encode(audio).decode(),
            "duration_ms": duration_ms,
        }
        if declared_size is not None:
            args["declared_size"] = declared_size
        result = await self.call(
            "send_voice", timeout=timeout + 30, timeout_ms=int(timeout * 1000), **args
        )
        return str(result["event_id"])

    async def fetch_attachment(self, file: dict[str, Any]) -> bytes:
        """Download an encrypted attachment (an event's `file`), check its hash, decrypt it."""
        result = await self.call("fetch_attachment", file=file)
        return base64.b64decode(result["data_b64"])

    async def react(self, room_id: str, event_id: str, key: str, *, timeout: float = 30) -> str:
        """Send an m.reaction annotation (the sdk never encrypts reactions)."""
        result = await self.call(
            "react",
            timeout=timeout + 30,
            room_id=room_id,
            event_id=event_id,
            key=key,
            timeout_ms=int(timeout * 1000),
        )
        return str(result["event_id"])

    async def react_encrypted(
        self, room_id: str, event_id: str, key: str, *, timeout: float = 30
    ) -> str:
        """Send an m.reaction encrypted (as apps that encrypt reactions do; the sdk does not)."""
        result = await self.call(
            "react_encrypted",
            timeout=timeout + 30,
            room_id=room_id,
            event_id=event_id,
            key=key,
            timeout_ms=int(timeout * 1000),
        )
        return str(result["event_id"])

    async def vote(
        self,
        room_id: str,
        poll_id: str,
        answer: str,
        *,
        encrypted: bool = True,
        stable: bool = False,
        timeout: float = 30,
    ) -> str:
        """Answer a poll as Element does (unstable MSC3381 names; `stable`: m.poll.response),
        encrypted unless `encrypted` is False (as a forged or careless client would)."""
        relation = {"rel_type": "m.reference", "event_id": poll_id}
        if stable:
            kind, content = "m.poll.response", {"m.relates_to": relation, "m.selections": [answer]}
        else:
            kind = "org.matrix.msc3381.poll.response"
            content = {"m.relates_to": relation, kind: {"answers": [answer]}}
        result = await self.call(
            "send_event",
            timeout=timeout + 30,
            room_id=room_id,
            type=kind,
            content=content,
            encrypted=encrypted,
            timeout_ms=int(timeout * 1000),
        )
        return str(result["event_id"])

    async def wait_message(
        self,
        room_id: str,
        sender: str | None = None,
        contains: str | None = None,
        timeout: float = 30,
        *,
        after_event_id: str | None = None,
        include_failures: bool = False,
        event_type: str = "m.room.message",
    ) -> dict[str, Any]:
        """The first event of `event_type` (from `sender`, containing `contains` in its body or
        its extensible-events text) in the room's buffer.

        Returns {event_id, sender, type, body, content, was_encrypted, decryption_failed,
        decryption_failure}. With include_failures=True an undecryptable event from `sender`
        also matches (then `contains` cannot be checked and type is m.room.encrypted).
        """
        result: dict[str, Any] = await self.call(
            "wait_message",
            timeout=timeout + 5,
            room_id=room_id,
            sender=sender,
            contains=contains,
            after_event_id=after_event_id,
            include_failures=include_failures,
            type=event_type,
            timeout_ms=int(timeout * 1000),
        )
        return result

    async def wait_reactions(
        self, room_id: str, event_id: str, keys: list[str], sender: str, timeout: float = 30
    ) -> list[dict[str, Any]]:
        """Wait until `sender`'s reactions on `event_id` (not redacted) are exactly `keys`."""
        result: list[dict[str, Any]] = await self.call(
            "wait_reactions",
            timeout=timeout + 5,
            room_id=room_id,
            event_id=event_id,
            sender=sender,
            keys=keys,
            timeout_ms=int(timeout * 1000),
        )
        return result

    async def wait_receipt(
        self, room_id: str, event_id: str, user_id: str, timeout: float = 30
    ) -> dict[str, Any]:
        """Wait until `user_id`'s own read receipt (not one the client synthesized from a
        message it sent) points at `event_id`: the "seen" mark a phone shows."""
        result: dict[str, Any] = await self.call(
            "wait_receipt",
            timeout=timeout + 5,
            room_id=room_id,
            event_id=event_id,
            user_id=user_id,
            timeout_ms=int(timeout * 1000),
        )
        return result

    async def messages(self, room_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.call("messages", room_id=room_id)
        return result

    async def decryption_failures(self, settle: float = 1.0) -> list[dict[str, Any]]:
        """Events that failed to decrypt, after up to `settle` seconds for the SDK to retry."""
        result: list[dict[str, Any]] = await self.call(
            "decryption_failures", timeout=settle + 20, settle_ms=int(settle * 1000)
        )
        return result

    async def user_verification(self, user_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("user_verification", user_id=user_id)
        return result

    async def device_verification(self, user_id: str, device_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "device_verification", user_id=user_id, device_id=device_id
        )
        return result

    async def cross_sign_device(self, device_id: str, timeout: float = 30) -> dict[str, Any]:
        """Sign another device of this client's own account with its self-signing key."""
        result: dict[str, Any] = await self.call(
            "cross_sign_device", timeout=timeout + 30, device_id=device_id,
            timeout_ms=int(timeout * 1000),
        )  # fmt: skip
        return result

    async def devices(self, user_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.call("devices", user_id=user_id)
        return result

    # -- interactive verification (SAS) -------------------------------------------------------

    async def request_verification(self, room_id: str, user_id: str) -> str:
        """Ask `user_id` to verify, in the DM `room_id`; returns the request id (its event id)."""
        result = await self.call("request_verification", room_id=room_id, user_id=user_id)
        return str(result["request_id"])

    async def wait_verification_request(
        self, user_id: str | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        """The next verification request someone sent this client: {request_id, other_user, …}."""
        result: dict[str, Any] = await self.call(
            "wait_verification_request",
            timeout=timeout + 5,
            user_id=user_id,
            timeout_ms=int(timeout * 1000),
        )
        return result

    async def accept_verification(self, request_id: str) -> dict[str, Any]:
        """Answer a request with m.key.verification.ready."""
        result: dict[str, Any] = await self.call("accept_verification", request_id=request_id)
        return result

    async def start_sas(
        self, request_id: str, *, wait_for_other: bool = False, timeout: float = 30
    ) -> dict[str, Any]:
        """Start emoji verification (or, with wait_for_other, accept the other side's start)."""
        result: dict[str, Any] = await self.call(
            "start_sas",
            timeout=timeout + 5,
            request_id=request_id,
            wait_for_other=wait_for_other,
            timeout_ms=int(timeout * 1000),
        )
        return result

    async def sas_emoji(self, request_id: str, timeout: float = 30) -> list[tuple[str, str]]:
        """The seven emoji this client shows, as (symbol, name)."""
        result = await self.call(
            "sas_emoji", timeout=timeout + 5, request_id=request_id, timeout_ms=int(timeout * 1000)
        )
        return [(str(symbol), str(name)) for symbol, name in result["emoji"]]

    async def confirm_sas(self, request_id: str, match: bool = True) -> dict[str, Any]:
        """The user's answer: they match (send the MAC) or not (cancel, m.mismatched_sas)."""
        result: dict[str, Any] = await self.call("confirm_sas", request_id=request_id, match=match)
        return result

    async def cancel_verification(
        self, request_id: str, code: str | None = None, reason: str | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "cancel_verification", request_id=request_id, code=code, reason=reason
        )
        return result

    async def verification_done(self, request_id: str, timeout: float = 30) -> dict[str, Any]:
        """Wait until the flow is done or cancelled: {phase, cancelled, code, cancelled_by, …}."""
        result: dict[str, Any] = await self.call(
            "verification_done",
            timeout=timeout + 5,
            request_id=request_id,
            timeout_ms=int(timeout * 1000),
        )
        return result

    async def wait_user_verified(self, user_id: str, timeout: float = 30) -> dict[str, Any]:
        """Wait until this client counts `user_id` as cross-signing verified."""
        result: dict[str, Any] = await self.call(
            "wait_user_verified",
            timeout=timeout + 5,
            user_id=user_id,
            timeout_ms=int(timeout * 1000),
        )
        return result
