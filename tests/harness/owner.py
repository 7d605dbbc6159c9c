"""An owner's home with allowed roots, the tools the daemon builds for it from a config
(`build_owner`), and git run as the owner runs it outside the sandbox: the attack tables of
the wall (tests/test_wall_later.py, tests/test_wall_sockets.py) plant through these tools."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from dispatch_matrix.app.agent_kit import build_tools
from dispatch_matrix.app.config import load_config
from dispatch_matrix.sandbox.host import Confinement
from dispatch_matrix.toolbox.base import ToolContext, ToolResult
from dispatch_matrix.toolbox.registry import ToolRegistry

MARK = "PWNED"


def text(result: ToolResult) -> str:
    return "\n".join(block["text"] for block in result.content if block["type"] == "text")


class Owner:
    """A home with allowed roots in it, the tools the daemon builds for it, and git run as
    the owner runs it outside the sandbox."""

    def __init__(self, home: Path, tools: ToolRegistry, ctx: ToolContext) -> None:
        self.home = home
        self.tools = tools
        self.ctx = ctx
        # More of the owner's environment git runs with (GIT_CONFIG_GLOBAL).
        self.git_env: dict[str, str] = {}

    async def sh(self, command: str) -> str:
        return text(await self.tools.run("bash", {"command": command}, self.ctx))

    async def write(self, path: str, content: str) -> ToolResult:
        return await self.tools.run("write", {"file_path": path, "content": content}, self.ctx)

    def git(self, folder: str, *args: str) -> str:
        """git outside the sandbox, as the owner's shell or prompt runs it; its output."""
        env = {"HOME": str(self.home), "PATH": "/usr/bin:/bin", "PAGER": "cat", **self.git_env}
        done = subprocess.run(
            ["git", "-C", str(self.home / folder), *(args or ("status",))],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        return done.stdout + done.stderr

    def pwned(self) -> bool:
        return (self.home / MARK).exists()


def evil(home: Path) -> str:
    """A command git would run: it leaves MARK in the home."""
    return f"touch {home}/{MARK}"


def init_repo(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(folder)], check=True)


def build_owner(
    bwrap: Confinement, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Owner]:
    """An owner whose home holds `files` (relative path → text), repositories at `repos`,
    and whose config allows `roots` (relative to the home; the home itself by default);
    `prepare` runs on the new home first, `on_path` are folders of the home on the PATH."""

    def make(
        files: dict[str, str] | None = None,
        repos: tuple[str, ...] = ("work",),
        roots: tuple[str, ...] = ("",),
        workdir: str = "work",
        on_path: tuple[str, ...] = (),
        prepare: Callable[[Path], None] | None = None,
        network: bool = False,
    ) -> Owner:
        home = tmp_path / "home"
        home.mkdir()
        for repo in repos:
            init_repo(home / repo)
        for rel, body in (files or {}).items():
            (home / rel).parent.mkdir(parents=True, exist_ok=True)
            (home / rel).write_text(body.replace("HOME", str(home)))
        (home / workdir).mkdir(parents=True, exist_ok=True)
        for root in roots:
            (home / root).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv("HOME", str(home))
        # The daemon's PATH (the owner's): folders of the home on it, then the system's.
        search = [str(home / folder) for folder in on_path] + ["/usr/bin", "/bin"]
        monkeypatch.setenv("PATH", ":".join(search))
        monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
        if prepare is not None:
            prepare(home)
        config_path = tmp_path / "store" / "config.toml"
        config_path.parent.mkdir()
        listed = ", ".join(f'"{home / root}"' for root in roots)
        config_path.write_text(
            f"""
[matrix]
homeserver = "http://127.0.0.1:1"
user_id = "@bot:localhost"
password = "x"
owners = ["@me:localhost"]
[agent]
workdir = "{home / workdir}"
allowed_roots = [{listed}]
sandbox_network = false
[permissions]
allow = ["Read", "Write", "Edit", "Bash"]
"""
        )
        config = load_config(config_path)
        roots_paths = [home / root for root in roots]
        sandbox = replace(bwrap, network=network)
        _policy, tools, ctx = build_tools(config, home / workdir, roots_paths, sandbox=sandbox)
        env = {"PATH": ":".join(search), "HOME": str(home), "LANG": "C.UTF-8"}
        return Owner(home, tools, replace(ctx, env=env))

    return make
