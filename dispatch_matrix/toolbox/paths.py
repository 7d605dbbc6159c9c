"""Path confinement: every path a file tool touches is resolved here first.

A path is expanded (`~`), made absolute against the workdir, and every symlink on it is
followed — the leaf, the folders on the way, and a dangling link — before it is compared
with the allowed roots and the denied paths. The tools then operate on the resolved path, so
a link inside a root that points outside it can neither pass the check nor be followed
afterwards. The canonicalisation follows the SDK's reference (`anthropic.lib.tools.
agent_toolset._canonicalize`), copied rather than imported because it is private there.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path, PurePath
from stat import S_ISLNK

from dispatch_matrix.core.errors import ToolError
from dispatch_matrix.sandbox.wall import write_refusal
from dispatch_matrix.toolbox.base import ToolContext

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


def home_of(ctx: ToolContext) -> Path:
    """The home folder `~` stands for: the shell's HOME when the context sets one."""
    home = ctx.env.get("HOME")
    return Path(home) if home else Path.home()


def expand(path_str: str, home: Path, workdir: Path) -> Path:
    """`path_str` made absolute and normalised lexically (no file system access)."""
    in_home = path_str == "~" or path_str.startswith("~/")
    path = home / path_str[2:] if in_home else Path(path_str)
    if not path.is_absolute():
        path = workdir / path
    return Path(os.path.normpath(path))


def resolve(path_str: str, ctx: ToolContext) -> Path:
    """The canonical path a tool may touch for `path_str`; raises ToolError when it may not.

    Relative paths are taken against `ctx.workdir`. The result must lie inside one of
    `ctx.allowed_roots` and outside every `ctx.denied_paths`, after all symlinks are followed.
    """
    if not path_str or not path_str.strip():
        raise ToolError("a path is required")
    if "\x00" in path_str:
        raise ToolError("a path cannot contain a NUL character")
    spelled = expand(path_str, home_of(ctx), ctx.workdir)
    try:
        real = canonicalize(spelled)
    except OSError as err:
        raise ToolError(f"{spelled}: {describe_os_error(err)}") from err
    shown = str(spelled) if spelled == real else f"{spelled} (→ {real})"
    roots = [_canonical_or_self(root.expanduser()) for root in ctx.allowed_roots]
    if not any(within(real, root) for root in roots):
        listed = ", ".join(str(root.expanduser()) for root in ctx.allowed_roots) or "none"
        raise ToolError(f"{shown} is outside the allowed roots ({listed})")
    for denied in ctx.denied_paths:
        if within(real, _canonical_or_self(denied.expanduser())):
            raise ToolError(f"{shown} is inside {denied}, which the tools may not touch")
    return real


def resolve_for_write(path_str: str, ctx: ToolContext) -> Path:
    """`resolve`, and refused as well when the path is one no tool may change (a start-up
    file, `.git/hooks`, editor settings, the daemon's installation), whatever the rules
    say: a write there would run later, outside the sandbox."""
    real = resolve(path_str, ctx)
    readonly = tuple(_canonical_or_self(p.expanduser()) for p in ctx.readonly_paths)
    why = write_refusal(real, readonly)
    if why is not None:
        raise ToolError(f"{real} {why}; no tool may change it")
    return real


def denied_roots(ctx: ToolContext) -> list[Path]:
    """The context's denied paths, canonical, for walkers that prune them."""
    return [_canonical_or_self(d.expanduser()) for d in ctx.denied_paths]


def describe_os_error(err: OSError) -> str:
    """A short, platform-independent phrase for a file system error."""
    if isinstance(err, FileNotFoundError):
        return "no such file or directory"
    if isinstance(err, NotADirectoryError):
        return "not a directory"
    if isinstance(err, IsADirectoryError):
        return "is a directory"
    if isinstance(err, PermissionError):
        return "permission denied"
    if isinstance(err, FileExistsError):
        return "file already exists"
    if err.errno == errno.ELOOP:
        return "too many levels of symbolic links"
    return (err.strerror or "input/output error").lower()


def _canonical_or_self(path: Path) -> Path:
    try:
        return canonicalize(path)
    except OSError:
        return Path(os.path.normpath(path))
