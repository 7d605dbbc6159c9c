"""What the bot says in the room about trust and rooms: one place, one tone."""

from __future__ import annotations

import urllib.parse
from collections.abc import Collection

PLAINTEXT_IGNORED = (
    "🔒 I only take instructions sent with end-to-end encryption, so I ignored that "
    "message. Turn encryption on for this room (it is on by default in a new DM)."
)


def room_opened(outsiders: list[str]) -> str:
    """The notice given the moment someone besides the owners is invited or joins."""
    who = ", ".join(outsiders)
    return (
        f"🔒 {who} {'is' if len(outsiders) == 1 else 'are'} now in this room (invited or "
        "joined). Until the room is private again I ignore every instruction here, from "
        "anyone; what I send here stays unreadable to them."
    )


ROOM_CLOSED = "🔓 This room is private again (only my owners and me): I take instructions here."

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


def unreadable(when: str) -> str:
    """A message whose keys never arrived."""
    return (
        f"🔒 I could not decrypt your message from {when}: its encryption keys never reached "
        "me. Nothing was done with it; please send it again."
    )


def device_replaced(old: str, new: str, removal: str | None = None) -> str:
    """The bot lost its crypto store and now speaks from a new device; `removal` says how
    to remove the old one when the bot could not."""
    gone = (
        f"the old one ({old}) is deleted"
        if removal is None
        else f"I could not delete the old one ({old}): {removal}"
    )
    return (
        f"🔑 I lost my encryption store and now use a new session ({new}); {gone}. Messages "
        "sent to the old session while I was away could not be read; I tell you about each "
        "of them. Verify my new session if your app asks."
    )


def exemption_hint(homeserver: str, user_id: str) -> str:
    """How a Synapse admin exempts the bot from rate limits (then set send_rate_per_s = 0)."""
    path = f"/_synapse/admin/v1/users/{urllib.parse.quote(user_id)}/override_ratelimit"
    return (
        "ask the homeserver's admin to exempt the bot (Synapse admin API): "
        f"curl -X POST -H 'Authorization: Bearer <ADMIN_TOKEN>' "
        f'-d \'{{"messages_per_second": 0, "burst_count": 0}}\' {homeserver}{path} '
        "— then set send_rate_per_s = 0 under [matrix]"
    )


# -- voice messages ------------------------------------------------------------------------

VOICE_OFF = (
    '🎙️ I cannot listen to voice messages yet: set `backend = "endpoint"` and `endpoint = '
    '"http://127.0.0.1:8000"` (any OpenAI-style transcription server) under `[voice]` in my '
    "config and restart me, then `!retry`."
)
VOICE_EMPTY = (
    "🎙️ I heard no words in that voice message, so nothing was queued. Say it again, or type it."
)


def voice_failed(reason: str) -> str:
    """The backend gave no transcript; the voice message is kept for `!retry`."""
    return (
        f"🎙️ I could not transcribe that voice message: {reason}. Nothing was queued; "
        "`!retry` tries again."
    )


def voice_refused(reason: str) -> str:
    """A voice message that retrying cannot help (too big, not decryptable)."""
    return f"🎙️ I could not take that voice message: {reason}."


VOICE_RETRYING = "🔁 Listening to your voice message again…"


def sandbox_off() -> str:
    """The operator set agent.sandbox = "none": said once in each room."""
    return (
        "⚠️ My shell commands run without the OS sandbox on this computer "
        '(`agent.sandbox = "none"` in my config): a command can read every file this user '
        "can, my own state and your credentials included. Only the permission rules stand "
        "in its way. Turn the sandbox back on unless you have a reason."
    )


# -- the welcome, once per new DM ------------------------------------------------------------


def welcome(owner: str, owners: Collection[str], approval_timeout_s: float) -> str:
    """The bot's first words in a new DM with `owner` (sent once per room)."""
    minutes = max(1, round(approval_timeout_s / 60))
    others = sorted(set(owners) - {owner})
    whom = f"you ({owner})" + (f" and {', '.join(others)}" if others else "")
    return (
        "👋 Hello! I am **dispatch-matrix**, a Claude agent running on your computer. Send me "
        "a task in plain words; I queue it, work on it there, and reply to your message.\n\n"
        f"🔒 I obey only {whom}, and only encrypted messages sent from verified sessions "
        "(cross-signed by their owner). I ignore everyone else, and tell you when I ignore "
        "you.\n\n"
        "- `!cancel` stops the running task; `!pause` / `!resume` stop and restart taking "
        "tasks; `!status` says what I am doing.\n"
        "- Before anything your rules do not allow, I ask: tap the poll under the question, "
        f"or reply **yes** or **no** to it (no answer means no after {minutes} min).\n"
        "- `!help` lists every command."
    )


# Why the homeserver refused an answer for good, by its error code, for the owner.
_REFUSED_BECAUSE = {
    "M_FORBIDDEN": "I am no longer allowed to post there (removed from the room?)",
    "M_NOT_FOUND": "the room is gone",
    "M_UNKNOWN_ROOM": "the room is gone",
    "M_TOO_LARGE": "the homeserver found it too large",
}


def undeliverable(room: str, code: str | None, task: str | None, body: str) -> str:
    """An answer the homeserver refused for good in one room, given in another the owner
    is still in, with its text."""
    if code is None:
        why = "it could not be sent there, however often I tried"
    else:
        why = _REFUSED_BECAUSE.get(code, f"the homeserver refused it ({code})")
    what = f"the answer to {task}" if task else "a message"
    return f"⚠️ I could not post {what} in {room}: {why}. Here it is instead:\n\n{body}"


def asleep(after: str) -> str:
    """The notice the homeserver posts by itself when the bot has been silent for `after`
    (scheduled, encrypted, long before: it cannot say the time it went quiet, only how long
    before this message)."""
    return (
        f"💤 The computer has been quiet for {after} (asleep, off or offline). What you send "
        "now runs, in order, when it is back."
    )


def back(away: str, queued: int) -> str:
    """The notice at wake or restart after the asleep notice went out."""
    waiting = {0: "nothing is queued", 1: "1 task is queued"}.get(
        queued, f"{queued} tasks are queued"
    )
    return f"☀️ The computer is back after {away} away; {waiting}."


STOPPED = "⏹️ I was stopped. What you send now runs, in order, when I am started again."
