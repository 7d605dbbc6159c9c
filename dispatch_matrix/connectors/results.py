"""An MCP tool result as the content of a Messages API tool_result. Pure.

Text stays text; images the API reads (PNG, JPEG, GIF, WebP) become image blocks, PDFs
document blocks; embedded text resources become text headed by their URI; anything else is
named in a line of text rather than dropped silently. Known secrets are scrubbed first.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import mcp_types as types

from dispatch_matrix.core.logs import REDACTOR
from dispatch_matrix.toolbox.base import ToolResult

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
# The API's own limit for one image is 5 MB of decoded data.
MAX_IMAGE_BYTES = 5 * 1024 * 1024


def tool_result(result: types.CallToolResult) -> ToolResult:
    """The ToolResult for what the server answered (is_error kept)."""
    blocks: list[dict[str, Any]] = []
    for item in result.content:
        blocks.extend(_blocks(item))
    if not blocks and result.structured_content is not None:
        blocks.append(_text(json.dumps(result.structured_content, ensure_ascii=False, indent=1)))
    if not blocks:
        blocks.append(_text("(the tool returned nothing)"))
    return ToolResult(blocks, is_error=bool(result.is_error))


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": REDACTOR.text(text) or " "}


def _blocks(item: types.ContentBlock) -> list[dict[str, Any]]:
    if isinstance(item, types.TextContent):
        return [_text(item.text)]
    if isinstance(item, types.ImageContent):
        return [_media(item.data, item.mime_type, "image")]
    if isinstance(item, types.AudioContent):
        return [_text(f"[audio ({item.mime_type}) returned; it cannot be shown to the model]")]
    if isinstance(item, types.ResourceLink):
        title = f" — {item.title or item.name}" if (item.title or item.name) else ""
        return [_text(f"[resource link: {item.uri}{title}]")]
    if isinstance(item, types.EmbeddedResource):
        resource = item.resource
        if isinstance(resource, types.TextResourceContents):
            return [_text(f"[resource {resource.uri}]\n{resource.text}")]
        mime = resource.mime_type or "application/octet-stream"
        if mime in IMAGE_TYPES or mime == "application/pdf":
            kind = "image" if mime in IMAGE_TYPES else "document"
            return [_media(resource.blob, mime, kind, str(resource.uri))]
        return [_text(f"[binary resource {resource.uri} ({mime}) not shown]")]
    return [_text(f"[{getattr(item, 'type', 'unknown')} content not shown]")]


def _media(data: str, mime: str, kind: str, uri: str | None = None) -> dict[str, Any]:
    where = f" {uri}" if uri else ""
    if mime not in IMAGE_TYPES and kind == "image":
        return _text(f"[image{where} of type {mime}, which the model cannot read]")
    try:
        size = len(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        return _text(f"[{kind}{where}: the server sent invalid base64]")
    if kind == "image" and size > MAX_IMAGE_BYTES:
        return _text(f"[image{where} of {size} bytes, over the 5 MB the model reads]")
    return {"type": kind, "source": {"type": "base64", "media_type": mime, "data": data}}
