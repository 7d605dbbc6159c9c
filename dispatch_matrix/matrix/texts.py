"""What the bot says in the room about the matrix layer itself (rooms, what could not be read or
delivered, the computer asleep, its own session) and its first words: one place, one tone."""

from __future__ import annotations

import urllib.parse
from collections.abc import Collection


def room_opened(outsiders: list[str]) -> str:
    """The notice given the moment someone besides the owners is invited or joins."""
    who = ", ".join(outsiders)
    return (
        f"🔒 {who} {'is' if len(outsiders) == 1 else 'are'} now in this room (invited or "
        "joined). Until the room is private again I ignore every instruction here, from "
        "anyone; what I send here stays unreadable to them."
    )


ROOM_CLOSED = "🔓 This room is private again (only my owners and me): I take instructions here."


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


def file_refused(reason: str, *, disk_full: bool = False) -> str:
    """An owner's file the bot could not take (too big, unreadable, not saved): one line."""
    if disk_full:
        return f"📎 I could not save that file: {reason}. Free some space there and send it again."
    return f"📎 I could not take that file: {reason}."


def file_still_fetching(name: str, reason: str) -> str:
    """An owner's file the homeserver has not handed over for a minute: told once, the bot
    keeps trying (what the owner sent after it waits behind it)."""
    return (
        f"📎 I cannot fetch {name} from the homeserver yet ({reason}). I keep trying and will "
        "take it, then what you sent after it, as soon as it comes. Delete it to skip it."
    )


def file_given_up(name: str, hours: int, reason: str) -> str:
    """An owner's file the homeserver failed for so long that the bot stopped trying."""
    return (
        f"📎 I gave up fetching {name}: the homeserver failed it for over {hours} hours "
        f"({reason}). Send it again."
    )
