"""The log file's contents: our events, not the libraries' chatter."""

from __future__ import annotations

import json
from pathlib import Path

from dispatch_matrix.core import logs
from dispatch_matrix.matrix.outbox import render


def test_at_debug_rendering_an_answer_writes_our_event_not_the_renderers_steps(
    tmp_path: Path,
) -> None:
    # The Markdown renderer logs every rule it enters at debug (hundreds per answer); an
    # operator who turns on debug to follow the bot found the file flooded with them.
    logs.setup("debug", tmp_path)
    try:
        html = render("# Review\n\n- **one** item\n- `two`\n\n```\ncode\n```\n")
        logs.get("test").debug("test.rendered", size=len(html))
        lines = (tmp_path / "dispatch.jsonl").read_text(encoding="utf-8").splitlines()
    finally:
        logs.setup("error")
    assert "<h1>" in html
    assert [json.loads(line)["event"] for line in lines] == ["test.rendered"]
