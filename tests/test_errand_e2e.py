"""The headline errand, end to end: "review the PRs waiting in the repo, run the tests,
save the review as Reviews/pr-review-DATE.md with failures at the top, message me the
summary" — a real git repository, real pytest runs through the bash tool, a scripted model
that reads the real tool output, Synapse and a strict js client on the phone side."""

from __future__ import annotations

import datetime
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import BotSetup, beside_bot_start
from fake_messages_api import FakeMessagesAPI
from harness.bot import BotProcess
from harness.jsclient import JsClient

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
        env={
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@x",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@x",
            "PATH": "/usr/bin:/bin",
            "HOME": str(repo),
        },
    ).stdout


def fixture_repo(root: Path) -> Path:
    """A project with two branches waiting for review: one green, one with a failing test."""
    repo = root / "Projects" / "myapp"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (repo / "test_calc.py").write_text(
        "from calc import add\n\ndef test_add():\n    assert add(2, 3) == 5\n"
    )
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "calc")
    git(repo, "checkout", "-qb", "pr/docs")
    (repo / "README.md").write_text("# calc\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "docs")
    git(repo, "checkout", "-q", "main")
    git(repo, "checkout", "-qb", "pr/fast-add")
    (repo / "calc.py").write_text("def add(a, b):\n    return a * b\n")
    git(repo, "commit", "-qam", "faster add")
    git(repo, "checkout", "-q", "main")
    return repo


def last_results(body: dict[str, Any]) -> list[str]:
    """The text of the tool results the model is reading now."""
    out = []
    for block in body["messages"][-1]["content"]:
        if block.get("type") == "tool_result":
            content = block["content"]
            out.append(
                content
                if isinstance(content, str)
                else "".join(part.get("text", "") for part in content)
            )
    return out


async def test_the_pr_review_errand(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup = make_bot()
    work = setup.config.folder / "work"
    repo = fixture_repo(work)
    reviews = work / "Reviews"
    reviews.mkdir()
    python = sys.executable
    setup.config.extra = (
        "[permissions]\n"
        # `git checkout` runs hooks, so `Bash(git:*)` alone covers only git's read-only
        # subcommands: the owner names it, and the options a wildcard rule lets through
        # (`-q`; pytest's `-p`, which can load any plugin) are spelled out.
        f'allow = ["Bash(git:*)", "Bash(git checkout -q:*)", "Bash(cd:*)",'
        f' "Bash({python} -m pytest -q -p no:cacheprovider:*)", "Bash(tail:*)",'
        f' "Read", "Write({reviews}/**)"]\n'
    )
    setup.config.write()
    bot = setup.process()
    running.append(bot)
    owner = await beside_bot_start(bot, owner_client(setup.owner))
    room = await owner.create_dm(setup.bot.user_id)
    await owner.wait_join(room, setup.bot.user_id)

    date = datetime.date.today().isoformat()
    review_path = reviews / f"pr-review-{date}.md"
    seen: dict[str, str] = {}

    def run_tests(body: dict[str, Any]) -> dict[str, Any]:
        lines = [line.strip(" *") for line in last_results(body)[0].splitlines()]
        branches = [line for line in lines if line.startswith("pr/")]
        seen["branches"] = ",".join(branches)
        calls = [
            {
                "type": "tool_use",
                "name": "bash",
                "input": {
                    "command": f"cd {repo} && git checkout -q {b} && {python} -m pytest -q -p "
                    f"no:cacheprovider 2>&1 | tail -3; git checkout -q main"
                },
            }
            for b in branches
        ]
        return {"content": [{"type": "text", "text": "Running the tests."}, *calls]}

    def write_review(body: dict[str, Any]) -> dict[str, Any]:
        outputs = last_results(body)
        branches = seen["branches"].split(",")
        failing = [b for b, out in zip(branches, outputs, strict=True) if "failed" in out]
        passing = [b for b in branches if b not in failing]
        seen["failing"] = ",".join(failing)
        seen["outputs"] = repr(outputs)
        text = "# PR review " + date + "\n\n"
        text += "".join(f"**FAILING: {b}** — tests fail\n" for b in failing)
        text += "".join(f"- {b}: tests pass, no lint issues\n" for b in passing)
        return {
            "content": [
                {
                    "type": "tool_use",
                    "name": "write",
                    "input": {"file_path": str(review_path), "content": text},
                }
            ]
        }

    def summary(body: dict[str, Any]) -> dict[str, Any]:
        return {
            "content": [
                {
                    "type": "text",
                    "text": (
                        f"⚠️ Failing: {seen['failing']}. The rest pass. "
                        f"Review saved to {review_path}."
                    ),
                }
            ]
        }

    fake_api.script(
        {
            "content": [
                {
                    "type": "tool_use",
                    "name": "bash",
                    "input": {"command": f"cd {repo} && git branch --list"},
                }
            ]
        },
        run_tests,
        write_review,
        summary,
    )
    await owner.send_text(
        room,
        f"Review the pull requests in {repo} that are waiting for review; for each, run the "
        f"test suite; write a summary; save the review as {reviews}/pr-review-[DATE].md; "
        "message me the summary; flag failing tests at the top.",
    )
    answer = await owner.wait_message(
        room, sender=setup.bot.user_id, contains="Review saved", timeout=120
    )
    # What the model read, named when it was not what a review needs (a fresh machine once
    # answered "Failing: ." here, with nothing to say why).
    assert seen.get("branches") == "pr/docs,pr/fast-add", seen
    assert seen.get("failing") == "pr/fast-add", seen
    assert "Failing: pr/fast-add" in answer["body"]
    review = review_path.read_text()
    assert review.splitlines()[2] == "**FAILING: pr/fast-add** — tests fail"
    assert "pr/docs: tests pass" in review
    assert git(repo, "branch", "--show-current").strip() == "main"
    assert answer["was_encrypted"] and not answer["decryption_failed"]
