"""What the shell judge is given and what it finds: the policy's Bash rules, places and
path judges (`ShellRules`), and one `Finding` per part of a command line. Pure data, shared
by the judge (`shelljudge.py`), its path checks (`shellpaths.py`) and the policy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from dispatch_matrix.permissions.rules import Rule

Kind = Literal["allow", "deny", "ask-rule", "protected", "unmodelled", "uncovered"]


@dataclass(frozen=True)
class Finding:
    """What the judge says about one part of a command line."""

    kind: Kind
    # What the owner is shown: a command as written, a redirection, a construct.
    part: str
    reason: str
    rule: str | None = None

    @property
    def verdict(self) -> Literal["allow", "ask", "deny"]:
        """The verdict this finding stands for."""
        return "allow" if self.kind == "allow" else "deny" if self.kind == "deny" else "ask"


@dataclass(frozen=True)
class ShellRules:
    """What the judge needs from the policy: Bash rules, places and path judges."""

    allow: tuple[Rule, ...]
    ask: tuple[Rule, ...]
    deny: tuple[Rule, ...]
    home: PurePosixPath
    workdir: PurePosixPath
    protected: tuple[PurePosixPath, ...]
    # Judges `Read`/`Write` of one absolute path with the path rules and the control plane.
    judge_path: Callable[[str, PurePosixPath], Finding]
    # What a glob may match that reading tools may not (a denied or private path).
    reaches_denied: Callable[[PurePosixPath], str | None] = lambda _: None
    # A denied or private folder inside a folder (for programs that walk folders).
    denied_inside: Callable[[PurePosixPath], str | None] = lambda _: None
    secret_globs: tuple[str, ...] = ()
