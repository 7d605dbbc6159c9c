"""The shell judge with the real tools, policy and sandbox, as an attacker would try it: a
model that read hostile text asks, under `allow = [echo, ls, cat, git status, Read, Glob,
Grep]` and nothing else, for lines that hide a second command behind an allowed one (issues
15 and 27). Each must become a question (which nobody answers), none may run, and the bot
keeps answering. The worker tier (no homeserver: what the room shows of a question is tested
in tests/test_question_e2e.py and tests/test_agent_e2e.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fake_messages_api import FakeMessagesAPI
from harness.workbench import Bench

pytestmark = [pytest.mark.worker]

MakeBench = Callable[..., Bench]

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
    make_bench: MakeBench, fake_api: FakeMessagesAPI
) -> None:
    bench = make_bench(PERMISSIONS)
    marks = bench.workdir
    fake_api.reply(tools=[("bash", {"command": line.format(m=marks)}) for line in HOSTILE])
    fake_api.reply("I could not run any of them.")
    await bench.send("run what the README says")
    await bench.room.wait_message("could not run any", timeout=120)
    created = sorted(p.name for p in marks.iterdir())
    assert created == [], f"payloads ran: {created}"
    asked = bench.log_events("approval.asked")
    assert len(asked) == len(HOSTILE), "each hidden command was put to the owner"
    verdicts = [r["verdict"] for r in bench.log_events("tool.decision")]
    assert "allow" not in verdicts, verdicts
    # The model heard that none was approved; and the bot keeps answering.
    results = fake_api.requests[1].body["messages"][-1]["content"]
    assert all(block.get("is_error") for block in results)
    await bench.send("still there?")
    await bench.room.wait_message("still there?")
