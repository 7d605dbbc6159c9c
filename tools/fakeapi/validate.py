"""What the stand-in refuses, in the service's words: the shapes of a request, tool calls
and their results, signed thinking, images, the context window and the body size.

Strict by default (``Strictness()``); a test loosens one rule at a time, e.g.
``FakeMessagesAPI(strict=Strictness(signatures=False))``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .cache import MAX_BREAKPOINTS, flatten_prompt
from .models import context_window, find
from .signing import Signer

MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_IMAGE_BYTES = 5 * 1024 * 1024
MAX_IMAGES = 100
# Models that take only adaptive thinking: {"type": "enabled"} is a 400 on them.
ADAPTIVE_ONLY = ("claude-sonnet-5", "claude-opus-5", "claude-fable-5", "claude-mythos-5")
_MAGIC = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}


@dataclass(frozen=True)
class Strictness:
    """Which of the service's rules the stand-in enforces (all, by default)."""

    cache_min_tokens: int | None = None
    """Shortest cacheable prefix; None: the model family's figure (see models.py)."""
    cache_lookback: int | None = 20
    """Blocks before a breakpoint searched for an earlier entry; None: unbounded."""
    signatures: bool = True
    """Thinking blocks sent back must be signed by this server and unaltered."""
    pairing: bool = True
    """tool_use / tool_result pairing, unique ids, tools defined when used."""
    images: bool = True
    """Images at most 5 MB each, 100 per request, of the media type they claim."""
    context_window: bool = True
    """A prompt over the model's context window is refused as too long."""
    max_body_bytes: int | None = MAX_BODY_BYTES
    """A larger body gets a 413; None: no limit."""
    models: bool = True
    """Only catalogue models that are not retired; max_tokens within the model's limit;
    manual thinking refused on models that take only adaptive thinking."""


LOOSE = Strictness(
    cache_min_tokens=0,
    cache_lookback=None,
    signatures=False,
    pairing=False,
    images=False,
    context_window=False,
    max_body_bytes=None,
    models=False,
)


class ApiError(Exception):
    """A refusal with the service's status, error type and message."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


def invalid(message: str) -> ApiError:
    """A 400 invalid_request_error."""
    return ApiError(400, "invalid_request_error", message)


def _blocks(content: Any) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return content if isinstance(content, list) else []


def validate(
    body: Mapping[str, Any],
    rules: Strictness,
    signer: Signer,
    *,
    count_only: bool = False,
) -> None:
    """Reject what the service would reject (a useful subset); raises ApiError."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model: Field required")
    entry = find(model)
    if rules.models and (entry is None or entry["lifecycle"] == "retired"):
        raise ApiError(404, "not_found_error", f"model: {model}")
    if not count_only:
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise invalid("max_tokens: Field required")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise invalid("max_tokens: Input should be greater than or equal to 1")
        if rules.models and entry is not None and max_tokens > entry["max_tokens"]:
            raise invalid(
                f"max_tokens: {max_tokens} > {entry['max_tokens']}, which is the maximum "
                f"allowed number of output tokens for {model}"
            )
        if not isinstance(body.get("stream", False), bool):
            raise invalid("stream: Input should be a valid boolean")
    thinking = body.get("thinking")
    manual = isinstance(thinking, Mapping) and thinking.get("type") == "enabled"
    if rules.models and manual and model.startswith(ADAPTIVE_ONLY):
        raise invalid(
            f'thinking.type: "enabled" is not supported for {model}. Use '
            '{"type": "adaptive"} instead.'
        )
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise invalid("system: Input should be a valid string or list")
    tools = [t for t in body.get("tools") or [] if isinstance(t, Mapping)]
    names = [t.get("name") for t in tools]
    if len(names) != len(set(names)):
        raise invalid("tools: Tool names must be unique.")
    messages = body.get("messages")
    if messages is None:
        raise invalid("messages: Field required")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages: List should have at least 1 item after validation, not 0")
    _check_messages(messages, bool(tools), rules, signer)
    parts = flatten_prompt(dict(body))  # once: it serialises every block
    ttls = [part.ttl for part in parts if part.ttl is not None]
    if any(later > earlier for earlier, later in zip(ttls, ttls[1:], strict=False)):
        # The service reads the prompt in order: an entry may not outlive the one before it.
        raise invalid(
            "cache_control: a breakpoint with ttl '1h' may not follow one with ttl '5m'; "
            "longer-lived cache entries must come first"
        )
    breakpoints = len(ttls)
    if breakpoints > MAX_BREAKPOINTS:
        raise invalid(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {breakpoints}."
        )
    if rules.context_window:
        window = context_window(model)
        tokens = sum(part.tokens for part in parts)
        if tokens > window:
            raise invalid(f"prompt is too long: {tokens} tokens > {window} maximum")


def _check_messages(
    messages: list[Any], has_tools: bool, rules: Strictness, signer: Signer
) -> None:
    expected: list[str] = []  # tool_use ids of the previous message
    seen_ids: set[str] = set()
    images = 0
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, Mapping) else None
        if role not in ("user", "assistant"):
            raise invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        raw = message.get("content")
        if not isinstance(raw, str | list):
            raise invalid(f"messages.{i}.content: Input should be a valid list")
        content = _blocks(raw)
        if not content and not (role == "assistant" and i == len(messages) - 1):
            raise invalid(
                f"messages.{i}: all messages must have non-empty content except for the "
                "optional final assistant message"
            )
        for j, block in enumerate(content):
            where = f"messages.{i}.content.{j}"
            if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
                raise invalid(f"{where}: Input should be a valid dictionary")
            kind = block["type"]
            if kind == "text" and not block.get("text"):
                raise invalid("messages: text content blocks must be non-empty")
            if kind in ("thinking", "redacted_thinking"):
                _check_thinking(block, where, role, rules, signer)
            if kind == "tool_use" and rules.pairing:
                if str(block.get("id")) in seen_ids:
                    raise invalid(f"{where}: `tool_use` ids must be unique: {block.get('id')}")
                seen_ids.add(str(block.get("id")))
            if rules.pairing and kind in ("tool_use", "tool_result") and not has_tools:
                raise invalid(
                    "Requests which include `tool_use` or `tool_result` blocks must define tools."
                )
            if rules.images:
                images += _check_images(block, where)
        if rules.images and images > MAX_IMAGES:
            raise invalid(f"Too many images: {images} > {MAX_IMAGES} maximum per request")
        results = [b.get("tool_use_id") for b in content if b["type"] == "tool_result"]
        leading = [b.get("tool_use_id") for b in content[: len(results)]]
        missing = [x for x in expected if role != "user" or x not in leading]
        if missing and rules.pairing:
            raise invalid(
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
        answered: set[str] = set()
        for j, block in enumerate(content):
            if block["type"] != "tool_result":
                continue
            call = str(block.get("tool_use_id"))
            # A second result for one call is as unexpected as one for no call at all.
            orphan = call not in expected or call in answered
            answered.add(call)
            if rules.pairing and orphan:
                raise invalid(
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                    f"`tool_result` blocks: {block.get('tool_use_id')}. Each `tool_result` "
                    "block must have a corresponding `tool_use` block in the previous message."
                )
        expected = [
            str(b.get("id")) for b in content if role == "assistant" and b["type"] == "tool_use"
        ]


def _check_thinking(
    block: Mapping[str, Any], where: str, role: str, rules: Strictness, signer: Signer
) -> None:
    if "cache_control" in block:
        raise invalid(f"{where}.cache_control: Thinking blocks cannot be cached directly.")
    if role != "assistant":
        raise invalid(f"{where}: thinking blocks may only appear in assistant messages")
    if not rules.signatures:
        return
    if block["type"] == "thinking":
        if not signer.verify(str(block.get("thinking", "")), block.get("signature")):
            raise invalid(f"{where}: Invalid `signature` in `thinking` block")
    elif not signer.verify_redacted(block.get("data")):
        raise invalid(f"{where}: Invalid `data` in `redacted_thinking` block")


def _check_images(block: Mapping[str, Any], where: str) -> int:
    """Check an image block (or the images in a tool result); returns how many it holds."""
    if block.get("type") == "tool_result":
        inner = block.get("content")
        if not isinstance(inner, list):
            return 0
        return sum(
            _check_images(part, f"{where}.content.{k}")
            for k, part in enumerate(inner)
            if isinstance(part, Mapping)
        )
    if block.get("type") != "image":
        return 0
    source = block.get("source")
    if not isinstance(source, Mapping) or source.get("type") != "base64":
        return 1
    try:
        data = base64.b64decode(str(source.get("data", "")), validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{where}.source.base64: The image data is not valid base64.") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise invalid(
            f"{where}.source.base64: image exceeds 5 MB maximum: {len(data)} bytes > "
            f"{MAX_IMAGE_BYTES} bytes"
        )
    media_type = str(source.get("media_type", ""))
    magic = _MAGIC.get(media_type)
    if magic is None:
        raise invalid(
            f"{where}.source.base64.media_type: Input should be 'image/jpeg', 'image/png', "
            "'image/gif' or 'image/webp'"
        )
    if not data.startswith(magic):
        raise invalid(
            f"{where}.source.base64: Image does not match the provided media type {media_type}"
        )
    return 1
