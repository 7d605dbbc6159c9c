"""Abstract unix sockets of the host, out of a sandbox's reach with the network on.

An abstract unix socket has no path: it lives in the network namespace, so bubblewrap's
`--unshare-net` is the only mount-free way to take it away, and with the network on a shell
call reaches every one the host's programs listen on. Behind them: the X server (with
`xhost +si:localuser:…`, GNOME's default, no cookie is asked, and a client types into the
owner's terminal), a session bus bound to an abstract address (it starts services outside
the sandbox). Attack review 3 reached them from a shell call.

Linux's Landlock (ABI 6, kernel 6.12) scopes them: a process restricted with
`LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET` may connect only to abstract sockets made inside its
own domain. The process that becomes bubblewrap restricts itself just before `exec`
(`restrict_child`), so the whole sandbox inherits the scope and the daemon keeps its own
sockets. Nothing else is restricted: no file system or network rule is set, so bubblewrap
mounts as before. `no_new_privs` is set as Landlock requires, which a setuid bubblewrap
would not survive: there the scope is not applied (`usable` says why).
"""

from __future__ import annotations

import ctypes
import functools
import os
import stat
from pathlib import Path
from typing import Any

# Generic syscall numbers (the same on x86-64, arm64 and the other unified tables).
_CREATE_RULESET = 444
_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_SCOPE_ABSTRACT_UNIX_SOCKET = 1
_PR_SET_NO_NEW_PRIVS = 38
# The first ABI with scopes.
SCOPE_ABI = 6


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


@functools.cache
def _calls() -> tuple[Any, Any]:
    """libc's `prctl` and `syscall`, looked up in the daemon: a lookup (`dlsym`) in the forked
    child could wait for the loader's lock that another thread held at the fork."""
    libc = _libc()
    return libc.prctl, libc.syscall


@functools.cache
def abi() -> int:
    """The kernel's Landlock ABI version; 0 without Landlock (asked once)."""
    try:
        version = int(_libc().syscall(_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(version, 0)


def usable(program: str) -> str:
    """ "" when the scope can be applied before `program` (bubblewrap) starts, else why not."""
    version = abi()
    if version < SCOPE_ABI:
        found = f"Landlock ABI {version}" if version else "no Landlock"
        return f"the kernel has {found}; scoping abstract sockets needs ABI {SCOPE_ABI} (6.12+)"
    try:
        setuid = bool(Path(program).stat().st_mode & stat.S_ISUID)
    except OSError as err:
        return f"{program}: {err.strerror}"
    if setuid:
        return "bubblewrap is installed setuid, which no_new_privs would undo"
    _calls()
    return ""


def restrict_child() -> None:
    """Scope abstract unix sockets for this process and all it starts. Runs in the forked
    child, just before it execs bubblewrap: only syscalls, nothing that takes a lock."""
    prctl, syscall = _calls()
    attr = _RulesetAttr(0, 0, _SCOPE_ABSTRACT_UNIX_SOCKET)
    if prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    fd = int(syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    try:
        if syscall(_RESTRICT_SELF, fd, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    finally:
        os.close(fd)
