"""What the bot says in the room about trust and rooms: one place, one tone."""

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


def identity_changed(user_id: str) -> str:
    """An owner's cross-signing identity is not the one the bot pinned."""
    return (
        f"⚠️ {user_id}'s cryptographic identity has changed since I first met it, so I stopped "
        "obeying it. If you reset your identity yourself, confirm it on the computer I run "
        f"on: `dispatch-matrix trust {user_id}`."
    )


def unreadable(when: str) -> str:
    """A message whose keys never arrived."""
    return (
        f"🔒 I could not decrypt your message from {when}: its encryption keys never reached "
        "me. Nothing was done with it; please send it again."
    )


def device_replaced(old: str, new: str) -> str:
    """The bot lost its crypto store and now speaks from a new device."""
    return (
        f"🔑 I lost my encryption store and now use a new session ({new}); the old one "
        f"({old}) is deleted. Messages sent to the old session while I was away could not be "
        "read; I tell you about each of them. Verify my new session if your app asks."
    )


def sandbox_off() -> str:
    """The operator set agent.sandbox = "none": said once in each room."""
    return (
        "⚠️ My shell commands run without the OS sandbox on this computer "
        '(`agent.sandbox = "none"` in my config): a command can read every file this user '
        "can, my own state and your credentials included. Only the permission rules stand "
        "in its way. Turn the sandbox back on unless you have a reason."
    )
