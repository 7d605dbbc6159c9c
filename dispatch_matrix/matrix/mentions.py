"""Messages that mention a user, so their phone notifies (a fired reminder).

The mention is intentional (`m.mentions.user_ids`, the spec's way since v1.7) and also shown:
the user's id in the plain body and a pill (a matrix.to link) in the HTML. Such a message is
an `m.text`, never an `m.notice`: the default push rules suppress notices before they look at
mentions. The outbox posts it (`Outbox.mention`: same dedup by key, same redactor).
"""

from __future__ import annotations

import html
from typing import Any

from dispatch_matrix.core.ids import UserID
from dispatch_matrix.matrix.formatting import render, text_content


def mention_content(markdown: str, user_id: UserID) -> dict[str, Any]:
    """An m.text content for `markdown` that mentions `user_id` (whose id it contains)."""
    content = text_content(markdown)
    rendered = content.get("formatted_body") or render(markdown)
    pill = f'<a href="https://matrix.to/#/{html.escape(user_id)}">{html.escape(user_id)}</a>'
    content["format"] = "org.matrix.custom.html"
    content["formatted_body"] = rendered.replace(html.escape(user_id), pill, 1)
    content["m.mentions"] = {"user_ids": [user_id]}
    return content
