"""Path confinement: every path a file tool touches is resolved here first.

A path is expanded (`~`), made absolute against the workdir, and every symlink on it is
followed — the leaf, the folders on the way, and a dangling link — before it is compared
with the allowed roots and the denied paths. The tools then operate on the resolved path, so
a link inside a root that points outside it can neither pass the check nor be followed
afterwards. What a canonical path is, is `core/paths.py`'s.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from dispatch_matrix.core.errors import ToolError
from dispatch_matrix.core.paths import canonicalize, within, within_any_case
from dispatch_matrix.sandbox.gitconfig import repository_named
from dispatch_matrix.sandbox.wall import write_refusal
from dispatch_matrix.toolbox.base import ToolContext


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
    try:
        os.fsencode(path_str)
    except UnicodeEncodeError:
        # A lone surrogate (`\ud800`) names no file; os calls would raise it past the tool.
        raise ToolError("a path cannot contain a lone surrogate character") from None
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
        # In any case: on a case-insensitive file system `~/.SSH` is `~/.ssh`.
        if within_any_case(real, _canonical_or_self(denied.expanduser())):
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
    why = _git_refusal(real)
    if why is not None:
        raise ToolError(f"{real} {why}; no tool may change it")
    # What the config of the repository around it includes, or its hooks folder.
    roots = [_canonical_or_self(root.expanduser()) for root in ctx.allowed_roots]
    top = next((root for root in roots if within(real, root)), real)
    for named in repository_named(home_of(ctx), real, top):
        if within_any_case(real, _canonical_or_self(Path(named.path))):
            raise ToolError(
                f"{real} is named by its repository's git config (an include or the hooks "
                "folder), which git obeys later; no tool may change it"
            )
    return real


# What git runs or obeys in a git folder, as `write_refusal` names them inside `.git`.
_GIT_OBEYED = frozenset({"config", "config.worktree", "commondir"})


def _git_refusal(real: Path) -> str | None:
    """Why a write to `real` (canonical) would change what git runs later, beyond the
    `.git` folders `write_refusal` knows by name; None when it would not.

    Measured: a `.git` file (a worktree's or a `--separate-git-dir` checkout's pointer to
    its git folder) could be rewritten to name another git folder, and the hooks and config
    of a git folder not named `.git` (`repo.git` from `--separate-git-dir`, a bare
    repository a push goes to) were writable: `sep.git/hooks/pre-commit` runs at the
    owner's next commit, outside the sandbox.
    """
    if real.name.casefold() == ".git":
        return "is a .git entry (a git folder, or a file naming one), which git obeys later"
    for folder in real.parents:
        if _is_git_folder(folder):
            rest = real.relative_to(folder).parts
            if rest[0].casefold() == "hooks" or rest[-1].casefold() in _GIT_OBEYED:
                return f"is a hook or the config of the git folder {folder}, which git obeys later"
    return None


def _is_git_folder(folder: Path) -> bool:
    """Git's own test of a git folder: a HEAD file beside `objects` and `refs` folders."""
    try:
        return (
            (folder / "HEAD").is_file()
            and (folder / "objects").is_dir()
            and (folder / "refs").is_dir()
        )
    except OSError:
        return False


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
