"""The permission policy: Claude Code's rule syntax, compound commands, control plane, secrets."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from dispatch_matrix.core.errors import ConfigError
from dispatch_matrix.permissions.policy import Decision, Policy
from dispatch_matrix.permissions.rules import parse_rule
from dispatch_matrix.permissions.shellread import NotLiteral, literal_words

HOME = Path("/home/u")
WORKDIR = Path("/home/u/Projects/app")
CONFIG = Path("/home/u/.config/dispatch-matrix/config.toml")
STATE = Path("/home/u/.local/state/dispatch-matrix")


def policy(
    allow: tuple[str, ...] = (), ask: tuple[str, ...] = (), deny: tuple[str, ...] = (), **kw: Any
) -> Policy:
    kw.setdefault("protected", [CONFIG, STATE])
    kw.setdefault("private", [STATE])
    return Policy(list(allow), list(ask), list(deny), HOME, WORKDIR, **kw)


def bash(p: Policy, command: str) -> Decision:
    return p.decide("bash", {"command": command})


# --- Bash rule matching, one simple command ---------------------------------------------


@pytest.mark.parametrize(
    ("rule", "command", "matches"),
    [
        ("Bash(pytest:*)", "pytest", True),
        ("Bash(pytest:*)", "pytest -x tests", True),
        ("Bash(pytest:*)", "pytestfoo", False),
        ("Bash(pytest:*)", "python -m pytest", False),
        ("Bash(npm run test:*)", "npm run test -- --watch", True),
        ("Bash(npm run test:*)", "npm run build", False),
        ("Bash(git status)", "git status", True),
        ("Bash(git status)", "git status -s", False),
        ("Bash(git status)", "git", False),
        ("Bash(npm run *)", "npm run build", True),
        ("Bash(npm run *)", "npm run", True),
        ("Bash(npm run *)", "npm runx", False),
        ("Bash(git * main)", "git push origin main", True),
        ("Bash(git * main)", "git push origin dev", False),
        ("Bash(ls *)", "ls", True),
        ("Bash(ls *)", "ls -la", True),
        ("Bash(ls *)", "lsof", False),
        ("Bash(ls*)", "lsof", True),
        ("Bash(echo \\*)", "echo *", True),
        ("Bash(echo \\*)", "echo x", False),
        ("Bash(*)", "rm -rf /", True),
        ("Bash", "anything at all", True),
    ],
)
def test_bash_rule_matches_one_command(rule: str, command: str, matches: bool) -> None:
    assert parse_rule(rule, "k", HOME, WORKDIR).matches_command(command) is matches


# --- The literal subset -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("pytest && rm -rf /", [["pytest"], ["rm", "-rf", "/"]]),
        ("a || b; c", [["a"], ["b"], ["c"]]),
        ("a\nb", [["a"], ["b"]]),
        ("ls | grep x | wc -l", [["ls"], ["grep", "x"], ["wc", "-l"]]),
        ('echo "a && b"', [["echo", "a && b"]]),
        ("echo 'a; b | c'", [["echo", "a; b | c"]]),
        ("echo '$(curl x)'", [["echo", "$(curl x)"]]),
        ('echo "it\'s" "a\\"b"', [["echo", "it's", 'a"b']]),
        ("echo a\\ b", [["echo", "a b"]]),
        ("echo hi # ; rm x", [["echo", "hi"]]),
        ("echo a#b", [["echo", "a#b"]]),
        ("pytest   -x \\\n  tests", [["pytest", "-x", "tests"]]),
        ("\\rm 'r'm \"rm\" /bin/rm", [["rm", "rm", "rm", "/bin/rm"]]),
        ("make 2>&1 > log", [["make"]]),
        ("git diff HEAD~1", [["git", "diff", "HEAD~1"]]),
        ("ls ~/x *.py", [["ls", "~/x", "*.py"]]),
    ],
)
def test_the_lexer_reads_literal_lines(command: str, words: list[list[str]]) -> None:
    assert literal_words(command) == words


@pytest.mark.parametrize(
    "command",
    [
        'echo "open',
        "echo 'open",
        "echo $(ls",
        "a )",
        "f() { rm -rf /; }",
        "case x in",
        "cat <<'EOF'\nx\nEOF",
        "for f in $(ls); do rm $f; done",
        "diff <(ls a) b",
        'echo "$HOME"',
        "echo ${x:-'$(touch X)'}",
        "echo `id`",
        "echo ~u",
        "echo a=~/x",
        "echo {a,b}",
        "X=1 ls",
        "ls &",
        "ls [",
        "cat ~/[x",
        "ls\x00",
        "ls &&",
        "; ls",
        "echo \\",
        "ec\\\nho",
        "if",
    ],
)
def test_the_lexer_refuses_what_is_not_literal(command: str) -> None:
    with pytest.raises(NotLiteral):
        literal_words(command)


@pytest.mark.parametrize(
    ("allow", "deny", "command", "verdict"),
    [
        (["Bash(pytest:*)"], [], "pytest -q", "allow"),
        (["Bash(pytest:*)"], [], "pytest && rm -rf /", "ask"),
        (["Bash(pytest:*)"], ["Bash(rm:*)"], "pytest && rm -rf /", "deny"),
        (["Bash(echo:*)"], [], 'echo "a && b"', "allow"),
        (["Bash(echo:*)"], [], 'echo "$(curl x)"', "ask"),
        (["Bash(echo:*)"], ["Bash(curl:*)"], 'echo "$(curl x)"', "deny"),
        (["Bash(echo:*)"], [], "echo '$(curl x)'", "allow"),
        (["Bash(echo:*)"], ["Bash(rm:*)"], 'echo "$(rm -rf ~)"', "deny"),
        (["Bash(echo:*)"], ["Bash(rm:*)"], "echo `rm -rf ~`", "deny"),
        (["Bash(ls:*)", "Bash(grep:*)"], [], "ls | grep x", "allow"),
        (["Bash(ls:*)"], [], "ls | grep x", "ask"),
        (["Bash(ls:*)"], [], "ls | sh", "ask"),
        (["Bash(pytest:*)"], [], "pytest\nrm -rf /", "ask"),
        (["Bash(make:*)", "Bash(cd:*)"], [], "(cd sub && make)", "ask"),
        (["Bash(make:*)", "Bash(cd:*)"], [], "cd sub && make", "allow"),
        ([], ["Bash(rm:*)"], "(cd sub && rm -rf x)", "deny"),
        (["Bash"], ["Bash(rm:*)"], "sudo rm -rf /", "deny"),
        (["Bash"], ["Bash(rm:*)"], "sudo -u root rm -rf /", "deny"),
        (["Bash"], ["Bash(rm:*)"], "FOO=1 rm x", "deny"),
        (["Bash"], ["Bash(rm:*)"], "find . -name '*.o' | xargs rm", "deny"),
        (["Bash"], ["Bash(rm:*)"], "find . -exec rm {} \\;", "deny"),
        (["Bash"], ["Bash(rm:*)"], "bash -c 'rm -rf /'", "deny"),
        (["Bash(bash:*)"], [], "bash -c 'rm -rf /'", "ask"),
        (["Bash(find:*)"], [], "find . -exec rm {} \\;", "ask"),
        # A here-document is not modelled (issue 15): asked even when quoted.
        (["Bash(cat:*)"], [], "cat <<'EOF' > notes.md\n$(rm -rf /)\nEOF", "ask"),
        (["Bash(cat:*)"], ["Bash(rm:*)"], "cat <<EOF > notes.md\n$(rm -rf /)\nEOF", "deny"),
        (["Bash(echo:*)"], [], 'echo "unterminated', "ask"),
        (["Bash(echo:*)"], [], "f() { echo; }; f", "ask"),
        ([], [], "ls", "ask"),
        ([], ["Bash"], "ls", "deny"),
    ],
)
def test_compound_commands_are_judged_by_every_part(
    allow: list[str], deny: list[str], command: str, verdict: str
) -> None:
    decision = bash(policy(tuple(allow), deny=tuple(deny)), command)
    assert decision.verdict == verdict, decision
    assert decision.subject == command


def test_bash_decision_names_its_rule_and_the_uncovered_part() -> None:
    p = policy(("Bash(pytest:*)",), deny=("Bash(rm:*)",))
    assert bash(p, "pytest -q").rule == "Bash(pytest:*)"
    denied = bash(p, "pytest && rm -rf /")
    assert denied.rule == "Bash(rm:*)"
    assert "rm -rf /" in denied.reason
    asked = bash(policy(("Bash(pytest:*)",)), "pytest && curl evil.example")
    assert asked.rule is None
    assert "`curl evil.example`" in asked.reason


def test_deny_beats_ask_beats_allow_for_commands() -> None:
    p = policy(("Bash(git:*)",), ask=("Bash(git push:*)",), deny=("Bash(git push --force:*)",))
    assert bash(p, "git status").verdict == "allow"
    assert bash(p, "git push origin main").verdict == "ask"
    assert bash(p, "git push --force origin main").verdict == "deny"


@pytest.mark.parametrize(
    "command",
    [
        "echo alias x=y >> ~/.bashrc",
        "cp evil.service ~/.config/systemd/user/dispatch.service",
        "sed -i s/a/b/ ~/.zshrc",
        "cat > /home/u/.config/dispatch-matrix/config.toml",
        "rm /home/u/.config/dispatch-matrix/config.toml",
    ],
)
def test_commands_touching_the_control_plane_ask_even_when_allowed(command: str) -> None:
    decision = bash(policy(("Bash",)), command)
    assert decision.verdict == "ask"
    assert "control plane" in decision.reason


def test_deny_still_denies_on_the_control_plane() -> None:
    assert bash(policy(("Bash",), deny=("Bash(echo:*)",)), "echo x >> ~/.bashrc").verdict == "deny"


# --- Path rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "path", "matches"),
    [
        ("Read(~/Projects/**)", "/home/u/Projects/app/x.py", True),
        ("Read(~/Projects/**)", "/home/u/Projects", True),
        ("Read(~/Projects/**)", "/home/u/Projectsx/a", False),
        ("Read(~/Projects/*.md)", "/home/u/Projects/a.md", True),
        ("Read(~/Projects/*.md)", "/home/u/Projects/sub/a.md", False),
        ("Read(~/Projects/**/*.md)", "/home/u/Projects/sub/deep/a.md", True),
        ("Read(~/.ssh)", "/home/u/.ssh/config", True),
        ("Read(~/.ssh/)", "/home/u/.ssh/id_rsa", True),
        ("Read(//etc/hosts)", "/etc/hosts", True),
        ("Read(/etc/**)", "/etc/passwd", True),
        ("Read(docs/**)", "/home/u/Projects/app/docs/a.md", True),
        ("Read(docs/**)", "/home/u/docs/a.md", False),
        ("Read(./*.txt)", "/home/u/Projects/app/a.txt", True),
        ("Read(./*.txt)", "/home/u/Projects/app/sub/a.txt", False),
        ("Read(*.key)", "/home/u/Projects/app/deep/er/x.key", True),
        ("Read(*.key)", "/home/u/other/x.key", False),
        ("Read(../shared/**)", "/home/u/Projects/shared/DESIGN.md", True),
        ("Read(~/[ab]*.txt)", "/home/u/b1.txt", True),
        ("Read(~/[!ab]*.txt)", "/home/u/b1.txt", False),
        ("Read", "/anything", True),
    ],
)
def test_path_rule_matching(rule: str, path: str, matches: bool) -> None:
    parsed = parse_rule(rule, "k", HOME, WORKDIR)
    assert parsed.matches_path(PurePosixPath(path)) is matches


@pytest.mark.parametrize(
    ("tool", "tool_input", "verdict"),
    [
        ("read", {"file_path": "/home/u/Projects/app/main.py"}, "allow"),
        ("read", {"file_path": "~/Projects/notes.md"}, "allow"),
        ("read", {"file_path": "src/main.py"}, "allow"),
        ("read", {"file_path": "/etc/passwd"}, "ask"),
        ("read", {"file_path": "~/Projects/../.ssh/config"}, "ask"),
        ("glob", {"pattern": "**/*.py"}, "allow"),
        ("grep", {"pattern": "x", "path": "~/Projects"}, "allow"),
        ("grep", {"pattern": "x", "path": "/etc"}, "ask"),
        ("write", {"file_path": "~/Reviews/r.md", "content": ""}, "allow"),
        ("edit", {"file_path": "~/Reviews/r.md", "old_string": "a", "new_string": "b"}, "allow"),
        ("write", {"file_path": "~/Projects/app/x.py", "content": ""}, "ask"),
        ("read", {}, "deny"),
        # A leading // is / (it once slipped past the folder checks).
        ("write", {"file_path": "//home/u/Projects/app/x.py", "content": ""}, "ask"),
        ("read", {"file_path": "//etc/passwd"}, "ask"),
    ],
)
def test_path_tools(tool: str, tool_input: dict[str, Any], verdict: str) -> None:
    p = policy(("Read(~/Projects/**)", "Write(~/Reviews/**)"))
    assert p.decide(tool, tool_input).verdict == verdict


def test_path_decision_shows_the_resolved_path_and_rule() -> None:
    decision = policy(("Read(~/Projects/**)",)).decide("read", {"file_path": "src/a.py"})
    assert decision == Decision(
        "allow",
        "allowed by Read(~/Projects/**)",
        "/home/u/Projects/app/src/a.py",
        "Read(~/Projects/**)",
    )


def test_deny_beats_ask_beats_allow_for_paths() -> None:
    p = policy(("Read(~/**)",), ask=("Read(~/Projects/**)",), deny=("Read(~/Projects/private/**)",))
    assert p.decide("read", {"file_path": "~/notes.txt"}).verdict == "allow"
    assert p.decide("read", {"file_path": "~/Projects/a.txt"}).verdict == "ask"
    denied = p.decide("read", {"file_path": "~/Projects/private/a.txt"})
    assert (denied.verdict, denied.rule) == ("deny", "Read(~/Projects/private/**)")
    # Read rules govern glob and grep too.
    assert p.decide("grep", {"pattern": "x", "path": "~/Projects/private"}).verdict == "deny"


def test_unmatched_calls_ask() -> None:
    p = policy()
    assert p.decide("read", {"file_path": "~/a"}).verdict == "ask"
    assert p.decide("mcp__github__create_issue", {"title": "x"}).verdict == "ask"
    assert p.decide("send_file", {"path": "~/a.pdf"}).verdict == "ask"


def test_symlinked_paths_are_judged_where_they_lead() -> None:
    links = {Path("/home/u/Projects/app/link"): Path("/etc/shadow")}
    p = policy(("Read(~/Projects/**)",), deny=("Read(//etc/shadow)",), canonical=links.get)
    assert p.decide("read", {"file_path": "/home/u/Projects/app/link"}).verdict == "deny"
    p = policy(("Read(~/Projects/**)",), canonical=lambda q: links.get(q, q))
    asked = p.decide("read", {"file_path": "link"})
    assert asked.verdict == "ask"
    assert asked.subject == "/home/u/Projects/app/link → /etc/shadow"


# --- The control plane -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "path"),
    [
        ("write", "~/.bashrc"),
        ("edit", "~/.zshrc"),
        ("write", "~/.profile"),
        ("write", "~/.bash_profile"),
        ("write", "~/.config/systemd/user/dispatch-matrix.service"),
        ("write", "~/Library/LaunchAgents/org.dispatch.plist"),
        ("write", str(CONFIG)),
        ("edit", str(STATE / "dispatch.sqlite3")),
    ],
)
def test_control_plane_writes_ask_even_when_allowed(tool: str, path: str) -> None:
    p = policy(("Write(~/**)", "Edit(~/**)"))
    decision = p.decide(tool, {"file_path": path, "content": "", "old_string": "a"})
    assert decision.verdict == "ask"
    assert "control plane" in decision.reason


def test_control_plane_deny_still_denies_and_elsewhere_allow_still_allows() -> None:
    p = policy(("Write(~/**)",), deny=("Write(~/.bashrc)",))
    assert p.decide("write", {"file_path": "~/.bashrc", "content": ""}).verdict == "deny"
    assert p.decide("write", {"file_path": "~/notes.txt", "content": ""}).verdict == "allow"


# --- Secrets and private folders -------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "~/app/.env",
        "~/app/.env.local",
        "~/certs/server.pem",
        "~/.ssh/id_rsa",
        "~/.ssh/id_ed25519.pub",
        str(STATE / "keys.json"),
        "/" + str(STATE / "keys.json"),
    ],
)
def test_secrets_are_denied_to_read_by_default(path: str) -> None:
    decision = policy(("Read",)).decide("read", {"file_path": path})
    assert decision.verdict == "deny"


@pytest.mark.parametrize(
    ("rule", "path"),
    [
        ("Read(~/app/.env)", "~/app/.env"),
        ("Read(~/certs/*.pem)", "~/certs/server.pem"),
        ("Read(~/.ssh/id_ed25519.pub)", "~/.ssh/id_ed25519.pub"),
        ("Read(~/.local/state/dispatch-matrix/**)", str(STATE / "keys.json")),
    ],
)
def test_secrets_are_readable_when_an_allow_rule_names_them(rule: str, path: str) -> None:
    p = policy(("Read(~/**)", rule))
    assert p.decide("read", {"file_path": path}).verdict == "allow"


# Attack review: a secret, a private folder, the control plane or a deny rule's path spelled
# in another case, which a case-insensitive file system (macOS's default) opens as the
# same file. Each was allowed (or asked nothing about) before.
@pytest.mark.parametrize(
    ("tool", "path", "verdict"),
    [
        ("read", "~/app/.ENV", "deny"),
        ("read", "~/app/.Env.Local", "deny"),
        ("read", "~/certs/SERVER.PEM", "deny"),
        ("read", "~/.ssh/ID_RSA", "deny"),
        ("read", "/home/u/.LOCAL/STATE/dispatch-matrix/keys.json", "deny"),
        ("grep", "/home/u/.local/state/Dispatch-Matrix", "deny"),
        ("read", "~/Private/notes.txt", "deny"),
        ("read", "~/PRIVATE", "deny"),
        ("write", "/home/u/.CONFIG/dispatch-matrix/config.toml", "ask"),
        ("write", "~/.BASHRC", "ask"),
        ("write", "~/.config/SYSTEMD/user/x.service", "ask"),
        ("write", "~/Shared/X.txt", "ask"),
        # Allow rules still match as spelled: a name in another case is asked about.
        ("read", "~/NOTES/todo.txt", "ask"),
        ("read", "~/notes/todo.txt", "allow"),
    ],
)
def test_restrictions_hold_in_any_case_and_allow_rules_as_spelled(
    tool: str, path: str, verdict: str
) -> None:
    p = policy(
        ("Read", "Grep", "Write(~/**)"),
        ask=("Write(~/shared/**)",),
        deny=("Read(~/private/**)",),
    )
    if verdict == "allow" or path.startswith("~/NOTES"):
        p = policy(("Read(~/notes/**)",))
    decision = p.decide(tool, {"file_path": path, "path": path, "content": ""})
    assert decision.verdict == verdict, decision


def test_what_read_deny_rules_cover_whole_is_hidden_by_the_sandbox_too() -> None:
    p = policy(
        deny=(
            "Read(~/private/**)",
            "Read(~/notes/secret.txt)",
            "Read(~/drafts/*)",
            "Read(**/.env)",
            "Read(~/logs/*.txt)",
            "Read(//etc/**)",
            "Read(~/**)",
            "Read(~/Projects/**)",
            "Grep(~/g/**)",
            "Write(~/w/**)",
        )
    )
    assert p.denied_to_read() == [
        PurePosixPath("/home/u/private"),
        PurePosixPath("/home/u/notes/secret.txt"),
        PurePosixPath("/home/u/drafts"),
    ]


def test_a_broad_allow_rule_does_not_name_secrets() -> None:
    p = policy(("Read(~/**)", "Read(~/app/*)"))
    assert p.decide("read", {"file_path": "~/app/.env"}).verdict == "deny"
    assert p.decide("read", {"file_path": "~/app/main.py"}).verdict == "allow"


# --- Named tools: MCP and the bot's own ------------------------------------------------


@pytest.mark.parametrize(
    ("allow", "deny", "tool", "verdict"),
    [
        ([], [], "schedule", "allow"),
        ([], [], "memory", "allow"),
        ([], ["schedule"], "schedule", "deny"),
        (["mcp__github"], [], "mcp__github__create_issue", "allow"),
        (["mcp__github__*"], [], "mcp__github__create_issue", "allow"),
        (["mcp__github"], [], "mcp__gitlab__create_issue", "ask"),
        (["mcp__github"], ["mcp__github__delete_repo"], "mcp__github__delete_repo", "deny"),
        (["mcp__github__create_issue"], [], "mcp__github__create_issue", "allow"),
        (["mcp__github__create_issue"], [], "mcp__github__close_issue", "ask"),
    ],
)
def test_named_tools(allow: list[str], deny: list[str], tool: str, verdict: str) -> None:
    assert policy(tuple(allow), deny=tuple(deny)).decide(tool, {}).verdict == verdict


def test_send_file_is_a_read_of_its_path() -> None:
    p = policy(("Read(~/Reviews/**)",))
    assert p.decide("send_file", {"path": "~/Reviews/r.pdf"}).verdict == "allow"
    assert p.decide("send_file", {"path": "~/app/.env"}).verdict == "deny"


# --- Rule errors fail at start ---------------------------------------------------------


@pytest.mark.parametrize(
    ("lists", "key"),
    [
        ({"allow": ["Bash(pytest:*)", "Read(~/x/**)", "Bash()"]}, "permissions.allow[2]"),
        ({"allow": ["Bash(pytest"]}, "permissions.allow[0]"),
        ({"ask": ["Read", "Read([abc)"]}, "permissions.ask[1]"),
        ({"deny": [""]}, "permissions.deny[0]"),
        ({"deny": ["schedule(daily)"]}, "permissions.deny[0]"),
        ({"allow": ["mcp__github(x)"]}, "permissions.allow[0]"),
        ({"allow": ["Read(!secret)"]}, "permissions.allow[0]"),
        ({"allow": ["Bash(:*)"]}, "permissions.allow[0]"),
        ({"allow": ["Read(~/**/../x)"]}, "permissions.allow[0]"),
        ({"allow": ["Read ~/x"]}, "permissions.allow[0]"),
    ],
)
def test_rule_errors_name_the_rule(lists: dict[str, list[str]], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Policy(lists.get("allow", []), lists.get("ask", []), lists.get("deny", []), HOME, WORKDIR)
    assert caught.value.key == key
    assert caught.value.fix


@pytest.mark.parametrize(
    ("rule", "guess"),
    [
        ("Bahs", "did you mean 'Bash'?"),
        ("Bahs(ls:*)", "did you mean 'Bash'?"),
        ("Raed(~/x)", "did you mean 'Read'?"),
        ("Webfetch", "did you mean 'WebFetch'?"),
        ("zzqx", "the tools are Bash"),
    ],
)
def test_an_unknown_tool_name_is_an_error_with_a_guess(rule: str, guess: str) -> None:
    """A misspelt tool never matches, so its rule would silently do nothing (issue 28)."""
    with pytest.raises(ConfigError) as caught:
        Policy([rule], [], [], HOME, WORKDIR)
    assert caught.value.key == "permissions.allow[0]"
    assert "unknown tool" in caught.value.problem and guess in (caught.value.fix or "")


@pytest.mark.parametrize(
    "rule", ["bash(ls:*)", "WebSearch", "web_fetch", "send_file", "memory", "mcp__gh__x", "mcp__*"]
)
def test_every_tool_name_a_rule_may_give_is_accepted(rule: str) -> None:
    Policy([rule], [], [], HOME, WORKDIR)
