"""Replies as the model is told them: the old clients' quote removed, the referent named."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatch_matrix.core.ids import EventID
from dispatch_matrix.matrix.inbound import reply_target, strip_reply_fallback, thread_root_of
from dispatch_matrix.matrix.outbox import as_reply, text_content
from dispatch_matrix.queue.texts import REFERENT_CHARS, reply_note
from dispatch_matrix.store import Database


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


_THREAD = {"rel_type": "m.thread", "event_id": "$root"}


@pytest.mark.parametrize(
    "relation, replies_to, root",
    [
        ({}, None, None),
        ({"m.in_reply_to": {"event_id": "$q"}}, "$q", None),
        # A thread client's fallback names the thread's last event: not a reply the owner made.
        (
            {**_THREAD, "is_falling_back": True, "m.in_reply_to": {"event_id": "$last"}},
            None,
            "$root",
        ),
        # A real reply inside a thread.
        ({**_THREAD, "is_falling_back": False, "m.in_reply_to": {"event_id": "$q"}}, "$q", "$root"),
        ({**_THREAD, "m.in_reply_to": {"event_id": "$q"}}, "$q", "$root"),
        (_THREAD, None, "$root"),
        ({"rel_type": "m.thread", "event_id": 7}, None, None),
        ({"rel_type": "m.replace", "event_id": "$old"}, None, None),
    ],
)
def test_reply_and_thread_of_a_relation(
    relation: dict[str, object], replies_to: str | None, root: str | None
) -> None:
    assert reply_target(relation) == replies_to
    assert thread_root_of(relation) == root


@pytest.mark.parametrize(
    "thread_root, relation",
    [
        (None, {"m.in_reply_to": {"event_id": "$task"}}),
        (
            "$root",
            {
                "rel_type": "m.thread",
                "event_id": "$root",
                "is_falling_back": True,
                "m.in_reply_to": {"event_id": "$task"},
            },
        ),
    ],
)
def test_an_answer_goes_where_the_owner_wrote(
    thread_root: str | None, relation: dict[str, object]
) -> None:
    content = as_reply(text_content("done"), "$task", thread_root)
    assert content["m.relates_to"] == relation
    assert content["body"] == "done"


def test_the_thread_of_a_message_survives_in_the_ledger(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "state.db")
    db.note_thread(EventID("$task"), EventID("$root"))
    db.note_thread(EventID("$task"), EventID("$other"))  # recorded once; the first stays
    db.close()
    again = Database.open(tmp_path / "state.db")
    assert again.thread_of("$task") == "$root"
    assert again.thread_of("$elsewhere") is None
