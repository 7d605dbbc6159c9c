"""Local sockets that hand a shell call more than the sandbox allows, for the wall to hide.

A unix socket is reached by its path, and a read-only mount does not stop a `connect`
(attack review 3, measured with bubblewrap: a socket under the home answered from a sandbox
with the network off). Behind one may be a key agent that signs as the owner (1Password's,
Bitwarden's), a container engine that is root on the host (Docker Desktop, Colima, Lima,
Rancher Desktop), a terminal multiplexer or a terminal that types or runs commands in the
owner's session (`screen -X stuff`, kitty's, WezTerm's and Alacritty's remote control,
neovim's `--remote-send`, i3's and sway's `exec`). The user's runtime folder (`/run/user/UID`)
and `/tmp` are hidden or private already; these lie elsewhere.

Two sources, both data: the folders where such programs keep their sockets (`SOCKET_HOMES`,
`SOCKET_FOLDERS`), and every socket the daemon's own environment names (`SSH_AUTH_SOCK`,
`DBUS_SESSION_BUS_ADDRESS`, `TMUX`, `KITTY_LISTEN_ON`, … whatever the variable: each value
that names an existing socket is hidden, so a program this list does not know is covered
when its variable is set).
"""

from __future__ import annotations

import re
import stat
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

# Under the home folder.
SOCKET_HOMES: tuple[str, ...] = (
    ".1password",
    ".bitwarden-ssh-agent.sock",
    ".docker/desktop",
    ".docker/run",
    ".colima",
    ".lima",
    ".rd",
    ".orbstack/run",
    ".local/share/containers/podman/machine",
    # screen's sockets when SCREENDIR points there; `screen -X stuff` types into a session.
    ".screen",
)

# Anywhere: screen's default socket folders (not under /run/user).
SOCKET_FOLDERS: tuple[str, ...] = ("/run/screen", "/var/run/screen")

# How a value may spell a socket's path: `unix:path=/x,guid=…` (D-Bus), `unix:///x`
# (Docker), `unix:/x` (kitty), `/x,pid,index` (tmux), lists joined by `;` or `:`.
_PREFIX = re.compile(r"^(unix:path=|unix://|unix:)")
_SEPARATORS = re.compile(r"[;,:]")


def candidates(value: str) -> list[PurePosixPath]:
    """The absolute paths a variable's value may name a socket by. Pure."""
    found: list[PurePosixPath] = []
    for address in value.split(";"):
        address = _PREFIX.sub("", address.strip())
        # `unix:path=/x,guid=…`: the path ends at the first `,`; `/a:/b`: a list.
        for part in _SEPARATORS.split(address):
            part = part.strip()
            if part.startswith("/") and not part.startswith("//") and "\x00" not in part:
                found.append(PurePosixPath(part))
    return list(dict.fromkeys(found))


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except (OSError, ValueError):
        return False


def env_sockets(
    env: Mapping[str, str], is_socket: Callable[[Path], bool] = _is_socket
) -> list[Path]:
    """Every existing unix socket a variable of `env` names (`WAYLAND_DISPLAY`, a name in
    `XDG_RUNTIME_DIR`, included)."""
    found: list[Path] = []
    runtime = env.get("XDG_RUNTIME_DIR", "")
    for name, value in env.items():
        paths = candidates(value)
        if name == "WAYLAND_DISPLAY" and runtime and not value.startswith("/"):
            paths.append(PurePosixPath(runtime) / value)
        found += [Path(p) for p in paths if is_socket(Path(p))]
    return list(dict.fromkeys(found))


def socket_paths(home: Path, env: Mapping[str, str]) -> list[Path]:
    """What to hide: the known socket folders and every socket the environment names."""
    return [
        *(home / p for p in SOCKET_HOMES),
        *(Path(p) for p in SOCKET_FOLDERS),
        *env_sockets(env),
    ]


_LOOPBACK_NAMES = frozenset({"localhost", "::1", "0.0.0.0", "::"})


def loopback_without_token(servers: Mapping[str, tuple[str, bool]]) -> list[str]:
    """The MCP servers (name → their URL, whether the config sends them headers) that
    listen on this machine's loopback with nothing to prove the caller: with the network on,
    a shell call reaches them too and may call their tools without the rules. Pure."""
    found: list[str] = []
    for name, (url, has_headers) in servers.items():
        try:
            host = (urlsplit(url).hostname or "").casefold()
        except ValueError:
            continue
        local = host in _LOOPBACK_NAMES or host.startswith("127.") or host.endswith(".localhost")
        if local and not has_headers:
            found.append(name)
    return found
