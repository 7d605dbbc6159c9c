"""Issue 27's critical attacks through the real path: Policy → ToolCalls → BashTool under
bubblewrap. With broad allow rules (`Bash(echo:*)`, `Bash(sed -n:*)`, `Bash(make test:*)`,
…) each hostile line must be put to the owner, who says no, and its proof file must not
exist afterwards. The control: the same line, approved, does create the file, so the
payload is real and "not created" means the door held."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness.taskio import FakeTaskIO

from dispatch_matrix.agent.calls import ToolCalls
from dispatch_matrix.agent.ports import Approval
from dispatch_matrix.permissions.policy import Policy
from dispatch_matrix.sandbox.host import Confinement
from dispatch_matrix.toolbox.base import ToolContext
from dispatch_matrix.toolbox.registry import ToolRegistry
from dispatch_matrix.toolbox.shell import BashTool

ALLOW = [
    "Bash(echo:*)", "Bash(printf:*)", "Bash(cat:*)", "Bash(ls:*)", "Bash(sed -n:*)",
    "Bash(make test:*)", "Bash(git log:*)", "Bash(find:*)", "Bash(awk:*)", "Bash(git diff:*)",
]  # fmt: skip

# Each line creates {m}/<name> if it runs; the name is the line's id.
HOSTILE = {
    "default-in-quotes": "echo \"${{x:-'$(touch {m}/default-in-quotes)'}}\"",
    "unset-backquote": "echo \"${{x-'`touch {m}/unset-backquote`'}}\"",
    "alternate": "echo \"${{HOME:+'$(touch {m}/alternate)'}}\"",
    "assign-default": "echo \"${{x:='$(touch {m}/assign-default)'}}\"",
    "nested": 'echo "${{x:-"${{y:-\'$(touch {m}/nested)\'}}"}}"',
    "printf": "printf %s \"${{x-'$(touch {m}/printf)'}}\"",
    "sed-e": "sed -n -- '1e touch {m}/sed-e' {m}/f",
    "sed-w": "sed -n 'w {m}/sed-w' {m}/f",
    "sed-label": "sed -n 'b x w {m}/sed-label\n:x' {m}/f",
    "make-eval": "make test -C {m} --eval='x:=$(shell touch {m}/make-eval)'",
    "make-shell": "make test -f {m}/Makefile SHELL={m}/prog",
    "git-output": "git log --output={m}/git-output -1",
    "find-fprint": "find {m} -maxdepth 0 -fprint {m}/find-fprint",
    # find ends only its leading options at `--`; git's `-U` takes only an attached value.
    "find-dashdash": "find -- {m} -maxdepth 0 -exec touch {m}/find-dashdash \\;",
    "git-diff-u": "git diff -U --output={m}/git-diff-u",
    "awk-system": "awk 'BEGIN{{system(\"touch {m}/awk-system\")}}'",
    "redirect": "echo x > {m}/redirect",
}
# The payloads above that a sandboxed bash runs when approved (the control).
CONTROLS = [
    "default-in-quotes",
    "unset-backquote",
    "alternate",
    "nested",
    "sed-e",
    "sed-w",
    "redirect",
    "find-dashdash",
    "git-diff-u",
]


def machine(tmp_path: Path) -> tuple[Path, ToolContext, Policy]:
    home = tmp_path / "home"
    work = home / "work"
    work.mkdir(parents=True)
    (work / "f").write_text("a line\n")
    (work / "Makefile").write_text("test:\n\t@true\n")
    (work / "prog").write_text("#!/bin/sh\ntouch " + str(work / "make-shell") + "\n")
    (work / "prog").chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    ctx = ToolContext(workdir=work, allowed_roots=(work,), bash_timeout_s=60, env=env)
    return work, ctx, Policy(ALLOW, [], [], home, work)


async def run(bwrap: Confinement, tmp_path: Path, line: str, answer: Approval) -> Any:
    work, ctx, policy = machine(tmp_path)
    calls = ToolCalls(None, policy, ToolRegistry([BashTool(bwrap)]), ctx)  # type: ignore[arg-type]
    owner = FakeTaskIO(answer)
    use = {"id": "t1", "name": "bash", "input": {"command": line.format(m=work)}}
    block = await calls.run(use, owner, 1, 1)  # type: ignore[arg-type]
    return work, owner, block


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_a_hostile_line_is_asked_and_does_not_run(
    bwrap: Confinement, tmp_path: Path, name: str
) -> None:
    work, owner, block = await run(bwrap, tmp_path, HOSTILE[name], Approval.NO)
    assert len(owner.asked) == 1, "the line was put to the owner"
    assert owner.asked[0].verdict == "ask"
    assert owner.asked[0].uncovered, "the question names what made it ask"
    assert block["is_error"]
    assert not (work / name).exists(), f"{name} ran without a question"


@pytest.mark.parametrize("name", CONTROLS)
async def test_the_same_line_approved_runs_so_the_payload_is_real(
    bwrap: Confinement, tmp_path: Path, name: str
) -> None:
    work, owner, _ = await run(bwrap, tmp_path, HOSTILE[name], Approval.YES)
    assert len(owner.asked) == 1
    assert (work / name).exists(), f"the {name} payload did not run even when approved"


async def test_an_ordinary_line_runs_without_a_question(bwrap: Confinement, tmp_path: Path) -> None:
    work, owner, block = await run(bwrap, tmp_path, "sed -n '1p' {m}/f && ls", Approval.NO)
    assert owner.asked == []
    assert not block.get("is_error")
    assert "a line" in str(block["content"])
