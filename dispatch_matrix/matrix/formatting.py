"""Markdown to Matrix message content: `body` keeps the text, `formatted_body` the HTML."""

from __future__ import annotations

from functools import cache
from typing import Any

from markdown_it import MarkdownIt


@cache
def _renderer() -> MarkdownIt:
    # html=False: raw HTML from the model is shown as text, never injected into a client.
    return MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": True}).enable(
        ["table", "strikethrough"]
    )


def render(markdown: str) -> str:
    """The HTML for a Markdown text."""
    html: str = _renderer().render(markdown)
    return html.strip()


def text_content(markdown: str, *, notice: bool = False) -> dict[str, Any]:
    """An m.room.message content for Markdown text: plain body plus HTML."""
    content: dict[str, Any] = {"msgtype": "m.notice" if notice else "m.text", "body": markdown}
    html = render(markdown)
    # Plain text renders as one <p>; only send HTML when it adds something.
    if html != f"<p>{_escape(markdown)}</p>":
        content["format"] = "org.matrix.custom.html"
        content["formatted_body"] = html
    return content


def reply_to(
    content: dict[str, Any], event_id: str, thread_root: str | None = None
) -> dict[str, Any]:
    """The content as a reply to `event_id` (rich reply relation, no fallback quote).

    With `thread_root` (the owner wrote `event_id` in a thread) the reply goes to that
    thread, and keeps the reply as the spec's fallback (`is_falling_back`), so a client
    without threads still shows it as a reply to the owner's message.
    """
    if thread_root is None:
        return {**content, "m.relates_to": {"m.in_reply_to": {"event_id": event_id}}}
    relation = {
        "rel_type": "m.thread",
        "event_id": thread_root,
        "is_falling_back": True,
        "m.in_reply_to": {"event_id": event_id},
    }
    return {**content, "m.relates_to": relation}


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def edit_of(content: dict[str, Any], event_id: str) -> dict[str, Any]:
    """An edit (m.replace) of `event_id` whose new content is `content`."""
    return {
        **{k: v for k, v in content.items() if k in ("msgtype", "format")},
        "body": "* " + content["body"],
        **(
            {"formatted_body": "* " + content["formatted_body"]}
            if "formatted_body" in content
            else {}
        ),
        "m.new_content": content,
        "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
    }
