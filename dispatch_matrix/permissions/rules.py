"""Permission rules in Claude Code's syntax, parsed once and matched purely.

A rule is `Tool` or `Tool(specifier)`:

- `Bash(git status)` matches that exact command; `Bash(pytest:*)` matches `pytest` and
  `pytest …` (a word boundary: not `pytestfoo`); `*` is a wildcard anywhere
  (`Bash(npm run *)`, `Bash(git * main)`), `\\*` a literal star; a lone trailing ` *` also
  matches the bare command (`Bash(ls *)` matches `ls`). `Bash` and `Bash(*)` match all.
  Runs of blanks outside quotes count as one space. A rule without an unescaped `*` is
  *exact*: besides covering a simple command it covers a whole command line spelled the
  same way (how "always" answers are learned: `escape_command` makes a line literal).
  The shell judge also asks that a wildcard rule spell every option that is not known
  to be inert (`Bash(sed -i:*)` for `sed -i`): see `shelloptions.py`.
- `Read(…)`, `Write(…)`, `Edit(…)`, `Glob(…)`, `Grep(…)` take gitignore-style paths:
  `//abs/path` and `/abs/path` are absolute, `~/…` is in the home folder, `./…` and `a/b`
  are relative to the workdir, and a bare name without `/` (`*.env`) matches at any depth
  under the workdir. `*` stays within a folder, `**` crosses folders. A rule that matches a
  folder also matches everything inside it.
- `mcp__server` matches every tool of that server, `mcp__server__tool` one tool.
- Any other name (`schedule`, `send_file`) matches that tool and takes no specifier.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dispatch_matrix.core.errors import ConfigError
from dispatch_matrix.permissions.globs import GlobSyntaxError, has_magic, literal_prefix, translate

# Our lower-case tool names, as Claude Code spells them in rules.
CANONICAL_TOOLS = {
    "bash": "Bash",
    "read": "Read",
    "write": "Write",
    "edit": "Edit",
    "glob": "Glob",
    "grep": "Grep",
}
PATH_TOOLS = frozenset({"Read", "Write", "Edit", "Glob", "Grep"})
# Every tool name a rule may give besides `mcp__…` ones and prefixes ending in `*`: the
# built-in tools as Claude Code spells them, the API's web tools, and the bot's own.
RULE_TOOLS = frozenset(
    {*CANONICAL_TOOLS.values(), "WebSearch", "WebFetch", "web_search", "web_fetch"}
    | {"send_file", "memory", "schedule"}
)
_RULE = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*\*?)(?:\((.*)\))?", re.DOTALL)
_EXAMPLES = 'e.g. "Bash(pytest:*)", "Read(~/Projects/**)", "Write(~/Reviews/**)" or "Grep"'


def canonical_tool(name: str) -> str:
    """The rule spelling of a tool name (`bash` → `Bash`); other names unchanged."""
    return CANONICAL_TOOLS.get(name.lower(), name) if not name.startswith("mcp__") else name


@dataclass(frozen=True)
class PathPattern:
    """A compiled path specifier."""

    regex: re.Pattern[str]
    # The folder the pattern's literal part names (where its wildcards start).
    literal_base: PurePosixPath
    # The last segment as written (to tell whether a rule names a file such as `.env`).
    last_segment: str

    def matches(self, path: PurePosixPath) -> bool:
        """Whether `path` or a folder above it matches (gitignore semantics)."""
        return any(self.regex.fullmatch(str(p)) for p in (path, *path.parents))

    def matches_any_case(self, path: PurePosixPath) -> bool:
        """`matches`, without regard to case: for deny and ask rules, since on a
        case-insensitive file system `~/PRIVATE/x` is `~/private/x`."""
        folded = re.compile(self.regex.pattern, re.DOTALL | re.IGNORECASE)
        return any(folded.fullmatch(str(p)) for p in (path, *path.parents))

    def names(self, path: PurePosixPath) -> bool:
        """Whether the pattern matches `path` itself through a literal name, not only `*`."""
        literal = re.sub(r"\[[^\]]*\]|[*?]", "", self.last_segment)
        return bool(literal) and bool(self.regex.fullmatch(str(path)))


@dataclass(frozen=True)
class Rule:
    """One parsed rule; `text` is the rule as written in the config."""

    text: str
    tool: str
    command: re.Pattern[str] | None = None
    path: PathPattern | None = None
    # The specifier as written (blanks collapsed), for Bash rules.
    spec: str | None = None

    @property
    def bare(self) -> bool:
        """Whether the rule names the tool without a specifier (matches every use)."""
        return self.command is None and self.path is None

    def names_tool(self, tool_name: str) -> bool:
        """Whether the rule is about `tool_name` (ignoring its specifier)."""
        name = canonical_tool(tool_name)
        if self.tool.endswith("*"):
            return name.startswith(self.tool[:-1])
        if self.tool.startswith("mcp__") and self.tool.count("__") == 1:
            return name == self.tool or name.startswith(self.tool + "__")
        return name == self.tool

    @property
    def covers_everything(self) -> bool:
        """Whether the rule is `Bash` or `Bash(*)`: every command, every side door."""
        return self.bare or self.spec == "*"

    @property
    def exact(self) -> bool:
        """Whether the rule has no wildcard: it names one command spelled one way."""
        return (
            self.spec is not None
            and not self.spec.endswith(":*")
            and not re.search(r"(?<!\\)\*", self.spec)
        )

    def matches_command(self, command: str) -> bool:
        """Whether a Bash rule covers one simple command."""
        return self.bare or (self.command is not None and bool(self.command.fullmatch(command)))

    def matches_path(self, path: PurePosixPath) -> bool:
        """Whether a path rule covers `path`."""
        return self.bare or (self.path is not None and self.path.matches(path))

    def restricts_path(self, path: PurePosixPath) -> bool:
        """Whether a deny or ask rule covers `path`, in any case of its names."""
        return self.bare or (self.path is not None and self.path.matches_any_case(path))


def parse_rule(text: object, key: str, home: Path, workdir: Path) -> Rule:
    """One rule from the config; ConfigError naming `key` when it cannot be understood."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(key, "empty rule", f"write a rule, {_EXAMPLES}")
    raw = text.strip()
    match = _RULE.fullmatch(raw)
    if match is None:
        raise ConfigError(key, f"{raw!r} is not Tool or Tool(specifier)", f"write it {_EXAMPLES}")
    name, spec = match.group(1), match.group(2)
    tool = canonical_tool(name)
    if tool not in RULE_TOOLS and not tool.startswith("mcp__") and not tool.endswith("*"):
        # A misspelt name would never match, so the rule would silently do nothing.
        close = difflib.get_close_matches(tool, sorted(RULE_TOOLS), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        known = ", ".join(sorted(RULE_TOOLS, key=str.lower))
        raise ConfigError(
            key, f"{raw!r}: unknown tool {name!r}", f"{hint}the tools are {known}, or mcp__…"
        )
    if spec is None:
        return Rule(raw, tool)
    if not spec.strip():
        raise ConfigError(
            key, f"{raw!r} has an empty specifier", f"drop the () to match all {tool}"
        )
    if tool == "Bash":
        try:
            return Rule(raw, tool, command=compile_command(spec), spec=collapse_blanks(spec))
        except ValueError as err:
            raise ConfigError(key, f"{raw!r}: {err}", "write e.g. Bash(pytest:*)") from None
    if tool in PATH_TOOLS:
        try:
            return Rule(raw, tool, path=compile_path(spec, home, workdir))
        except (ValueError, GlobSyntaxError) as err:
            raise ConfigError(key, f"{raw!r}: {err}", f"write e.g. {tool}(~/Projects/**)") from None
    raise ConfigError(
        key, f"{raw!r}: {name} takes no specifier", f"write just {name!r} to name the tool"
    )


def compile_command(spec: str) -> re.Pattern[str]:
    """A Bash specifier as a regex over one simple command (blanks collapsed)."""
    spec = collapse_blanks(spec)
    if spec.endswith(":*"):
        prefix = spec[:-2].rstrip()
        if not prefix:
            raise ValueError("nothing before ':*'")
        return re.compile(_wildcards(prefix) + r"(?:\s.*)?", re.DOTALL)
    stars = len(re.findall(r"(?<!\\)\*", spec))
    if stars == 1 and spec.endswith(" *"):
        # `ls *` also matches a bare `ls`, as in Claude Code.
        return re.compile(_wildcards(spec[:-2].rstrip()) + r"(?:\s.*)?", re.DOTALL)
    return re.compile(_wildcards(spec), re.DOTALL)


def collapse_blanks(text: str) -> str:
    """`text` stripped, each run of blanks outside quotes made one space (quoted blanks
    are part of a word and stay as written)."""
    out: list[str] = []
    quote = ""
    i = 0
    text = text.strip()
    while i < len(text):
        c = text[i]
        if c == "\\" and quote != "'":
            out.append(text[i : i + 2])
            i += 2
            continue
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in " \t":
            if out and out[-1] != " ":
                out.append(" ")
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def escape_command(command: str) -> str:
    """A command line as a Bash specifier that matches exactly it: every `*` escaped, so
    learning `rm *.tmp` never allows `rm -rf / x.tmp`."""
    return collapse_blanks(command).replace("*", "\\*")


def _wildcards(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("\\*", i):
            out.append(re.escape("*"))
            i += 2
            continue
        out.append(".*" if text[i] == "*" else re.escape(text[i]))
        i += 1
    return "".join(out)


def compile_path(spec: str, home: Path, workdir: Path) -> PathPattern:
    """A gitignore-style path specifier, anchored at /, the home folder or the workdir."""
    s = spec.strip()
    if s.startswith("!"):
        raise ValueError("negated patterns ('!') are not supported; use a deny rule")
    if s.startswith("//"):
        base, rel, anchored = PurePosixPath("/"), s[2:], True
    elif s == "~" or s.startswith("~/"):
        base, rel, anchored = PurePosixPath(home), s[2:], True
    elif s.startswith("/"):
        base, rel, anchored = PurePosixPath("/"), s[1:], True
    elif s.startswith("./"):
        base, rel, anchored = PurePosixPath(workdir), s[2:], True
    else:
        base, rel, anchored = PurePosixPath(workdir), s, "/" in s.rstrip("/")
    segments: list[str] = []
    for segment in rel.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments and (segments[-1] == "**" or has_magic(segments[-1])):
                raise ValueError("'..' after a wildcard")
            if segments:
                segments.pop()
            else:
                base = base.parent
            continue
        segments.append(segment)
    base = PurePosixPath(os.path.normpath(base))
    prefix = re.escape(str(base).rstrip("/"))
    body = "/".join(segments)
    if not segments:
        regex = prefix or "/"
    elif segments == ["**"]:
        regex = prefix + "(?:/.*)?"
    elif anchored:
        regex = prefix + "/" + translate(body)
    else:
        regex = prefix + "/(?:.*/)?" + translate(body)
    literal = literal_prefix(body) if anchored else ""
    return PathPattern(
        regex=re.compile(regex, re.DOTALL),
        literal_base=base / literal if literal else base,
        last_segment=segments[-1] if segments else "",
    )


def parse_rules(rules: list[str], list_name: str, home: Path, workdir: Path) -> list[Rule]:
    """A config list (`allow`, `ask` or `deny`), each rule keyed `permissions.<list>[i]`."""
    return [
        parse_rule(text, f"permissions.{list_name}[{index}]", home, workdir)
        for index, text in enumerate(rules)
    ]
