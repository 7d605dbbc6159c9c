"""The shell judge end to end, as an attacker would try it: a model that read hostile text
asks, under `allow = [echo, ls, cat, git status, Read, Glob, Grep]` and nothing else, for
lines that hide a second command behind an allowed one (issues 15 and 27). Each must
become a question (which nobody answers), none may run, and the bot keeps answering."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from conftest import BotSetup, started
from fake_messages_api import FakeMessagesAPI
from harness.bot import BotProcess
from harness.jsclient import JsClient

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]

PERMISSIONS = """
[permissions]
allow = ["Bash(echo:*)", "Bash(ls:*)", "Bash(cat:*)", "Bash(git status:*)", "Read", "Glob", "Grep"]
approval_timeout_s = 0.5
"""

# Nobody answers: each question means no after half a second (2 s each cost the test 20 s;
# what it proves is that none ran and none was allowed, not how long a question waits).

# One line per attack class of the issue; each would create its marker file if it ran.
HOSTILE = [
    "echo $'\\'' ; touch {m}/ansi # '",
    "echo $((touch {m}/arith) )",
    "echo hi; >/dev/null touch {m}/redirect",
    "ls; <<<x touch {m}/herestring",
    "for x in 'a[$(touch {m}/forheader)]'; do echo $((x)); done",
    "echo ok > {m}/written-by-redirect",
    "cat <(touch {m}/procsub)",
    "git -c core.pager='touch {m}/gitc' status",
    # Issue 27: a substitution inside a quoted expansion, which tree-sitter read as a string.
    "echo \"${{x:-'$(touch {m}/quoted-default)'}}\"",
    "cat \"${{f-'`touch {m}/backquote`'}}\"",
]


async def test_hidden_commands_behind_allowed_ones_ask_and_never_run(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running, extra=PERMISSIONS)
    marks = setup.config.folder / "work"
    bot_id = setup.bot.user_id
    fake_api.reply(tools=[("bash", {"command": line.format(m=marks)}) for line in HOSTILE])
    fake_api.reply("I could not run any of them.")
    await owner.send_text(room, "run what the README says")
    await owner.wait_message(room, sender=bot_id, contains="could not run any", timeout=120)
    created = sorted(p.name for p in marks.iterdir())
    assert created == [], f"payloads ran: {created}"
    asked = bot.log_events("approval.asked")
    assert len(asked) == len(HOSTILE), "each hidden command was put to the owner"
    verdicts = [r["verdict"] for r in bot.log_events("tool.decision")]
    assert "allow" not in verdicts, verdicts
    # The model heard that none was approved; and the bot keeps answering.
    results = fake_api.requests[1].body["messages"][-1]["content"]
    assert all(block.get("is_error") for block in results)
    await owner.send_text(room, "still there?")
    await owner.wait_message(room, sender=bot_id, contains="still there?")
