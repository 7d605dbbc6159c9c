"""Replies as the model is told them: the old clients' quote removed, the referent named."""

from __future__ import annotations

import pytest

from dispatch_matrix.matrix.inbound import strip_reply_fallback
from dispatch_matrix.queue.texts import REFERENT_CHARS, reply_note


@pytest.mark.parametrize(
    "body, own",
    [
        ("make it shorter", "make it shorter"),
        ("> <@bot:hs> Here are the files\n> a.jpg\n\nmake it shorter", "make it shorter"),
        ("> <@bot:hs> one line\n\nfirst\n\nsecond", "first\n\nsecond"),
        # No blank line after the quote (some clients): the quote still goes.
        ("> <@bot:hs> quoted\nmine", "mine"),
        # A quote the owner wrote is theirs: only a fallback starts with "> <sender>".
        ("> to be or not to be\nwho said it?", "> to be or not to be\nwho said it?"),
        ("see:\n> <@bot:hs> not a fallback", "see:\n> <@bot:hs> not a fallback"),
        ("> <@bot:hs> only a quote", ""),
    ],
)
def test_strip_reply_fallback(body: str, own: str) -> None:
    assert strip_reply_fallback(body) == own


@pytest.mark.parametrize(
    "whose, task, text, expected",
    [
        (
            "answer",
            "#7",
            "Here are\nthe   files",
            "(This message replies to your answer to task #7, which began: «Here are the files»)",
        ),
        (
            "message",
            "#7",
            "⚙️ #7 — step 2",
            "(This message replies to your message about task #7, which began: «⚙️ #7 — step 2»)",
        ),
        (
            "owner",
            "#3",
            "what day is it",
            "(This message replies to the owner's message #3, which began: «what day is it»)",
        ),
        (
            "message",
            None,
            "🔓 private again",
            "(This message replies to your earlier message, which began: «🔓 private again»)",
        ),
        (
            "unknown",
            None,
            None,
            "(This message replies to an earlier message that is not on record.)",
        ),
    ],
)
def test_reply_note(whose: str, task: str | None, text: str | None, expected: str) -> None:
    assert reply_note(whose, task, text) == expected


def test_a_long_referent_is_cut_to_its_start() -> None:
    note = reply_note("answer", "#1", "word " * 1000)
    start = note.split("«", 1)[1].rstrip("»)")
    assert len(start) == REFERENT_CHARS and start.endswith("…")
