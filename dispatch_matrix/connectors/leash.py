"""A stdio MCP server dies with the daemon, even when the daemon is killed with SIGKILL.

A server is told to stop by the end of its stdin, and most stop then; one that does not
notice (a busy loop, a child of its own holding the pipe) outlived a `kill -9` of the daemon
and was left running with nobody to serve, one more after every restart. On Linux the
server is started through a leash: a few lines of Python (`-I -S`: no site, nothing from
the environment) that ask the kernel for SIGTERM when the daemon dies
(PR_SET_PDEATHSIG), check the daemon did not die before that, and exec the server in
their place, so the server keeps the leash, its pid and its argv[0]. Elsewhere the command
runs as configured.

The command is looked up here, not by the leash, so a missing one is still the
FileNotFoundError a direct start gives ("command not found" in the room).
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

# argv: the daemon's pid, the resolved path, then the server's own argv (argv[0] first).
LEASH = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)\n"  # PR_SET_PDEATHSIG
    "if os.getppid() != int(sys.argv[1]): sys.exit(0)\n"  # the daemon died first
    "os.execv(sys.argv[2], sys.argv[3:])\n"
)


def available() -> bool:
    """Whether servers are leashed on this system (Linux)."""
    return sys.platform.startswith("linux")


def resolve(command: str, env: Mapping[str, str], cwd: Path | None = None) -> str:
    """The executable `command` names, looked up on the server's PATH as exec would (a
    relative path from the server's folder); FileNotFoundError when there is none."""
    path = env.get("PATH") or os.environ.get("PATH") or os.defpath
    if os.sep in command and cwd is not None:
        command = str(cwd / command)
    found = shutil.which(command, path=path)
    if found is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), command)
    return found


def leashed(
    command: str, args: list[str], env: Mapping[str, str], cwd: Path | None = None
) -> tuple[str, list[str]]:
    """The command and arguments that start `command args` on a leash to this process."""
    if not available():
        return command, args
    executable = str(Path(resolve(command, env, cwd)).absolute())
    return sys.executable, ["-I", "-S", "-c", LEASH, str(os.getpid()), executable, command, *args]
