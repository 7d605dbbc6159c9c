"""What reading a git config a shell call may have written can cost the daemon.

A call may `git init` a repository in a root and write its `.git/config`; the wall reads it
(and what it includes) before every later call and at every write of the file tools.
Review 3: an include of a named pipe held each later call 10 s per pipe (git waits on the
pipe until the timeout); a huge include was listed into the daemon's memory; thousands of
includes each started a git.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from dispatch_matrix.sandbox import gitconfig
from dispatch_matrix.sandbox.gitconfig import MAX_CONFIG_BYTES, MAX_CONFIGS, config_named


@pytest.fixture
def git_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The config files git was asked to list (the memo emptied, so each is read anew)."""
    monkeypatch.setattr(gitconfig, "_memo", {})
    runs: list[str] = []
    real = subprocess.run

    def recording(argv: list[str], **kwargs: Any) -> Any:
        runs.append(argv[argv.index("--file") + 1])
        return real(argv, **kwargs)

    monkeypatch.setattr(gitconfig.subprocess, "run", recording)
    return runs


def test_an_included_named_pipe_is_not_read(tmp_path: Path, git_runs: list[str]) -> None:
    os.mkfifo(tmp_path / "pipe")
    config = tmp_path / "config"
    config.write_text("[include]\n\tpath = pipe\n[core]\n\thooksPath = /elsewhere/hooks\n")
    found = {n.path for n in config_named(tmp_path / "home", [(config, [])])}
    # Both are still named (the pipe is kept read-only like any include)...
    assert found == {PurePosixPath(tmp_path / "pipe"), PurePosixPath("/elsewhere/hooks")}
    # ...but git was never pointed at the pipe (it waited there for the 10 s timeout).
    assert git_runs == [str(config)]


def test_a_config_larger_than_any_real_one_is_not_listed(
    tmp_path: Path, git_runs: list[str]
) -> None:
    big = tmp_path / "big"
    line = "[core]\n\thooksPath = /planted\n"
    big.write_text(line * (MAX_CONFIG_BYTES // len(line) + 1))
    small = tmp_path / "small"
    small.write_text(line)
    assert gitconfig.entries_of(big) == []
    assert gitconfig.entries_of(small) == [("core.hookspath", "/planted")]
    assert git_runs == [str(small)]


def test_a_long_include_chain_is_bounded_per_config(tmp_path: Path, git_runs: list[str]) -> None:
    """A config a call wrote includes 300 files: at most MAX_CONFIGS are read, and the
    owner's home config, given first, still has its include read in full."""
    planted = tmp_path / "repo-config"
    lines = ["[include]"]
    for n in range(300):
        (tmp_path / f"inc{n}").write_text(f"[alias]\n\tx{n} = !/bin/true\n")
        lines.append(f"\tpath = inc{n}")
    planted.write_text("\n".join(lines) + "\n")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[include]\n\tpath = ~/team.gitconfig\n")
    (home / "team.gitconfig").write_text("[core]\n\thooksPath = /team/hooks\n")
    found = {
        n.path
        for n in config_named(home, [(home / ".gitconfig", []), (planted, [tmp_path / "repo"])])
    }
    assert PurePosixPath("/team/hooks") in found
    assert len(git_runs) <= 2 + MAX_CONFIGS
    # Read in the order git reads them: the first includes are the ones named.
    assert PurePosixPath(tmp_path / "inc0") in found
