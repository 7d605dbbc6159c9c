"""Polls (MSC3381) on the wire, pure: a poll's start, a vote (a ballot) and its end. What an
approval poll's answers mean is the queue's (`queue/polls.py`).

Sent in the unstable namespace (`org.matrix.msc3381.poll.*`, with an
`org.matrix.msc1767.text` fallback): it is what Element Web (matrix-js-sdk's `M_POLL_START`
sends its unstable name) and Element X (ruma's unstable poll events) both send and render
today; the stable `m.poll.*` names are read as well, so a vote from a client that already
sends them counts the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dispatch_matrix.core.ids import EventID

POLL_START = "org.matrix.msc3381.poll.start"
POLL_END = "org.matrix.msc3381.poll.end"
UNSTABLE_RESPONSE = "org.matrix.msc3381.poll.response"
STABLE_RESPONSE = "m.poll.response"
RESPONSE_TYPES = frozenset({UNSTABLE_RESPONSE, STABLE_RESPONSE})
_TEXT = "org.matrix.msc1767.text"


@dataclass(frozen=True)
class Choice:
    """One answer of a poll: its id and the words on its button."""

    id: str
    label: str


@dataclass(frozen=True)
class Ballot:
    """What a poll response says: the poll it answers and the answer ids picked."""

    poll: EventID
    answers: tuple[str, ...]


def start_content(question: EventID, text: str, choices: tuple[Choice, ...]) -> dict[str, Any]:
    """A poll start event's content: disclosed, one answer, referring to the question it
    belongs to. Its fallback text lists the answers for clients that show no polls."""
    lines = [text, *(f"{number}. {c.label}" for number, c in enumerate(choices, 1))]
    return {
        POLL_START: {
            "question": {_TEXT: text},
            "kind": "org.matrix.msc3381.poll.disclosed",
            "max_selections": 1,
            "answers": [{"id": c.id, _TEXT: c.label} for c in choices],
        },
        _TEXT: "\n".join(lines),
        "m.relates_to": {"rel_type": "m.reference", "event_id": question},
    }


def end_content(poll: EventID, text: str) -> dict[str, Any]:
    """A poll end event's content: it closes `poll`, saying how it went."""
    return {
        POLL_END: {},
        _TEXT: text,
        "m.relates_to": {"rel_type": "m.reference", "event_id": poll},
    }


def read_ballot(event_type: str, content: Mapping[str, Any]) -> Ballot | None:
    """A poll response's poll and answers (stable or unstable); None when the event is not
    a well-formed response (no reference to a poll, or answers that are not strings)."""
    if event_type not in RESPONSE_TYPES:
        return None
    relation = content.get("m.relates_to")
    if not isinstance(relation, Mapping) or relation.get("rel_type") != "m.reference":
        return None
    poll = relation.get("event_id")
    if not isinstance(poll, str) or not poll:
        return None
    if event_type == UNSTABLE_RESPONSE:
        block = content.get(UNSTABLE_RESPONSE)
        answers = block.get("answers") if isinstance(block, Mapping) else None
    else:
        answers = content.get("m.selections")
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        return None
    return Ballot(EventID(poll), tuple(answers))
