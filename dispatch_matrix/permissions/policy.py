"""The permission policy every tool call passes first: allow, ask or deny. Pure.

Rules use Claude Code's syntax (see `rules.py`). Deny beats ask beats allow, and a call no
rule allows is asked about. On top of the rules:

- The control plane — the config file, the state folder, service units
  (`~/.config/systemd/**`, `~/Library/LaunchAgents/**`), shell start-up files and anything
  inside a `.git` folder (hooks and config run later, outside the sandbox) — is always
  asked about before a write or edit, and before a shell command that mentions it, whatever
  the allow rules say (a deny rule still denies).
- Secret-looking files (`.env`, `.env.*`, `*.pem`, `id_rsa*`, `id_ed25519*`, …) and private
  folders (the state folder) are denied to reading tools unless an allow rule names them
  (`Read(~/app/.env)` or `Read(**/*.pem)`; `Read(~/**)` does not).
- A shell command is judged by `shelljudge.py`, which fails closed by construction: only
  a line of literal words (simple commands joined by `&&`, `||`, `;`, `|`, newlines;
  literal redirections) can be allowed, every part by an allow rule and every option by
  the program's table of inert options (`shelloptions.py`); any expansion, substitution
  or construct asks. Deny and ask rules see every token of the raw text (`\\rm`, `/bin/rm`,
  `$(rm …)`, `bash -c 'rm …'`). Every argument is judged as a Read of the path it may name
  (a path deny rule denies `cat ~/private/x`). The Decision lists every part that made it
  ask. This is a convenience, not the wall: the OS sandbox is.
- "Always" (`learn`) adds an exact rule for the call: a shell line with its `*` escaped,
  a file tool's absolute path with its glob characters escaped.
- The bot's own tools (`schedule`, `memory`) need no rule; a deny rule still stops them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from dispatch_matrix.core.errors import ConfigError
from dispatch_matrix.core.paths import within, within_any_case
from dispatch_matrix.permissions.globs import DEFAULT_SECRET_GLOBS, name_matches
from dispatch_matrix.permissions.rules import (
    PATH_TOOLS,
    Rule,
    canonical_tool,
    escape_command,
    parse_rule,
    parse_rules,
)
from dispatch_matrix.permissions.shellfindings import Finding, Kind, ShellRules
from dispatch_matrix.permissions.shelljudge import judge
from dispatch_matrix.permissions.shellpaths import (
    CONTROL_PLANE,
    glob_reaches,
    may_name_secret,
    normal_path,
)

Verdict = Literal["allow", "ask", "deny"]

DEFAULT_SELF_TOOLS = frozenset({"schedule", "memory"})
# Tools of ours that read the file their input names: judged as a Read of that path.
DEFAULT_READ_TOOLS: Mapping[str, str] = {"send_file": "path"}
CONTROL_PLANE_IN_HOME = (
    ".config/dispatch-matrix",
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
# Read only when a rule names them: the service's env file (`install-service` puts the API
# key there).
PRIVATE_IN_HOME = (".config/dispatch-matrix/env",)
# And outside it: a container's or a pod's secret files (the sandbox hides them as
# `sandbox.spec.HOST_SECRETS`), and the users' runtime folders (the sandbox hides the
# user's: agent and keyring sockets, podman's registry logins in containers/auth.json).
# The judge must refuse them by itself; /var/run is a link to /run.
PRIVATE_ABSOLUTE = ("/run/secrets", "/var/run/secrets", "/run/user", "/var/run/user")
# Which rules govern a call: Read rules also govern glob and grep, Edit and Write each other.
_GOVERNED_BY = {
    "Read": ("Read",),
    "Glob": ("Glob", "Read"),
    "Grep": ("Grep", "Read"),
    "Write": ("Write", "Edit"),
    "Edit": ("Edit", "Write"),
}
# Findings that a learned exact rule could never cover: no rule is learned for them.
_UNLEARNABLE = frozenset({"deny", "ask-rule", "protected", "unmodelled"})
_PATH_SPECIALS = frozenset("*?[]{}\\")


@dataclass(frozen=True)
class Decision:
    """What the policy says about one call, and what the owner is shown when asked."""

    verdict: Verdict
    reason: str
    # The exact command or path the call touches.
    subject: str
    # The rule that decided, as written in the config; None for a default.
    rule: str | None = None
    # Every part of a shell command that was not allowed, as written (for the question).
    uncovered: tuple[str, ...] = ()
    # The rule an "always" would learn (shown on the poll's Always answer); None: none can.
    learns: str | None = None


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
    # How to follow symlinks (core.paths.canonicalize); by default paths are judged as spelled.
    canonical: Callable[[Path], Path] | None = None

    def __post_init__(self) -> None:
        self._allow = parse_rules(list(self.allow), "allow", self.home, self.workdir)
        self._ask = parse_rules(list(self.ask), "ask", self.home, self.workdir)
        self._deny = parse_rules(list(self.deny), "deny", self.home, self.workdir)
        home = PurePosixPath(self.home)
        self._protected = [_abs(p, self.home, self.workdir) for p in self.protected] + [
            home / rel for rel in CONTROL_PLANE_IN_HOME
        ]
        self._private = [
            *(_abs(p, self.home, self.workdir) for p in self.private),
            *(home / rel for rel in PRIVATE_IN_HOME),
            *(PurePosixPath(p) for p in PRIVATE_ABSOLUTE),
        ]
        self._secret_globs = tuple(self.secret_globs)
        self._self_tools = frozenset(self.self_tools)
        # What the shell judge is given changes only with the rules (a learned one): made
        # here and in `learn`, not at every command.
        self._shell = self._shell_rules()

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
        """Allow this exact call from now on ("always allow"); returns the rule learned
        (for the owner to see), or None when no literal rule could cover the call (see
        `learnable`). Deny rules and the control plane still win: a learned rule is an
        allow rule like any other."""
        text = self.learnable(tool_name, tool_input)
        if text is None:
            return None
        self._allow.append(parse_rule(text, "learned", self.home, self.workdir))
        self._shell = self._shell_rules()
        return text

    def learnable(self, tool_name: str, tool_input: Mapping[str, Any]) -> str | None:
        """The rule "always" would learn for this call, learning nothing; None when no
        literal rule could cover it: a shell line with a construct the judge does not
        model, one that touches the control plane or meets an ask or deny rule, an MCP
        tool an ask or deny rule names. An MCP tool's rule is its full name
        (`mcp__SERVER__TOOL`): its calls take no specifier, so it covers all of them."""
        tool = canonical_tool(tool_name)
        text: str | None = None
        if tool == "Bash":
            command = str(tool_input.get("command", "")).strip()
            findings = judge(command, self._shell) if command else ()
            if command and not any(f.kind in _UNLEARNABLE for f in findings):
                text = f"Bash({escape_command(command)})"
        elif tool in PATH_TOOLS:
            key = "file_path" if tool in ("Read", "Write", "Edit") else "path"
            target = tool_input.get(key)
            if isinstance(target, str) and target.strip():
                spelled = str(_abs(target, self.home, self.workdir))
                literal = "".join("\\" + c if c in _PATH_SPECIALS else c for c in spelled)
                text = f"{tool}(/{literal})"
        elif tool_name.startswith("mcp__") and tool_name.count("__") >= 2:
            named = any(r.names_tool(tool_name) for _, rules in self._restrictive() for r in rules)
            text = None if named else tool_name
        if text is None:
            return None
        try:
            parse_rule(text, "learned", self.home, self.workdir)
        except ConfigError:
            return None  # a call no rule can spell exactly is simply asked again next time
        return text

    def rules_naming(self, tool_name: str) -> list[tuple[Verdict, str]]:
        """Every rule that governs a tool, as (list, rule as written), deny first (`!tools`)."""
        tool = canonical_tool(tool_name)
        # A tool judged as a Read of its path (send_file) is governed by Read rules too.
        family = _GOVERNED_BY.get(tool) or (
            ("Read", tool) if tool_name in self.read_tools else None
        )
        return [
            (verdict, rule.text)
            for verdict, rules in (*self._restrictive(), ("allow", self._allow))
            for rule in rules
            if (rule.tool in family if family else rule.names_tool(tool_name))
        ]

    def denied_to_read(self) -> list[PurePosixPath]:
        """The folders and files a `Read` deny rule covers whole, in the home folder: for the
        OS sandbox to hide as well. The shell judge sees paths as spelled, so a link that
        leads into `~/private` (kept in a repository, unpacked from an archive) is read by a
        command the rules allow; hidden, it shows nothing. Rules on names (`**/.env`) cover
        no one path, and what holds the home or the workdir is left to the judge."""
        home, workdir = PurePosixPath(self.home), PurePosixPath(self.workdir)
        found: list[PurePosixPath] = []
        for rule in self._deny:
            if rule.tool != "Read" or rule.path is None:
                continue
            base = rule.path.literal_base
            whole = rule.path.last_segment in ("", "*", "**") or bool(
                rule.path.regex.fullmatch(str(base))
            )
            if whole and within(base, home) and not within(workdir, base):
                found.append(base)
        return list(dict.fromkeys(found))

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
        # Deny and ask rules, secret names, private folders and the control plane match in
        # any case (a case-insensitive file system reads `~/.SSH` as `~/.ssh`); allow rules
        # match as spelled: every difference fails closed.
        for rule in self._deny:
            if rule.tool in family and any(rule.restricts_path(p) for p in forms):
                return Decision("deny", f"{subject} is denied by {rule.text}", subject, rule.text)
        if tool in ("Read", "Glob", "Grep"):
            refused = self._secret_refusal(forms, family, subject)
            if refused is not None:
                return refused
        writing = tool in ("Write", "Edit")
        if writing and any(self._is_protected(p) for p in forms):
            return Decision("ask", CONTROL_PLANE.format(subject=subject), subject)
        for rule in self._ask:
            if rule.tool in family and any(rule.restricts_path(p) for p in forms):
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
            if name_matches(path.name, self._secret_globs) or name_matches(
                path.name.lower(), self._secret_globs
            ):
                named = any(
                    r.tool in family and r.path is not None and r.path.names(path)
                    for r in self._allow
                )
                if not named:
                    reason = _SECRET.format(path=path, rule=self._spelled(path))
                    return Decision("deny", reason, subject)
            for folder in self._private:
                if within_any_case(path, folder) and not any(
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
        # A repository's own folder (or a `.git` file, which points git elsewhere): its
        # hooks and config run later, outside the sandbox. git writes there itself; a tool
        # or a redirection has no ordinary reason to.
        inside_git = any(part.lower() == ".git" for part in path.parts)
        return inside_git or any(within_any_case(path, p) for p in self._protected)

    # Shell commands -------------------------------------------------------------------

    def _bash(self, tool_input: Mapping[str, Any]) -> Decision:
        command = tool_input.get("command")
        if not isinstance(command, str):
            return Decision("deny", "the call has no command", "")
        if not command.strip():
            return Decision("allow", "no command to run", "")
        findings = judge(command, self._shell)
        denied = next((f for f in findings if f.verdict == "deny"), None)
        if denied is not None:
            return Decision("deny", denied.reason, command, denied.rule, (denied.part,))
        asks = sorted((f for f in findings if f.verdict == "ask"), key=lambda f: _ASK_ORDER[f.kind])
        if asks:
            reason = "; ".join(dict.fromkeys(f.reason for f in asks))
            rule = next((f.rule for f in asks if f.kind == "ask-rule"), None)
            parts = tuple(dict.fromkeys(f.part for f in asks))
            return Decision("ask", reason, command, rule, parts)
        names = ", ".join(dict.fromkeys(f.rule for f in findings if f.rule))
        if not names:
            return Decision("allow", "the command runs nothing", command)
        return Decision("allow", f"allowed by {names}", command, names)

    def _shell_rules(self) -> ShellRules:
        def bash(rules: list[Rule]) -> tuple[Rule, ...]:
            return tuple(r for r in rules if r.tool == "Bash")

        return ShellRules(
            allow=bash(self._allow),
            ask=bash(self._ask),
            deny=bash(self._deny),
            home=PurePosixPath(self.home),
            workdir=PurePosixPath(self.workdir),
            protected=tuple(self._protected),
            judge_path=self._redirect_target,
            reaches_denied=self._reaches_denied,
            denied_inside=self._denied_inside,
            secret_globs=self._secret_globs,
        )

    def _reaches_denied(self, glob: PurePosixPath) -> str | None:
        """What a shell glob may match that reading tools may not: a path a deny rule
        names, or a private folder; None when nothing."""
        for rule in self._deny:
            if rule.tool not in _GOVERNED_BY["Read"] or rule.path is None:
                continue
            pattern = rule.path
            if not glob_reaches(glob, pattern.literal_base):
                continue
            last = pattern.last_segment
            if last in ("", "**") or may_name_secret(glob.name, (last,)):
                return f"what {rule.text} denies"
        for private in self._private:
            if glob_reaches(glob, PurePosixPath(private)):
                return f"{private}, which the tools do not read"
        return None

    def _denied_inside(self, folder: PurePosixPath) -> str | None:
        """A folder a deny rule covers whole, or a private folder, strictly inside
        `folder`: what a program walking `folder` would read. Rules on names (`**/.env`)
        are left to the OS sandbox here, or every `grep -r` would ask."""
        for rule in self._deny:
            if rule.tool not in _GOVERNED_BY["Read"] or rule.path is None:
                continue
            base = rule.path.literal_base
            if rule.path.last_segment in ("", "**") and base != folder and within(base, folder):
                return f"{base}, which {rule.text} denies"
        for private in self._private:
            if private != folder and within(private, PurePosixPath(folder)):
                return f"{private}, which the tools do not read"
        return None

    def _redirect_target(self, tool: str, path: PurePosixPath) -> Finding:
        """A redirection's target judged as a Write or Read of that path."""
        decision = self._path(tool, str(path), "path")
        if decision.verdict != "ask":
            final: Kind = "deny" if decision.verdict == "deny" else "allow"
            return Finding(final, str(path), decision.reason, decision.rule)
        if self._is_protected(path):
            return Finding("protected", str(path), decision.reason)
        asked: Kind = "ask-rule" if decision.rule is not None else "uncovered"
        return Finding(asked, str(path), decision.reason, decision.rule)


_ASK_ORDER = {"ask-rule": 0, "protected": 1, "unmodelled": 2, "uncovered": 3}
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
    return normal_path(text)


def _describe_call(tool_name: str, tool_input: Mapping[str, Any]) -> str:
    # Whole, never cut: the owner approves exactly what is shown, so nothing hides past a cut.
    try:
        text = json.dumps(dict(tool_input), ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(tool_input)
    return f"{tool_name} {text}"
