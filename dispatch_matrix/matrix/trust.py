"""Who may command the bot: pure decisions over typed inputs, no I/O.

The gate every inbound event passes before it can become a task. Cross-signing checks of
the sender's device join here (the trust issue); today it enforces the parts that need no
key material: the sender is an owner, and the message arrived encrypted.
"""

from __future__ import annotations

from dataclasses import dataclass

from .inbound import Invite, Message


@dataclass(frozen=True)
class Verdict:
    """Yes, or no with the reason."""

    allowed: bool
    reason: str = ""

    @classmethod
    def allow(cls) -> Verdict:
        return cls(True)

    @classmethod
    def refuse(cls, reason: str) -> Verdict:
        return cls(False, reason)


def may_join(invite: Invite, owners: frozenset[str]) -> Verdict:
    """Whether to accept an invite: only from an owner."""
    if invite.inviter not in owners:
        return Verdict.refuse("inviter is not an owner")
    return Verdict.allow()


def may_command(message: Message, owners: frozenset[str]) -> Verdict:
    """Whether a message may become a task."""
    if message.sender not in owners:
        return Verdict.refuse("sender is not an owner")
    if not message.was_encrypted:
        return Verdict.refuse("plaintext: only end-to-end encrypted messages are obeyed")
    return Verdict.allow()
