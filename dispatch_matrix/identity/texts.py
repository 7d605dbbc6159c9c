"""What the bot says in the room about whom it obeys (the trust gate, owners' identities,
messages held while an identity is not trusted): one place, one tone."""

from __future__ import annotations

PLAINTEXT_IGNORED = (
    "🔒 I only take instructions sent with end-to-end encryption, so I ignored that "
    "message. Turn encryption on for this room (it is on by default in a new DM)."
)


ROOM_NOT_PRIVATE = (
    "🔒 Someone besides my owners is in this room, so I stopped taking instructions here. "
    "Remove them (or open a new DM with me) and I will continue; the operator can also allow "
    "this room in the config."
)


def unverified_device(reason: str) -> str:
    """The owner wrote from a device the bot does not trust."""
    return (
        f"🔒 I ignored that message: {reason}. Verify this session from one of your other "
        "devices (Settings → Sessions → Verify), then send it again."
    )


def identity_changed(user_id: str, fingerprint: str, held: str) -> str:
    """An owner's cross-signing identity is not the one the bot pinned; `held` is the start
    of the message it holds (sent so that this very device can read it)."""
    return (
        f"⚠️ {user_id}'s cryptographic identity has changed since I first met it (new key "
        f"{fingerprint}), so I stopped obeying it. If you reset your identity yourself, "
        f"confirm it on the computer I run on: `dispatch-matrix trust {user_id}`. I am holding "
        f"your message {held} (and any you send until then): it runs once you do."
    )


def identity_changed_vote(user_id: str) -> str:
    """A vote from an owner's identity the bot has not trusted (not held: a vote answers
    a question that may be gone by then)."""
    return (
        f"⚠️ {user_id}'s cryptographic identity has changed since I first met it, so I stopped "
        "obeying it. If you reset your identity yourself, confirm it on the computer I run "
        f"on: `dispatch-matrix trust {user_id}`."
    )


def held_named(previews: list[str]) -> str:
    """Held messages that can no longer run (another identity was trusted, or too old)."""
    return (
        "🔒 I held these while your identity was not trusted: "
        + ", ".join(previews)
        + ". I did not run them; send again what you still want."
    )
