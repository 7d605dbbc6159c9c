"""What an approval poll's answers mean: the ids it offers and the approval a vote gives.
The poll on the wire is `matrix/polls.py`'s."""

from __future__ import annotations

from dispatch_matrix.agent.ports import Approval
from dispatch_matrix.matrix.polls import Choice

# The answer ids of an approval poll, and what each means.
ONCE, ALWAYS, DENY = "once", "always", "deny"
_APPROVALS = {ONCE: Approval.YES, ALWAYS: Approval.ALWAYS, DENY: Approval.NO}


def approval_of(answers: tuple[str, ...], offered: tuple[Choice, ...]) -> Approval | None:
    """What a vote says about an approval: its one answer, if the poll offered it. An empty
    vote (a retracted one) or several answers say nothing."""
    if len(answers) != 1 or answers[0] not in {c.id for c in offered}:
        return None
    return _APPROVALS.get(answers[0])
