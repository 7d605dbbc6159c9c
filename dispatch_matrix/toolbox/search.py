"""The `glob` and `grep` tools: bounded walks that never leave their root.

Both walk with `os.fwalk` from a folder descriptor reached race-free (`safeopen`), never
enter a symlinked folder, prune the denied paths (by name and by identity, so a hard link
or a bind mount of a secret is skipped too), open each file without following a link, and
stop at a fixed number of entries. `grep` also skips `.git`, `node_modules`, binary files
and files whose names look like secrets (`.env`, keys) unless the search names that file.
The walks follow the SDK's reference (`_walk_grep`), in pure Python so these rules hold;
`rg` is not used. Both run in a forked child (`forked.py`) killed at a deadline or on
`!cancel`: Python's `re` holds the GIL for a whole match, so a backtracking pattern
(`^(a+)+$`, `*a*a*a*a*a*a*a*a*b`) in a thread would stop the event loop for minutes.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, Any

from dispatch_matrix.core import logs
from dispatch_matrix.core.errors import ToolError
from dispatch_matrix.core.paths import canonicalize, within
from dispatch_matrix.core.redaction import hide
from dispatch_matrix.permissions.globs import (
    DEFAULT_SECRET_GLOBS,
    GlobSyntaxError,
    compile_glob,
    has_magic,
    name_matches,
)
from dispatch_matrix.toolbox.base import ToolContext, ToolResult
from dispatch_matrix.toolbox.files import iter_lines
from dispatch_matrix.toolbox.forked import ChildTimeout, run_forked
from dispatch_matrix.toolbox.paths import denied_roots, resolve
from dispatch_matrix.toolbox.safeopen import Shield, mount_id, open_file, open_in, walk
from dispatch_matrix.toolbox.schema import (
    GLOB_SCHEMA,
    GREP_SCHEMA,
    GlobInput,
    GrepInput,
    guarded,
    parse_input,
)

GLOB_RESULT_LIMIT = 200
WALK_MAX_ENTRIES = 50_000
GREP_MAX_LINE_LENGTH = 2000
GREP_TIME_LIMIT_S = 30.0
# The search process is killed this long after the walk's own limit, which is checked only
# between lines: one match of a backtracking pattern can take longer than any budget.
KILL_AFTER_S = GREP_TIME_LIMIT_S + 5.0
_GREP_SKIP_DIRS = frozenset({".git", "node_modules"})


class GlobTool:
    """`glob`: paths matching a doublestar pattern under a folder, newest first.

    A path is matched as the model reads it, the daemon's own secrets (`known`) hidden: a
    name holding one cannot be guessed a character at a time by patterns.
    """

    name = "glob"

    def __init__(self, known: Callable[[str], str] | None = None) -> None:
        self.known = known or logs.REDACTOR.known

    def definition(self) -> dict[str, Any]:
        """The Messages API entry."""
        return {
            "name": self.name,
            "description": (
                "Find files and folders whose path (relative to `path`, default the workdir) "
                "matches a doublestar glob such as `**/*.py` or `src/{a,b}/*.ts`. Returns "
                f"absolute paths, newest first, at most {GLOB_RESULT_LIMIT}. Symlinked "
                "folders are not followed; `.git` is skipped unless the pattern names it."
            ),
            "input_schema": GLOB_SCHEMA,
        }

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """List matches."""
        return await guarded(self.name, self._run(tool_input, ctx))

    async def _run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        args = parse_input(GlobInput, tool_input)
        pattern = args.pattern.strip()
        if not pattern:
            raise ToolError("pattern is empty")
        if pattern.startswith("/") or pattern.startswith("~"):
            raise ToolError("pattern must be relative; put the folder in `path`")
        if ".." in PurePosixPath(pattern).parts:
            raise ToolError("'..' is not allowed in the pattern; put the folder in `path`")
        try:
            regex = compile_glob(pattern, braces=True)
        except GlobSyntaxError as err:
            raise ToolError(f"bad pattern: {err}") from None
        except (re.error, RecursionError, OverflowError, ValueError) as err:
            # `{` 500 deep made the translation recurse past Python's limit, out of the tool.
            raise ToolError(f"bad pattern: {_unusable(err)}") from None
        root = resolve(args.path or str(ctx.workdir), ctx)
        return ToolResult.text(
            await _off_loop(partial(_glob, root, pattern, regex, ctx, self.known))
        )


class GrepTool:
    """`grep`: lines matching a regular expression in a file or under a folder.

    The policy judges the search root only; `read_denied` (e.g. `Policy.read_denied`) lets
    the walk skip each file and folder a read would be denied, so a deny rule below the root
    still holds. Without it, secret-looking names are skipped.
    """

    name = "grep"

    def __init__(
        self,
        read_denied: Callable[[Path], bool] | None = None,
        known_spans: Callable[[str], list[tuple[int, int]]] | None = None,
    ) -> None:
        self.read_denied = read_denied or _secret_looking
        # Where the daemon's own secrets are in a text (the redactor's).
        self.known_spans = known_spans or logs.REDACTOR.known_spans

    def definition(self) -> dict[str, Any]:
        """The Messages API entry."""
        return {
            "name": self.name,
            "description": (
                "Search file contents for a regular expression (Python `re` syntax) in a file "
                "or recursively under a folder (default the workdir). Prints `path:line:text` "
                "per match, bounded in size. Skips binary files, `.git`, `node_modules`, "
                f"lines over {GREP_MAX_LINE_LENGTH} characters, and secret-looking files "
                "(.env, keys) unless you name the file itself."
            ),
            "input_schema": GREP_SCHEMA,
        }

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Search."""
        return await guarded(self.name, self._run(tool_input, ctx))

    async def _run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        args = parse_input(GrepInput, tool_input)
        try:
            regex = re.compile(args.pattern)
        except (re.error, RecursionError, OverflowError, ValueError) as err:
            # `(` 1000 deep raised RecursionError, `a{99999999999}` OverflowError: out of the
            # tool, failing the whole task.
            raise ToolError(f"invalid regular expression: {_unusable(err)}") from None
        search = resolve(args.path or str(ctx.workdir), ctx)
        limit = max(ctx.output_limit, 1000)
        walk = _Walk(denied_roots(ctx), self.read_denied, tuple(ctx.denied_paths), self.known_spans)
        return ToolResult.text(await _off_loop(partial(_grep, regex, search, walk, limit)))


def _unusable(err: Exception) -> str:
    if isinstance(err, RecursionError):
        return "it nests too deeply"
    return str(err)


async def _off_loop(work: Callable[[], str]) -> str:
    try:
        return await run_forked(work, KILL_AFTER_S)
    except ChildTimeout:
        raise ToolError(
            f"the search was stopped after {KILL_AFTER_S:.0f} s without an answer: the "
            "pattern probably backtracks (like `(a+)+` or many `*`); simplify it or narrow "
            "the path"
        ) from None


def _glob(
    root: Path,
    pattern: str,
    regex: re.Pattern[str],
    ctx: ToolContext,
    known: Callable[[str], str],
) -> str:
    if not root.is_dir():
        raise ToolError(f"{root} is not a folder")
    denied = denied_roots(ctx)
    shield = Shield.of(ctx.denied_paths)
    # Start the walk at the pattern's literal folders (`src/**/*.py` walks only `src`).
    literal: list[str] = []
    for segment in pattern.split("/")[:-1]:
        if segment == "**" or has_magic(segment):
            break
        literal.append(segment)
    try:
        base = canonicalize(root.joinpath(*literal))
    except OSError:
        return "no matches"
    if not within(base, root) or not base.is_dir():
        return "no matches"
    walk_git = ".git" in pattern
    matches: list[tuple[float, str]] = []
    seen = 0
    capped = False
    for folder, dirnames, filenames, dirfd in walk(base, shield, str(base)):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if (walk_git or d != ".git") and not any(within(folder / d, x) for x in denied)
        )
        names = [*dirnames, *sorted(filenames)]
        # One look per folder; each name only in a folder where a secret is.
        here = folder.relative_to(root).as_posix()
        listing = "\n".join([here, *names])
        secret = known(listing) != listing
        for name in names:
            seen += 1
            if seen > WALK_MAX_ENTRIES:
                capped = True
                break
            full = folder / name
            if any(within(full, x) for x in denied):
                continue
            relative = full.relative_to(root).as_posix()
            if not regex.fullmatch(known(relative) if secret else relative):
                continue
            try:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            except OSError:
                continue
            if shield.refuses(st) is not None:
                continue
            if stat.S_ISLNK(st.st_mode) and not _link_stays_in(full, root):
                continue
            matches.append((st.st_mtime, str(full)))
        if capped:
            break
    if not matches:
        return "no matches" + (f" (stopped after {WALK_MAX_ENTRIES} entries)" if capped else "")
    matches.sort(key=lambda m: (-m[0], m[1]))
    lines = [path for _, path in matches[:GLOB_RESULT_LIMIT]]
    if len(matches) > GLOB_RESULT_LIMIT:
        lines.append(
            f"[{len(matches) - GLOB_RESULT_LIMIT} more matches not shown; narrow the pattern]"
        )
    if capped:
        lines.append(f"[stopped after {WALK_MAX_ENTRIES} entries; narrow the path or pattern]")
    return "\n".join(lines)


def _link_stays_in(link: Path, root: Path) -> bool:
    try:
        return within(canonicalize(link), root)
    except OSError:
        return False


def _secret_looking(path: Path) -> bool:
    return name_matches(path.name, DEFAULT_SECRET_GLOBS)


@dataclass(frozen=True)
class _Walk:
    """What a grep walk must leave out."""

    denied: list[Path]
    read_denied: Callable[[Path], bool]
    hidden: tuple[Path, ...] = ()
    # Where the daemon's own secrets are in a text: lines are matched with them hidden.
    secrets: Callable[[str], list[tuple[int, int]]] = lambda _text: []

    def prune(self, folder: Path) -> bool:
        return any(within(folder, x) for x in self.denied) or self.read_denied(folder)


class _Hits:
    """Matching lines within a byte budget."""

    def __init__(self, limit: int) -> None:
        self.lines: list[str] = []
        self.budget = limit
        self.full = False

    def add(self, line: str) -> bool:
        self.budget -= len(line) + 1
        if self.budget < 0:
            self.full = True
            return False
        self.lines.append(line)
        return True


def _grep(regex: re.Pattern[str], search: Path, walk_rules: _Walk, limit: int) -> str:
    hits = _Hits(limit)
    deadline = time.monotonic() + GREP_TIME_LIMIT_S
    shield = Shield.of(walk_rules.hidden)
    skipped = 0
    timed_out = False
    if search.is_file():
        with open_file(search, shield, str(search)) as handle:
            timed_out = not _scan(regex, search, handle, hits, deadline, walk_rules.secrets)
    elif search.is_dir():
        seen = 0
        for folder, dirnames, filenames, dirfd in walk(search, shield, str(search)):
            # fwalk lists symlinked folders but does not enter them; prune them anyway.
            kept = [d for d in dirnames if d not in _GREP_SKIP_DIRS and not _is_link(d, dirfd)]
            dirnames[:] = sorted(d for d in kept if not walk_rules.prune(folder / d))
            skipped += len(kept) - len(dirnames)
            folder_mount = mount_id(dirfd)
            for name in sorted(filenames):
                full = folder / name
                if walk_rules.prune(full):
                    skipped += 1
                    continue
                opened = open_in(name, dirfd, shield, str(full), folder_mount)
                if opened is None:
                    continue
                with opened:
                    seen += 1
                    if seen > WALK_MAX_ENTRIES or hits.full:
                        break
                    if not _scan(regex, full, opened, hits, deadline, walk_rules.secrets):
                        timed_out = True
                        break
            if seen > WALK_MAX_ENTRIES or hits.full or timed_out:
                break
    else:
        raise ToolError(f"{search}: not a file or folder")
    out = list(hits.lines) or ["no matches"]
    if hits.full:
        out.append(f"[output truncated at {limit} bytes; narrow the pattern or path]")
    if timed_out:
        out.append(f"[search stopped after {GREP_TIME_LIMIT_S:.0f} s; narrow the path]")
    if skipped:
        out.append(
            f"[skipped {skipped} file(s) or folder(s) the bot may not read, such as .env or keys]"
        )
    return "\n".join(out)


def _is_link(name: str, dirfd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode)
    except OSError:
        return True


# Lines are matched in blocks of about this many characters, each checked once for secrets.
_BLOCK_CHARS = 1 << 20


def _scan(
    regex: re.Pattern[str],
    path: Path,
    handle: IO[bytes],
    hits: _Hits,
    deadline: float,
    secrets: Callable[[str], list[tuple[int, int]]],
) -> bool:
    """Search one open file; False when the time is up."""
    try:
        if b"\x00" in handle.read(8192):
            return True
        handle.seek(0)
        block: list[tuple[int, str]] = []
        size = 0
        for number, (raw, cut) in enumerate(iter_lines(handle), 1):
            if number % 1000 == 0 and time.monotonic() > deadline:
                return False
            # A long line and a backtracking pattern from the model make a ReDoS.
            if cut or len(raw) > GREP_MAX_LINE_LENGTH:
                continue
            line = raw.decode("utf-8", errors="replace").removesuffix("\r")
            block.append((number, line))
            size += len(line) + 1
            if size >= _BLOCK_CHARS:
                if not _match(regex, path, block, hits, secrets):
                    return True
                block, size = [], 0
        if block:
            _match(regex, path, block, hits, secrets)
    except OSError:
        return True
    return time.monotonic() <= deadline


def _match(
    regex: re.Pattern[str],
    path: Path,
    block: list[tuple[int, str]],
    hits: _Hits,
    secrets: Callable[[str], list[tuple[int, int]]],
) -> bool:
    """Add the block's matching lines to `hits`; False when it is full.

    A line is matched as the model would read it, with the daemon's secrets hidden: matched
    whole, a pattern such as `KEY=sk-ant-a` answered "a line" or "no matches" whatever the
    output hid, and a few dozen searches spelled the key out. The block is checked whole,
    so a secret broken over lines is hidden in each of them.
    """
    text = "\n".join(line for _, line in block)
    found = secrets(text)
    at = 0
    for number, line in block:
        end = at + len(line)
        shown = line
        if found:
            mine = [(max(s, at) - at, min(e, end) - at) for s, e in found if s < end and e > at]
            shown = hide(line, mine) if mine else line
        at = end + 1
        if regex.search(shown) and not hits.add(f"{path}:{number}:{shown}"):
            return False
    return True
