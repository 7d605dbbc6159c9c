"""The permission policy every tool call passes first: allow, ask or deny. Pure.

Rules use Claude Code's syntax (see `rules.py`). Deny beats ask beats allow, and a call no
rule allows is asked about. On top of the rules:

- The control plane — the config file, the state folder, service units
  (`~/.config/systemd/**`, `~/Library/LaunchAgents/**`) and shell start-up files — is always
  asked about before a write or edit, and before a shell command that mentions it, whatever
  the allow rules say (a deny rule still denies).
- Secret-looking files (`.env`, `.env.*`, `*.pem`, `id_rsa*`, `id_ed25519*`, …) and private
  folders (the state folder) are denied to reading tools unless an allow rule names them
  (`Read(~/app/.env)` or `Read(**/*.pem)`; `Read(~/**)` does not).
- A shell command is judged by every simple command in it (`a && b`, pipes, `$( … )`,
  backticks, subshells, `bash -c '…'`, `find -exec`): all must be allowed to allow; one
  denied denies. Deny and ask rules also see through wrappers (`sudo`, `env X=1`, `xargs`).
  This is a best effort: a shell can always build a command the rules cannot see
  (`$VAR`), which is why deny rules on Bash are no sandbox.
- The bot's own tools (`schedule`, `memory`) need no rule; a deny rule still stops them.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from ..errors import ConfigError
from .globs import DEFAULT_SECRET_GLOBS, name_matches
from .paths import within
from .rules import PATH_TOOLS, Rule, canonical_tool, parse_rule, parse_rules
from .shellsplit import ShellSyntaxError, split_commands, words

Verdict = Literal["allow", "ask", "deny"]

DEFAULT_SELF_TOOLS = frozenset({"schedule", "memory"})
# Tools of ours that read the file their input names: judged as a Read of that path.
DEFAULT_READ_TOOLS: Mapping[str, str] = {"send_file": "path"}
CONTROL_PLANE_IN_HOME = (
    ".config/systemd",
    "Library/LaunchAgents",
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".profile",
    ".zshrc",
    ".zshenv",
    ".zprofile",
    ".zlogin",
)
# Which rules govern a call: Read rules also govern glob and grep, Edit and Write each other.
_GOVERNED_BY = {
    "Read": ("Read",),
    "Glob": ("Glob", "Read"),
    "Grep": ("Grep", "Read"),
    "Write": ("Write", "Edit"),
    "Edit": ("Edit", "Write"),
}
_WRAPPERS = frozenset(
    {"sudo", "doas", "env", "nice", "nohup", "time", "timeout", "command", "builtin", "exec"}
    | {"xargs", "stdbuf", "ionice", "unbuffer", "chronic", "caffeinate", "watch"}
)
_SHELLS = frozenset({"bash", "sh", "zsh", "dash", "ksh"})
_MAX_INNER = 8


@dataclass(frozen=True)
class Decision:
    """What the policy says about one call, and what the owner is shown when asked."""

    verdict: Verdict
    reason: str
    # The exact command or path the call touches.
    subject: str
    # The rule that decided, as written in the config; None for a default.
    rule: str | None = None


@dataclass
class Policy:
    """Claude Code's allow / ask / deny rules plus the defaults above."""

    allow: Sequence[str]
    ask: Sequence[str]
    deny: Sequence[str]
    home: Path
    workdir: Path
    # Control-plane paths besides the built-in ones: the config file and the state folder.
    protected: Sequence[Path] = ()
    secret_globs: Sequence[str] = DEFAULT_SECRET_GLOBS
    # Folders reading tools may not enter unless a rule names them: the state folder.
    private: Sequence[Path] = ()
    self_tools: Iterable[str] = DEFAULT_SELF_TOOLS
    read_tools: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_READ_TOOLS))
    # How to follow symlinks (e.g. paths.canonicalize); by default paths are judged as spelled.
    canonical: Callable[[Path], Path] | None = None

    def __post_init__(self) -> None:
        self._allow = parse_rules(list(self.allow), "allow", self.home, self.workdir)
        self._ask = parse_rules(list(self.ask), "ask", self.home, self.workdir)
        self._deny = parse_rules(list(self.deny), "deny", self.home, self.workdir)
        home = PurePosixPath(self.home)
        self._protected = [_abs(p, self.home, self.workdir) for p in self.protected] + [
            home / rel for rel in CONTROL_PLANE_IN_HOME
        ]
        self._private = [_abs(p, self.home, self.workdir) for p in self.private]
        self._secret_globs = tuple(self.secret_globs)
        self._self_tools = frozenset(self.self_tools)

    def decide(self, tool_name: str, tool_input: Mapping[str, Any]) -> Decision:
        """Allow, ask or deny one call, with the reason and the subject shown to the owner."""
        tool = canonical_tool(tool_name)
        if tool == "Bash":
            return self._bash(tool_input)
        if tool in PATH_TOOLS:
            key = "file_path" if tool in ("Read", "Write", "Edit") else "path"
            return self._path(tool, tool_input.get(key), key)
        if tool_name in self.read_tools:
            key = self.read_tools[tool_name]
            return self._path("Read", tool_input.get(key), key, own_name=tool_name)
        return self._named(tool_name, tool_input)

    def learn(self, tool_name: str, tool_input: Mapping[str, Any]) -> str | None:
        """Allow this exact call from now on ("always allow"); returns the rule, or None
        for calls no exact rule can describe. Deny rules and the control plane still win:
        a learned rule is an allow rule like any other."""
        tool = canonical_tool(tool_name)
        if tool == "Bash":
            command = str(tool_input.get("command", "")).strip()
            text = f"Bash({command})" if command and "\n" not in command else None
        elif tool in PATH_TOOLS:
            key = "file_path" if tool in ("Read", "Write", "Edit") else "path"
            target = tool_input.get(key)
            text = f"{tool}({target})" if isinstance(target, str) and target else None
        else:
            text = None
        if text is None:
            return None
        try:
            self._allow.append(parse_rule(text, "learned", self.home, self.workdir))
        except ConfigError:
            return None  # a call no rule can spell exactly is simply asked again next time
        return text

    def rules_naming(self, tool_name: str) -> list[tuple[Verdict, str]]:
        """Every rule that governs a tool, as (list, rule as written), deny first (`!tools`)."""
        family = _GOVERNED_BY.get(canonical_tool(tool_name))
        return [
            (verdict, rule.text)
            for verdict, rules in (*self._restrictive(), ("allow", self._allow))
            for rule in rules
            if (rule.tool in family if family else rule.names_tool(tool_name))
        ]

    def read_denied(self, path: Path) -> bool:
        """Whether reading `path` would be denied: for walkers (grep) that read files the
        policy never saw one by one."""
        return self._path("Grep", str(path), "path").verdict == "deny"

    # Named tools (MCP, our own) -------------------------------------------------------

    def _named(self, tool_name: str, tool_input: Mapping[str, Any]) -> Decision:
        subject = _describe_call(tool_name, tool_input)
        for verdict, rules in self._restrictive():
            rule = next((r for r in rules if r.names_tool(tool_name)), None)
            if rule is not None:
                reason = f"{tool_name} matches {verdict} rule {rule.text}"
                return Decision(verdict, reason, subject, rule.text)
        if tool_name in self._self_tools:
            return Decision("allow", f"{tool_name} touches only the bot's own state", subject)
        rule = next((r for r in self._allow if r.names_tool(tool_name)), None)
        if rule is not None:
            return Decision("allow", f"allowed by {rule.text}", subject, rule.text)
        return Decision("ask", f"no rule allows {tool_name}", subject)

    def _restrictive(self) -> tuple[tuple[Verdict, list[Rule]], ...]:
        return (("deny", self._deny), ("ask", self._ask))

    # File tools -----------------------------------------------------------------------

    def _path(self, tool: str, raw: object, key: str, own_name: str | None = None) -> Decision:
        if tool in ("Glob", "Grep") and raw in (None, ""):
            raw = str(self.workdir)
        if not isinstance(raw, str) or not raw.strip():
            return Decision("deny", f"the call has no {key}", "")
        spelled = _abs(raw, self.home, self.workdir)
        forms = [spelled]
        if self.canonical is not None:
            try:
                real = PurePosixPath(self.canonical(Path(spelled)))
            except OSError:
                real = spelled
            if real != spelled:
                forms.append(real)
        subject = " → ".join(str(p) for p in forms)
        family = _GOVERNED_BY[tool]
        if own_name is not None:
            rule = next((r for r in self._deny if r.names_tool(own_name)), None)
            if rule is not None:
                return Decision("deny", f"{own_name} is denied by {rule.text}", subject, rule.text)
        for rule in self._deny:
            if rule.tool in family and any(rule.matches_path(p) for p in forms):
                return Decision("deny", f"{subject} is denied by {rule.text}", subject, rule.text)
        if tool in ("Read", "Glob", "Grep"):
            refused = self._secret_refusal(forms, family, subject)
            if refused is not None:
                return refused
        writing = tool in ("Write", "Edit")
        if writing and any(self._is_protected(p) for p in forms):
            return Decision("ask", _CONTROL_PLANE.format(subject=subject), subject)
        for rule in self._ask:
            if rule.tool in family and any(rule.matches_path(p) for p in forms):
                return Decision(
                    "ask", f"{subject} matches ask rule {rule.text}", subject, rule.text
                )
        covering = [
            next((r for r in self._allow if r.tool in family and r.matches_path(p)), None)
            for p in forms
        ]
        if all(covering):
            names = ", ".join(dict.fromkeys(r.text for r in covering if r is not None))
            return Decision("allow", f"allowed by {names}", subject, names)
        verb = "write" if writing else "read"
        return Decision("ask", f"no allow rule lets the bot {verb} {subject}", subject)

    def _secret_refusal(
        self, forms: list[PurePosixPath], family: tuple[str, ...], subject: str
    ) -> Decision | None:
        for path in forms:
            if name_matches(path.name, self._secret_globs):
                named = any(
                    r.tool in family and r.path is not None and r.path.names(path)
                    for r in self._allow
                )
                if not named:
                    reason = _SECRET.format(path=path, rule=self._spelled(path))
                    return Decision("deny", reason, subject)
            for folder in self._private:
                if within(path, folder) and not any(
                    r.tool in family and r.path is not None and within(r.path.literal_base, folder)
                    for r in self._allow
                ):
                    return Decision(
                        "deny", _PRIVATE.format(subject=subject, folder=folder), subject
                    )
        return None

    def _spelled(self, path: PurePosixPath) -> str:
        """`path` as a rule would spell it: `~/…` in the home folder, else `//…`."""
        home = PurePosixPath(self.home)
        return f"~/{path.relative_to(home)}" if within(path, home) else f"/{path}"

    def _is_protected(self, path: PurePosixPath) -> bool:
        return any(within(path, p) for p in self._protected)

    # Shell commands -------------------------------------------------------------------

    def _bash(self, tool_input: Mapping[str, Any]) -> Decision:
        command = tool_input.get("command")
        if not isinstance(command, str) or not command.strip():
            return Decision("allow", "no command to run", "")
        subject = command
        try:
            parts = self._all_commands(command)
            problem = None
        except ShellSyntaxError as err:
            parts, problem = [], str(err)
        if not parts:
            parts = [command.strip()]
        # Deny and ask rules also see the whole line and the commands inside wrappers.
        seen = [command.strip(), *parts, *(u for p in parts for u in _unwrapped(p))]
        for verdict, rules in self._restrictive():
            for rule in rules:
                hit = next(
                    (c for c in seen if rule.tool == "Bash" and rule.matches_command(c)), None
                )
                if hit is not None:
                    reason = f"`{hit}` matches {verdict} rule {rule.text}"
                    return Decision(verdict, reason, subject, rule.text)
        touched = self._protected_mentions(command)
        if touched:
            return Decision("ask", _CONTROL_PLANE.format(subject=touched), subject)
        if problem is not None:
            return Decision("ask", f"the command could not be split ({problem})", subject)
        allow = [r for r in self._allow if r.tool == "Bash"]
        covering = [next((r for r in allow if r.matches_command(p)), None) for p in parts]
        if all(covering):
            names = ", ".join(dict.fromkeys(r.text for r in covering if r is not None))
            return Decision("allow", f"allowed by {names}", subject, names)
        missing = [p for p, r in zip(parts, covering, strict=True) if r is None]
        shown = "; ".join(f"`{m}`" for m in missing[:3]) + (" …" if len(missing) > 3 else "")
        return Decision("ask", f"no allow rule covers {shown}", subject)

    def _all_commands(self, command: str, depth: int = 0) -> list[str]:
        parts = split_commands(command)
        if depth >= _MAX_INNER:
            return parts
        out: list[str] = []
        for part in parts:
            out.append(part)
            for script in _inner_scripts(part):
                out.extend(self._all_commands(script, depth + 1))
        return out

    def _protected_mentions(self, command: str) -> str | None:
        home = str(self.home)
        for word in words(command):
            for piece in (word, *word.split("=")[1:]):
                piece = piece.lstrip("0123456789&<>|")
                if piece.startswith("$HOME") or piece.startswith("${HOME}"):
                    piece = home + piece[5 if piece.startswith("$HOME") else 7 :]
                if not piece or piece.startswith("-"):
                    continue
                path = _abs(piece, self.home, self.workdir)
                if self._is_protected(path):
                    return str(path)
        return None


_CONTROL_PLANE = (
    "{subject} is part of the bot's control plane (its config, state, service units or "
    "shell start-up files); changes there always need your approval"
)
_SECRET = (
    "{path} looks like a secret; reading it needs an allow rule that names it, e.g. Read({rule})"
)
_PRIVATE = "{subject} is inside {folder}, which the tools do not read unless a rule names it"


def _abs(path: str | Path, home: Path, workdir: Path) -> PurePosixPath:
    text = str(path)
    if text == "~" or text.startswith("~/"):
        text = str(home) + text[1:]
    if not text.startswith("/"):
        text = str(workdir) + "/" + text
    return PurePosixPath(os.path.normpath(text))


def _unwrapped(command: str) -> list[str]:
    """The command as seen past leading assignments and wrappers, for deny and ask rules.

    After a wrapper (`sudo -u root rm …`, `xargs -0 rm`) every later word could be the
    command, so each suffix that starts with a non-option word is offered.
    """
    ws = command.split(" ")
    forms: list[str] = []
    i = 0
    while i < len(ws) and _is_assignment(ws[i]):
        i += 1
    if i:
        forms.append(" ".join(ws[i:]))
    if i < len(ws) and ws[i] in _WRAPPERS:
        forms += [" ".join(ws[j:]) for j in range(i + 1, len(ws)) if not ws[j].startswith("-")]
    return [f for f in forms if f]


def _is_assignment(word: str) -> bool:
    return "=" in word and word.split("=", 1)[0].isidentifier()


def _inner_scripts(command: str) -> list[str]:
    """Command text run by this command: `bash -c '…'`, `eval …`, `find … -exec … ;`."""
    ws = words(command)
    while ws and (ws[0] in _WRAPPERS or _is_assignment(ws[0]) or ws[0].startswith("-")):
        ws = ws[1:]
    if not ws:
        return []
    program = ws[0].rsplit("/", 1)[-1]
    scripts: list[str] = []
    if program in _SHELLS:
        for i, arg in enumerate(ws[1:-1], 1):
            if arg.startswith("-") and not arg.startswith("--") and "c" in arg:
                scripts.append(ws[i + 1])
                break
    elif program == "eval":
        scripts.append(" ".join(ws[1:]))
    for i, arg in enumerate(ws):
        if arg in ("-exec", "-execdir", "-ok", "-okdir"):
            tail = ws[i + 1 :]
            end = next((j for j, w in enumerate(tail) if w in (";", "+")), len(tail))
            scripts.append(" ".join(_quote(w) for w in tail[:end]))
    return scripts


def _quote(word: str) -> str:
    """Quote a word for splitting again, left readable when it needs no quotes."""
    plain = word and all(c.isalnum() or c in "@%+=:,./-{}_" for c in word)
    return word if plain else shlex.quote(word)


def _describe_call(tool_name: str, tool_input: Mapping[str, Any]) -> str:
    # Whole, never cut: the owner approves exactly what is shown, so nothing hides past a cut.
    try:
        text = json.dumps(dict(tool_input), ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(tool_input)
    return f"{tool_name} {text}"
