"""What the wall covers, as data: what no shell call may see and what none may change even
inside an allowed root (DESIGN.md §8). The decisions made from these tables are in `wall.py`.

- `HIDDEN_IN_HOME`: credential stores (the control plane, every secret file the config
  marks, comes from `config_sections.secret_files`, not from a list).
- `READONLY_IN_HOME`: what runs later outside the sandbox: shell start-up files, service and
  autostart folders, the PATH folders a login adds, editor and agent settings.
- `READONLY_IN_TREE`: per root, per workdir and per repository found in them: `.git/hooks`,
  `.git/config`, editor and agent folders. Also the daemon's own installation
  (`wall.installation_paths`).
- `LAUNCHER_CACHES`: where the launchers of MCP servers keep the code they run.

bubblewrap can mount only over what exists. A missing `Guard` inside a writable root is
either created empty first (`placeholder`: only folders whose empty form acts as none does,
such as `~/.config/autostart` or `.git/hooks`), so the mask has a place to sit; or watched:
what a call creates there is moved aside after the call (`quarantine` in `guards.py`),
before anything outside the sandbox runs it. Files are never created empty: an empty
`.bash_profile` would stop bash from reading `.profile`, an empty `.vimrc` would hide vim's
defaults, and the home would fill with empty dotfiles.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Guard:
    """A path the wall covers, relative to the home folder or to a tree."""

    path: str
    is_dir: bool
    # Whether an empty one behaves as a missing one does, so that it may be created.
    placeholder: bool = True


def _dirs(*paths: str, placeholder: bool = True) -> tuple[Guard, ...]:
    return tuple(Guard(p, True, placeholder) for p in paths)


def _files(*paths: str, placeholder: bool = False) -> tuple[Guard, ...]:
    return tuple(Guard(p, False, placeholder) for p in paths)


# Credentials: hidden from every shell call and refused to every file tool, whatever the
# roots and the rules say (`Read(~/**)` included). Anthropic's sandbox-runtime and Codex
# keep the same idea; the entries are ours.
HIDDEN_IN_HOME: tuple[Guard, ...] = (
    *_dirs(
        ".ssh",
        ".aws",
        ".gnupg",
        ".kube",
        ".config/gh",
        ".config/hub",
        ".local/share/keyrings",
        ".password-store",
        ".config/gcloud",
        ".azure",
        # Agents' own logins and settings (a planted hook there runs with the next session).
        ".claude",
        ".config/claude",
        ".codex",
        ".gemini",
        ".config/op",
        ".config/rclone",
        ".config/doctl",
        ".config/sops",
        ".config/hcloud",
        ".config/netlify",
        ".wrangler",
        # Browser profiles: their cookies are logged-in sessions.
        ".mozilla",
        ".config/google-chrome",
        ".config/chromium",
        ".config/BraveSoftware",
        # The service's env file (`install-service` puts ANTHROPIC_API_KEY there).
        ".config/dispatch-matrix",
        "Library/Keychains",
        # Attack review: more logins and keys. Deploy and cloud tools' tokens, a wallet's
        # key, the Copilot token, chat and mail clients' sessions (Element's is a Matrix
        # login), browsers installed as snaps or flatpaks (Ubuntu's default Firefox).
        ".fly",
        ".pulumi",
        ".config/pulumi",
        ".config/configstore",
        ".config/github-copilot",
        ".config/glab-cli",
        ".config/heroku",
        ".config/stripe",
        ".config/doppler",
        ".local/share/com.vercel.cli",
        ".oci",
        ".kaggle",
        ".config/ngrok",
        ".ngrok2",
        ".config/solana",
        ".ethereum",
        ".bitcoin",
        ".electrum",
        ".config/filezilla",
        ".config/remmina",
        ".local/share/remmina",
        ".vnc",
        ".pki",
        ".local/share/kwalletd",
        ".config/keybase",
        ".config/Slack",
        ".config/discord",
        ".config/Signal",
        ".config/Element",
        ".local/share/TelegramDesktop",
        ".thunderbird",
        ".config/microsoft-edge",
        ".config/vivaldi",
        ".config/opera",
        "snap/firefox",
        "snap/chromium",
        ".var/app/org.mozilla.firefox",
        ".var/app/com.google.Chrome",
        ".var/app/org.chromium.Chromium",
        # Shell history kept as a database (atuin), and neovim's registers and history.
        ".local/share/atuin",
        ".local/state/nvim/shada",
        placeholder=False,
    ),
    *_files(
        ".netrc",
        ".git-credentials",
        ".config/git/credentials",
        ".docker/config.json",
        ".npmrc",
        ".pypirc",
        ".pgpass",
        ".my.cnf",
        ".s3cfg",
        ".boto",
        ".cargo/credentials",
        ".cargo/credentials.toml",
        ".vault-token",
        ".terraform.d/credentials.tfrc.json",
        # Red team: more stores of tokens and passwords.
        ".config/containers/auth.json",
        ".m2/settings.xml",
        ".gradle/gradle.properties",
        ".yarnrc.yml",
        ".cache/huggingface/token",
        ".huggingface/token",
        ".config/composer/auth.json",
        ".composer/auth.json",
        ".terraformrc",
        # Shell and REPL histories: a token typed or pasted once stays there.
        ".bash_history",
        ".zsh_history",
        ".python_history",
        ".psql_history",
        ".mysql_history",
        ".local/share/fish/fish_history",
        ".histfile",
        ".zhistory",
        ".sh_history",
        ".node_repl_history",
        ".rediscli_history",
        ".sqlite_history",
        ".irb_history",
        ".lesshst",
        ".viminfo",
        ".Rhistory",
        ".dbshell",
        ".julia/logs/repl_history.jl",
        ".ipython/profile_default/history.sqlite",
        "_netrc",
        ".databrickscfg",
        ".sentryclirc",
        # The X server's cookie: with it a call reaching the display (its abstract socket is
        # shared when the network is) types into the owner's terminal.
        ".Xauthority",
        ".ICEauthority",
    ),
    *_files(".claude.json"),
)

# Run later, outside the sandbox: read-only to every shell call even inside a root.
READONLY_IN_HOME: tuple[Guard, ...] = (
    *_files(
        ".bashrc",
        ".profile",
        ".bash_logout",
        ".zshrc",
        ".zshenv",
        ".zprofile",
        ".zlogin",
        ".zlogout",
        ".pam_environment",
        ".xprofile",
        ".xsessionrc",
        ".gitconfig",
        ".curlrc",
        ".wgetrc",
        ".bash_profile",
        ".bash_login",
        ".inputrc",
        ".xinitrc",
        ".xsession",
        ".vimrc",
        ".emacs",
        # Debian's and Fedora's .bashrc source it; tmux runs its `run-shell` lines.
        ".bash_aliases",
        ".tmux.conf",
        # Run by the next build outside (`build.rustc-wrapper`).
        ".cargo/config.toml",
        ".cargo/config",
        # Attack review. Sourced by the start-up files that toolchain and prompt installers
        # write into them (rustup's `. "$HOME/.cargo/env"`, fzf, powerlevel10k, Deno, ghcup),
        # or by bash-completion and direnv at every shell start.
        ".cargo/env",
        ".deno/env",
        ".ghcup/env",
        ".rye/env",
        ".elan/env",
        ".fzf.bash",
        ".fzf.zsh",
        ".p10k.zsh",
        ".bash_completion",
        ".direnvrc",
        ".config/starship.toml",
        # Other shells' start-up files.
        ".kshrc",
        ".mkshrc",
        ".shrc",
        ".cshrc",
        ".tcshrc",
        ".login",
        ".logout",
        ".xonshrc",
        # less reads LESSOPEN (a command) from its `#env` section at every start, and less
        # is git's and man's pager.
        ".lesskey",
        ".config/lesskey",
        # Programs that run commands from their start-up file: psql `\!`, sqlite `.shell`,
        # gdb and lldb `shell`, irb, pry, R, ghci, screen, the X session and key bindings.
        ".psqlrc",
        ".sqliterc",
        ".gdbinit",
        ".lldbinit",
        ".irbrc",
        ".pryrc",
        ".Rprofile",
        ".ghci",
        ".screenrc",
        ".wezterm.lua",
        ".gvimrc",
        ".exrc",
        ".spacemacs",
        ".xbindkeysrc",
        ".Xclients",
        ".xserverrc",
        ".mailcap",
        # Run by the next build or install outside: mvn sources `.mavenrc`, a Gradle init
        # script runs in every build, `yarn-path` runs a file, other package indexes.
        ".mavenrc",
        ".gradle/init.gradle",
        ".sbtrc",
        ".yarnrc",
        ".condarc",
        ".gemrc",
        ".bunfig.toml",
        # Version control that runs hooks and diff tools from the user's config.
        ".hgrc",
        # Review of the shell's wall: the local mail system pipes the owner's mail to the
        # program a `|command` line there names; python runs the file PYTHONSTARTUP names
        # (these two are its usual names; the variable's own value is guarded too,
        # `wall.environment_files`) at every interactive start.
        ".forward",
        ".pythonrc",
        ".pythonrc.py",
    ),
    *_dirs(
        ".config/git",
        ".config/fish",
        ".config/autostart",
        ".config/systemd",
        ".config/environment.d",
        ".local/share/applications",
        # On the PATH of the next login (Debian's .profile adds it): a planted `ls` would win.
        ".local/bin",
        ".vscode",
        # Fedora's .bashrc sources every file in it.
        ".bashrc.d",
        # systemd's user units and drop-ins (`dispatch-matrix.service.d/x.conf` adds an
        # ExecStartPre to the daemon itself), and D-Bus services started on demand.
        ".local/share/systemd/user",
        ".local/share/dbus-1/services",
    ),
    *_dirs(
        "bin",
        ".config/nvim",
        ".emacs.d",
        ".config/emacs",
        ".config/Code/User",
        ".config/Cursor/User",
        ".cursor",
        ".docker/cli-plugins",
        # vim and neovim plugin folders, tmux's XDG config: loaded at every start.
        ".vim",
        ".config/vim",
        ".config/tmux",
        # The user site-packages: a `.pth` there runs at every start of the system python.
        ".local/lib",
        # On the PATH that rustup, Go, Bun and Deno add to a login, ahead of /usr/bin.
        ".cargo/bin",
        "go/bin",
        ".bun/bin",
        ".deno/bin",
        # pip's index for the next install outside.
        ".config/pip",
        ".pip",
        # Run at the next desktop login: KDE sources env/*.sh, the tiling ones `exec` lines.
        ".config/plasma-workspace",
        ".config/sway",
        ".config/i3",
        ".config/hypr",
        # Attack review. Sourced at every shell start by the lines their installers add
        # (nvm.sh, oh-my-zsh and the other zsh frameworks, SDKMAN), or on the PATH of a
        # login and holding interpreters whose site-packages and global modules run at
        # every start (pyenv, rbenv, asdf, Volta, pnpm, rustup's toolchains).
        ".nvm",
        ".oh-my-zsh",
        ".bash_it",
        ".zsh",
        ".config/zsh",
        ".zinit",
        ".local/share/zinit",
        ".antigen",
        ".zplug",
        ".sdkman",
        ".pyenv",
        ".rbenv",
        ".asdf",
        ".volta",
        ".rustup",
        ".local/share/pnpm",
        ".npm-global",
        ".yarn/bin",
        ".node_modules",
        ".node_libraries",
        ".local/share/bash-completion",
        ".config/direnv",
        ".config/nushell",
        ".config/xonsh",
        ".config/elvish",
        ".config/powershell",
        # Python code IPython and Jupyter run at every start (not only `startup/`).
        ".ipython",
        ".jupyter",
        ".julia/config",
        ".config/gdb",
        # Run by the next build or install outside.
        ".gradle/init.d",
        ".sbt",
        ".bundle",
        ".config/uv",
        ".config/pypoetry",
        # Terminals that start a configured shell or run Lua, and editors that run
        # configured language servers, plugins or tasks (lazy.nvim and mason live in
        # ~/.local/share/nvim).
        ".config/alacritty",
        ".config/kitty",
        ".config/wezterm",
        ".config/foot",
        ".config/ghostty",
        ".config/zellij",
        ".config/helix",
        ".config/zed",
        ".config/sublime-text",
        ".config/kak",
        ".config/micro",
        ".local/share/nvim",
        ".config/VSCodium/User",
        ".vscode-oss",
        ".vscode-server",
        ".config/JetBrains",
        ".local/share/JetBrains",
        ".doom.d",
        ".config/doom",
        # Desktop sessions and key bindings that run commands at login or on a key; GNOME's
        # settings database (custom key bindings, the terminal's command); podman's Quadlet
        # units, which systemd's generator turns into services at the next login.
        ".config/autostart-scripts",
        ".config/openbox",
        ".config/bspwm",
        ".config/sxhkd",
        ".config/awesome",
        ".config/qtile",
        ".xmonad",
        ".config/river",
        ".config/labwc",
        ".config/niri",
        ".config/lxsession",
        ".config/dconf",
        ".config/containers/systemd",
        ".local/share/nautilus/scripts",
        # KDE 3's and 4's autostart folders (Trinity and some Plasma 5 sessions still read
        # them): each file in them runs at the next desktop login.
        ".kde/Autostart",
        ".kde4/Autostart",
        # Version control and its extensions: hooks, diff tools, `gh` extensions.
        ".config/hg",
        ".subversion",
        ".config/jj",
        ".local/share/gh",
        # Attack review 3: package caches and tool installs whose code the owner's next
        # build, install or command runs as found, unchecked: pip's built wheels, npx's
        # packages, cargo's unpacked crates (a `build.rs`), pre-commit's hook repositories,
        # Go's and Maven's module caches, the tools pipx and uv install (linked from
        # ~/.local/bin) and uv's Pythons, Bun's and Deno's caches. pip disables a cache it
        # cannot write and goes on; the others still build from what they hold.
        ".cache/pip",
        ".npm/_npx",
        ".cargo/registry",
        ".cargo/git",
        ".cache/pre-commit",
        "go/pkg/mod",
        ".m2/repository",
        ".local/share/pipx",
        ".local/pipx",
        ".local/share/uv",
        ".bun/install/cache",
        ".cache/deno",
        placeholder=False,
    ),
)

READONLY_IN_HOME_MACOS: tuple[Guard, ...] = _dirs("Library/LaunchAgents")

# Variables of the owner's environment (the daemon inherits it, and so does every shell the
# owner opens) that name a file a program runs or obeys at its start: python runs
# PYTHONSTARTUP's at every interactive start, bash sources BASH_ENV's before every script,
# sh and dash ENV's in every interactive shell, less reads LESSOPEN commands from LESSKEY's
# and LESSKEY_SRC's. Wherever the owner put that file, it is read-only (`wall.env_files`).
STARTUP_VARIABLES: tuple[str, ...] = ("PYTHONSTARTUP", "BASH_ENV", "ENV", "LESSKEY", "LESSKEY_SRC")
# Variables that name a folder a program reads its start-up files from, with those files'
# names: zsh reads them from ZDOTDIR instead of the home.
STARTUP_FOLDER_VARIABLES: Mapping[str, tuple[str, ...]] = {
    "ZDOTDIR": (".zshenv", ".zprofile", ".zshrc", ".zlogin", ".zlogout"),
}

# Per tree (a root, the workdir, a repository in them): what a reviewed repository must not
# plant for later. `.git/hooks` only where `.git` is a folder (see `tree_paths`).
READONLY_IN_TREE: tuple[Guard, ...] = (
    *_files(".git/config"),
    *_dirs(".vscode", ".idea", ".claude", ".cursor", placeholder=False),
    *_files(".mcp.json"),
)
GIT_HOOKS = Guard(".git/hooks", True, True)
# Beside `objects/` and `refs/`, a `HEAD` makes its folder a bare repository, whose `config`
# git obeys in every folder below that is in no repository of its own. Watched at the top
# of the home and of each tree that is no repository; refused to the file tools anywhere
# outside a `.git` folder.
BARE_HEAD = Guard("HEAD", False, False)


# Where a launcher keeps the code it runs, in the home folder. An MCP server the daemon
# starts (outside the sandbox, with its tokens) as `npx -y @scope/server` or `uvx server`
# runs from there, and neither checks the files it finds there again.
LAUNCHER_CACHES: Mapping[str, tuple[str, ...]] = {
    "npx": (".npm/_npx",),
    "npm": (".npm/_npx",),
    "pnpm": (".cache/pnpm",),
    "bunx": (".bun/install/cache",),
    "bun": (".bun/install/cache",),
    "uvx": (".cache/uv", ".local/share/uv"),
    "uv": (".cache/uv", ".local/share/uv"),
    "pipx": (".local/share/pipx", ".local/pipx"),
    "deno": (".cache/deno",),
}
