"""Canonical paths: a path with every symlink on it followed (the leaf, the folders on the
way, a dangling link), and whether one path lies inside another. Shared by the door (the
policy's roots), the wall (what the sandbox hides and guards) and the tools' confinement,
which must all agree on what a path is. The canonicalisation follows the SDK's reference
(`anthropic.lib.tools.agent_toolset._canonicalize`), copied rather than imported because it
is private there.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path, PurePath
from stat import S_ISLNK

_MAX_SYMLINK_HOPS = 40
_MISSING = (errno.ENOENT, errno.ENOTDIR)


def canonicalize(path: Path) -> Path:
    """`path` with `.`/`..` collapsed and every symlink followed; raises OSError on a loop.

    Trailing components that do not exist yet are kept as spelled, so a new file under new
    folders is judged by its nearest existing parent. A dangling symlink met on the way is
    read and followed by hand.
    """
    prefix = Path(os.path.normpath(str(path)))
    missing_tail: list[str] = []
    hops = 0
    while True:
        try:
            return prefix.resolve(strict=True).joinpath(*reversed(missing_tail))
        except RuntimeError:
            # CPython < 3.13 reports a symlink loop from resolve(strict=True) this way.
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from None
        except OSError as err:
            if err.errno not in _MISSING:
                raise
            unresolved = err
        try:
            is_link = S_ISLNK(os.lstat(prefix).st_mode)
        except OSError as err:
            if err.errno not in _MISSING or prefix.parent == prefix:
                raise
            missing_tail.append(prefix.name)
            prefix = prefix.parent
            continue
        if not is_link:
            raise unresolved
        hops += 1
        if hops > _MAX_SYMLINK_HOPS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
        parent = os.path.realpath(prefix.parent, strict=True)
        target = Path(parent, prefix.readlink(), *reversed(missing_tail))
        prefix = Path(os.path.normpath(target))
        missing_tail.clear()


def within(child: PurePath, root: PurePath) -> bool:
    """Whether `child` is `root` or inside it (both already absolute and normalised)."""
    return child.parts[: len(root.parts)] == root.parts


def within_any_case(child: PurePath, root: PurePath) -> bool:
    """`within`, names compared without regard to case: on a case-insensitive file system
    (macOS's and Windows' default) `~/.SSH/config` is `~/.ssh/config`. For refusals only,
    where matching more names fails closed; a path is not canonical in its case."""
    parts = child.parts[: len(root.parts)]
    return len(parts) == len(root.parts) and all(
        a == b or a.casefold() == b.casefold() for a, b in zip(parts, root.parts, strict=True)
    )
