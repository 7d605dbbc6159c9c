"""Which paths a shell word may name, and whether one of them is off limits. Pure.

The shell judge asks before a command whose words may name the control plane (the config,
the state folder, service units, shell start-up files) or a process's secrets under
`/proc/<pid>`. A word is judged as bash would expand it: brace alternatives one by one,
a leading `~` (or `$HOME`) as the home folder, a relative path against the workdir and
every folder a `cd` or `git -C` in the same line may have moved to, and a glob by whether
it *could* match a protected path or something inside one (`~/sto*/config.toml`,
`[s]tore`). `~user`, `~+` and `~-` name folders the judge does not know, so they ask.
Literal paths whose file name looks like a secret (`.env`, `id_rsa`) are asked about too.
Also tried: the text after `=` or `:` (`--file=…`, `HEAD:path`) and after an option's
letters (`-f/path`). Folders *above* a protected path (`grep -r x ~`) are left to the OS
sandbox, as for literal paths.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from .globs import name_matches, translate
from .shellmodel import Word
from .shellwords import escape, expand_braces, has_glob, split_unescaped, unescape

CONTROL_PLANE = (
    "{subject} is part of the bot's control plane (its config, state, service units or "
    "shell start-up files); changes there always need your approval"
)
SECRET = "{subject} looks like a secret"
PROC = "{subject} exposes a process's environment or memory, which may hold secrets"


@dataclass(frozen=True)
class Places:
    """The folders a judgement depends on."""

    home: PurePosixPath
    protected: tuple[PurePosixPath, ...]
    resolve: Callable[[PurePosixPath], PurePosixPath] | None = None
    # File names that look like secrets (`.env`, `*.pem`, `id_rsa*`): asked about too.
    secret_globs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Trouble:
    """Why a word is asked about: a protected place, or one the judge cannot tell."""

    protected: bool
    reason: str


def normal_path(text: str) -> PurePosixPath:
    """`text` normalised lexically, with a leading `//` read as `/` (as Linux does; POSIX
    would let `os.path.normpath` keep it, and `//home/u` would then escape every check)."""
    normal = os.path.normpath(text)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    return PurePosixPath(normal)


def word_trouble(word: Word, places: Places, bases: Sequence[PurePosixPath]) -> Trouble | None:
    """Whether any path `word` may name is protected (or unknowable); None when fine."""
    if word.pattern is None:
        return None
    alternatives = expand_braces(word.pattern)
    if alternatives is None:
        return Trouble(False, f"`{word.source}` expands to too many words to judge")
    for alternative in alternatives:
        for candidate in _candidates(alternative):
            trouble = _pattern_trouble(candidate, places, bases)
            if trouble is not None:
                return trouble
    return None


def absolute(pattern: str, home: PurePosixPath, bases: Sequence[PurePosixPath]) -> list[str] | None:
    """The pattern made absolute against home and each folder it may be relative to; None
    for `~user`, `~+` and `~-`."""
    if pattern.startswith("~"):
        head, _, rest = pattern.partition("/")
        if head != "~":
            return None
        return [escape(str(home)) + "/" + rest]
    if pattern.startswith("/"):
        return [pattern]
    return [escape(str(base)) + "/" + pattern for base in bases]


def _pattern_trouble(
    pattern: str, places: Places, bases: Sequence[PurePosixPath]
) -> Trouble | None:
    spots = absolute(pattern, places.home, bases)
    if spots is None:
        return Trouble(False, f"`{unescape(pattern)}` expands to a folder the judge cannot tell")
    for spot in spots:
        if has_glob(spot):
            hit = _glob_hits(spot, places.protected)
            if hit is not None:
                return Trouble(True, hit)
            continue
        path = normal_path(unescape(spot))
        forms = [path]
        if places.resolve is not None:
            with contextlib.suppress(OSError):
                forms.append(places.resolve(path))
        for form in forms:
            if any(_within(form, p) for p in places.protected):
                return Trouble(True, CONTROL_PLANE.format(subject=form))
            if _proc_entry(form.parts):
                return Trouble(True, PROC.format(subject=form))
            if name_matches(form.name, places.secret_globs):
                return Trouble(True, SECRET.format(subject=form))
    return None


def _candidates(pattern: str) -> list[str]:
    """The places a word may name a path: itself, after `=` or `:`, after an option."""
    pieces = [pattern, *split_unescaped(pattern, "=:")[1:]]
    if pattern.startswith("-"):
        cut = min((i for i in (pattern.find("/"), pattern.find("~")) if i > 0), default=-1)
        if cut > 0:
            pieces.append(pattern[cut:])
    return [p for p in pieces if p and not p.startswith("-")]


def _glob_hits(pattern: str, protected: Sequence[PurePosixPath]) -> str | None:
    """Why an absolute glob may name a protected path (or a process entry), else None."""
    segments = [s for s in pattern.split("/") if s not in ("", ".")]
    resolved: list[str] = []
    for segment in segments:
        if segment == "..":
            if any(has_glob(s) for s in resolved):
                return f"/{'/'.join(resolved)}/.. is a glob followed by '..', not judged"
            if resolved:
                resolved.pop()
            continue
        resolved.append(segment)
    shown = "/" + "/".join(resolved)
    for place in protected:
        parts = place.parts[1:]
        if len(resolved) >= len(parts) and all(
            _segment_matches(s, p) for s, p in zip(resolved, parts, strict=False)
        ):
            return f"the glob {unescape(shown)} may match {place}: " + CONTROL_PLANE.format(
                subject=place
            )
    if len(resolved) >= 2 and _segment_matches(resolved[0], "proc") and has_glob(resolved[1]):
        return PROC.format(subject=unescape(shown))
    return None


def _segment_matches(segment: str, name: str) -> bool:
    # Without globstar bash reads `**` as `*`.
    return re.fullmatch(translate(segment.replace("**", "*")), name, re.DOTALL) is not None


def _within(path: PurePosixPath, folder: PurePosixPath) -> bool:
    return path == folder or folder in path.parents


def _proc_entry(parts: tuple[str, ...]) -> bool:
    return len(parts) > 2 and parts[1] == "proc" and (parts[2].isdigit() or "self" in parts[2])
