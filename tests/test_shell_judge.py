"""The shell judge against hostile command lines (issue 15) and against ordinary ones.

The adversarial table uses the issue's allow set, tried as an attacker would: every line
must be asked about (or denied), never allowed. The ordinary table uses rules an owner would
write, and every line must still run without a question.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatch_matrix.permissions.policy import Decision, Policy
from dispatch_matrix.permissions.shelloptions import sed_script_is_safe

HOME = Path("/home/u")
# As in the issue's run: the bot works in the home folder, its state folder is ~/store.
STORE = HOME / "store"
ISSUE_ALLOW = [
    "Bash(echo:*)",
    "Bash(ls:*)",
    "Bash(cat:*)",
    "Bash(git status:*)",
    "Read",
    "Glob",
    "Grep",
]


def issue_policy(allow: list[str] = ISSUE_ALLOW, deny: list[str] | None = None) -> Policy:
    return Policy(
        allow,
        [],
        deny or [],
        HOME,
        HOME,
        protected=[STORE / "config.toml", STORE],
        private=[STORE],
    )


def decide(policy: Policy, command: str) -> Decision:
    return policy.decide("bash", {"command": command})


# Each row: (command, expected verdict). Grouped by the attack class they stand for.
ADVERSARIAL = [
    # Issue 15, verbatim: allow rules that ran hidden commands.
    ("echo $'\\'' ; touch X # '", "ask"),
    ("echo $((touch X) )", "ask"),
    ("echo hi; >/dev/null touch X", "ask"),
    ("ls; <<<x touch X", "ask"),
    ("for x in 'a[$(touch X)]'; do echo $((x)); done", "ask"),
    ("echo $((1<<2))\ntouch X", "ask"),
    ("echo $[1<<2]\ntouch X", "ask"),
    ("((x<<1))\ntouch X", "ask"),
    # Issue 15, verbatim: the control plane through expansions.
    ("cat ~/sto*/config.toml", "ask"),
    ("cat ~+/../store/config.toml", "ask"),
    ("cat $PWD/../store/config.toml", "ask"),
    ("cat ~u/store/config.toml", "ask"),
    ("cat [s]tore/config.toml", "ask"),
    ("cat {store,x}/config.toml", "ask"),
    ("echo x >> ~/sto*/config.toml", "ask"),
    ("cat /proc/$PPID/environ", "ask"),
    # Issue 15, verbatim: "read-only" commands that write and run.
    ("sort --compress-program=sh x", "ask"),
    ("git diff --output=F", "ask"),
    ("find . -fprint F", "ask"),
    ("find . -delete", "ask"),
    ("echo k > ~/.ssh/authorized_keys", "ask"),
    ("git -c core.pager=sh log", "ask"),
    ("git -c core.fsmonitor='touch X' status", "ask"),
    ("git status && git config core.fsmonitor 'touch X'", "ask"),
    # More ways to name the control plane.
    ("cat ~/sto?e/config.toml", "ask"),
    ("cat ~/st[o]re/config.toml", "ask"),
    ("cat ~/store/config.tom?", "ask"),
    ("cat ~/store/con*", "ask"),
    ("cat ~/*/config.toml", "ask"),
    ("cat ~/**/config.toml", "ask"),
    ("cat /home/*/store/config.toml", "ask"),
    ("cat /*/u/store/config.toml", "ask"),
    ("cat ~/{a,store}/config.toml", "ask"),
    ("cat {~/store,/x}/config.toml", "ask"),
    ("cat ~/store/{config.toml,x}", "ask"),
    ("cat store/config.toml", "deny"),
    ("cat ./store//config.toml", "deny"),
    ("cat ~/store/../store/config.toml", "deny"),
    ('cat "$HOME/store/config.toml"', "ask"),
    ("cat ${HOME}/store/config.toml", "ask"),
    ("cat -- ~/store/config.toml", "deny"),
    ("cat -n/home/u/store/config.toml", "deny"),
    ("ls -la ~/store", "deny"),
    ("ls --color=always ~/sto*", "ask"),
    ("cat $(echo ~/store/config.toml)", "ask"),
    ("cat `ls ~/store/config.toml`", "ask"),
    ("cat ~-/store/config.toml", "ask"),
    ("cat /proc/self/environ", "ask"),
    ("cat /proc/1/environ", "ask"),
    ("cat /proc/*/environ", "ask"),
    ("cat .env", "deny"),
    ("git status -- ~/store/config.toml", "deny"),
    ("cat //home/u/store/config.toml", "deny"),
    ("echo ~/store/*", "ask"),
    ("bash -c 'cat \"$1\"' _ ~/store/config.toml", "deny"),
    ("git -C ~ show HEAD:store/config.toml", "deny"),
    # Redirections are writes (and reads) of their targets.
    ("echo k >> ~/.bashrc", "ask"),
    ("cat > ~/store/config.toml", "ask"),
    ('echo hi > "$HOME/.bashrc"', "ask"),
    ("echo hi 2> ~/store/log", "ask"),
    ("ls > out.txt", "ask"),
    ("ls >| out.txt", "ask"),
    ("ls &> out.txt", "ask"),
    ("ls &>> out.txt", "ask"),
    ("ls >&out.txt", "ask"),
    ("cat <> f", "ask"),
    ("echo hi > $F", "ask"),
    ("echo hi > *.txt", "ask"),
    ("cat x > /dev/tcp/127.0.0.1/9", "ask"),
    ("cat < ~/store/config.toml", "deny"),
    ("cat < .env", "deny"),
    # Substitutions are commands of their own.
    ("echo $(touch X)", "ask"),
    ("echo `touch X`", "ask"),
    ("echo `echo \\`touch X\\``", "ask"),
    ("echo ${x-`touch X`}", "ask"),
    ("echo $( # )\ntouch X\n)", "ask"),
    ('echo "$(touch X)"', "ask"),
    ("echo ${x:-$(touch X)}", "ask"),
    ("ls $(touch X)", "ask"),
    ("cat <(touch X)", "ask"),
    ("echo hi > >(touch X)", "ask"),
    ("cat <<EOF\n$(touch X)\nEOF", "ask"),
    ("cat <<'EOF'\nx\nEOF", "ask"),
    # Program names that are computed or spelled another way.
    ("$(echo touch) X", "ask"),
    ("`echo touch` X", "ask"),
    ("ec* hi", "ask"),
    ("ech{o,} hi", "ask"),
    ("/bin/echo hi; touch X", "ask"),
    ("./echo hi", "ask"),
    ("/bin/echo hi", "ask"),
    ("~/bin/echo hi", "ask"),
    ("ECHO=touch; $ECHO X", "ask"),
    ("cat${IFS}/etc/passwd", "ask"),
    ("{touch,X}", "ask"),
    ("t\\ouch X", "ask"),
    # Compound commands: every part is judged.
    ("echo hi && touch X", "ask"),
    ("echo hi || touch X", "ask"),
    ("echo hi & touch X", "ask"),
    ("echo hi | touch X", "ask"),
    ("echo hi |& touch X", "ask"),
    ("echo hi\ntouch X", "ask"),
    ("(touch X)", "ask"),
    ("{ touch X; }", "ask"),
    ("! touch X", "ask"),
    ("echo hi | sh", "ask"),
    ("echo 'touch X' | bash", "ask"),
    # Shells, evaluators and wrappers.
    ("bash -c 'touch X'", "ask"),
    ('sh -c "touch X"', "ask"),
    ('bash -c "$X"', "ask"),
    ("bash -lc 'echo hi'", "ask"),
    ("eval 'touch X'", "ask"),
    ("eval echo hi", "ask"),
    ("source x.sh", "ask"),
    (". x.sh", "ask"),
    ("exec touch X", "ask"),
    ("command -p touch X", "ask"),
    ("builtin echo hi", "ask"),
    ("coproc touch X", "ask"),
    ("trap 'touch X' EXIT", "ask"),
    ("let 'a[$(touch X)]=1'", "ask"),
    ("time touch X", "ask"),
    ("nice touch X", "ask"),
    ("nohup touch X", "ask"),
    ("timeout 5 touch X", "ask"),
    ("env touch X", "ask"),
    ("env -S 'touch X'", "ask"),
    ("env PATH=/tmp ls", "ask"),
    ("PATH=/tmp ls", "ask"),
    ("LD_PRELOAD=/tmp/x.so ls", "ask"),
    ("command touch X", "ask"),
    ("xargs touch X", "ask"),
    ("echo ~/store/config.toml | xargs cat", "ask"),
    ("ls | xargs cat", "ask"),
    ("sudo ls", "ask"),
    ("sudo echo hi", "ask"),
    ("doas ls", "ask"),
    # Constructs the judge does not model.
    ("f() { touch X; }; f", "ask"),
    ("function f { touch X; }", "ask"),
    ("case x in x) touch X;; esac", "ask"),
    ("select x in a; do touch X; done", "ask"),
    ("for x in a; do touch X; done", "ask"),
    ("for f in *; do cat $f; done", "ask"),
    ("while true; do touch X; done", "ask"),
    ("if ls; then touch X; fi", "ask"),
    ("[[ -v 'a[$(touch X)]' ]]", "ask"),
    ("[ -f x ] && echo y", "ask"),
    ("echo $[1+1]", "ask"),
    ("echo $((1+1))", "ask"),
    ("((1+1))", "ask"),
    ("for ((i=0;i<1;i++)); do echo; done", "ask"),
    ("echo ${!x}", "ask"),
    ("echo ${x:=1}", "ask"),
    ("echo ${x@P}", "ask"),
    ("echo ${a[$(touch X)]}", "ask"),
    ("echo ${x:0:1}", "ask"),
    ('echo $"x"', "ask"),
    ("x=1; echo $x", "ask"),
    ("export X=1; echo hi", "ask"),
    ("alias ls='touch X'", "ask"),
    ('echo "open', "ask"),
    ("echo hi )", "ask"),
    # Characters bash and a reader (or the grammar) may not see alike.
    ("ls\u00a0-la", "ask"),
    ("echo hi\r; touch X", "ask"),
    ("ec\u200bho hi", "ask"),
    ("ec\\\nho hi", "ask"),
    ("echo a\\\\\ntouch X", "ask"),
    # Side doors of commands the issue's rules do not even name.
    ("ls -la | sort --compress-program=sh", "ask"),
    ("cat x | sed -i s/a/b/ f", "ask"),
    ("ls | awk '{system(\"touch X\")}'", "ask"),
    ("tar --to-command=sh -xf a.tar", "ask"),
    ("rsync -e sh a b:c", "ask"),
    ("less /etc/passwd", "ask"),
    ("man ls", "ask"),
    ("vim x", "ask"),
    ("git status; git -c alias.x='!touch X' x", "ask"),
    ("git status --porcelain > ~/.bashrc", "ask"),
]


@pytest.mark.parametrize(("command", "verdict"), ADVERSARIAL)
def test_hostile_lines_are_never_allowed(command: str, verdict: str) -> None:
    decision = decide(issue_policy(), command)
    assert decision.verdict == verdict, decision
    assert decision.uncovered, "an asked or denied call names what was not covered"


def test_the_adversarial_table_is_large_and_has_no_duplicates() -> None:
    commands = [c for c, _ in ADVERSARIAL]
    assert len(commands) >= 100
    assert len(set(commands)) == len(commands)


# Broad rules for the commands with side doors: the rule for the command is not enough.
BROAD_ALLOW = [
    "Bash(git:*)",
    "Bash(sort:*)",
    "Bash(find:*)",
    "Bash(sed:*)",
    "Bash(tar:*)",
    "Bash(rsync:*)",
    "Bash(awk:*)",
    "Bash(cat:*)",
    "Bash(ls:*)",
    "Bash(echo:*)",
    "Bash(cd:*)",
    "Bash(timeout:*)",
    "Bash(env:*)",
    "Bash(xargs:*)",
    "Bash(printf:*)",
    "Bash(rg:*)",
    "Bash(wc:*)",
    "Bash(tree:*)",
    "Bash(less:*)",
    "Bash(man:*)",
]
SIDE_DOORS = [
    "git -c core.pager=sh log",
    "git --exec-path=/tmp log",
    "git -C ~/store log",
    "git diff --output=F",
    "git diff --out=F",
    "git log --output=F",
    "git show --output=F HEAD",
    "git diff --ext-diff",
    "git -p log",
    "git --git-dir=/tmp/evil status",
    "git --work-tree=/ status",
    "git grep -O sh foo",
    "git grep --open-files-in-pager=sh foo",
    "git fetch --upload-pack='touch X' origin",
    "git commit -m x",
    "git checkout main",
    "git config core.fsmonitor 'touch X'",
    "git push",
    "git st",
    "git branch -D main",
    "git branch new-branch",
    "git tag v1",
    "git stash",
    "sort --compress-program=sh x",
    "sort --compress-prog=sh x",
    "sort -o out x",
    "sort -ro out x",
    "sort --output=out x",
    "sort -T /tmp x",
    "sort --files0-from=list",
    "find . -exec touch X \\;",
    "find . -execdir sh -c x \\;",
    "find . -ok rm {} \\;",
    "find . -fls F",
    "find . -fprintf F '%p'",
    "find * -name x",
    "sed -i s/a/b/ f",
    "sed --in-place s/a/b/ f",
    "sed -ni p f",
    "sed -i.bak s/a/b/ f",
    "sed 's/a/b/e' f",
    "sed 's/a/b/w out' f",
    "sed 'w out' f",
    "sed '1e touch X' f",
    "sed -f script.sed f",
    'sed "$S" f',
    "sed 'r /etc/shadow' f",
    "sed -e 's/a/b/' -e 'w x' f",
    "sed --expression='e id' f",
    "sed '1!G;h;$!d;e touch X' f",
    "tar --to-command=sh -xf a.tar",
    "tar --to-com=sh -xf a.tar",
    "tar -I sh -cf a.tar x",
    "tar cIf sh a.tar x",
    "tar --use-compress-program=sh -cf a x",
    "tar --checkpoint=1 --checkpoint-action=exec=sh -cf a x",
    "rsync -e sh a b:c",
    "rsync -avze sh a b:c",
    "rsync --rsh=sh a b:c",
    "rsync --rsync-path='touch X' a b:c",
    "awk '{system(\"touch X\")}' f",
    "awk 'BEGIN{print > \"x\"}'",
    "awk '{print | \"sh\"}' f",
    "awk 'BEGIN { \"id\" | getline x }'",
    "awk -f prog.awk f",
    'awk "$P" f',
    "cd ~/store && cat config.toml",
    "cd ~ && cat store/config.toml",
    "cd .. && cat u/store/config.toml",
    "cd - && cat x",
    "while true; do cat store/config.toml; cd ~; done",
    "for d in a b; do cat ../store/config.toml; cd ~/x; done",
    "timeout 5 touch X",
    "timeout 5 sort --compress-program=sh x",
    "env touch X",
    "env -C /tmp ls",
    "xargs touch X",
    "echo x | xargs",
    "printf -v PATH /tmp",
    "rg --pre=sh x",
    "wc --files0-from=list",
    "tree -o out",
    "less +'!touch X' f",
    "man -P sh ls",
    "cat x > ~/.bashrc",
    "git status > ~/store/config.toml",
]


@pytest.mark.parametrize("command", SIDE_DOORS)
def test_a_rule_for_a_command_does_not_open_its_side_doors(command: str) -> None:
    decision = decide(issue_policy(BROAD_ALLOW), command)
    # Reading the state folder (`cd ~/store && cat config.toml`) is denied outright.
    assert decision.verdict in ("ask", "deny"), decision
    assert decision.uncovered


@pytest.mark.parametrize(
    ("rule", "command"),
    [
        ("Bash(sed -i:*)", "sed -i s/a/b/ f"),
        ("Bash(rg --pre=cat:*)", "rg --pre=cat x sub"),
        ("Bash(git commit -m:*)", "git commit -m x"),
        ("Bash(git diff --output=*)", "git diff --output=F"),
        ("Bash(sort --compress-program=gzip:*)", "sort --compress-program=gzip x"),
        ("Bash(find sub -delete)", "find sub -delete"),
        ("Bash", "git -c core.pager=cat log"),
    ],
)
def test_a_rule_that_names_the_side_door_opens_it(rule: str, command: str) -> None:
    assert decide(issue_policy([rule]), command).verdict == "allow"


# Deny rules see the normalised command: quoted, escaped, by path, through wrappers.
DENIED_FORMS = [
    "\\rm x",
    "'r'm x",
    '"rm" x',
    "r''m x",
    "/bin/rm x",
    "/usr/bin/rm x",
    "command rm x",
    "time rm x",
    "env rm x",
    "env -i rm x",
    "env X=1 rm x",
    "nice rm x",
    "nice -n 5 rm x",
    "nohup rm x",
    "timeout 5 rm x",
    "timeout -s KILL 5 rm x",
    "stdbuf -o0 rm x",
    "ionice -c3 rm x",
    "sudo rm x",
    "sudo -u root rm x",
    "X=1 rm x",
    "xargs rm",
    "ls | xargs -0 rm -f",
    "find . -exec rm {} \\;",
    "bash -c 'rm x'",
    'sh -c "rm x"',
    'bash -c "rm $X"',
    "sudo bash -c 'rm x'",
    "bash -c \"bash -c 'rm x'\"",
    "eval rm x",
    "eval 'rm x'",
    "exec rm x",
    "watch rm x",
    "echo $(rm x)",
    "echo `rm x`",
    "(rm x)",
    "{ rm x; }",
    "if true; then rm x; fi",
    "for f in a; do rm $f; done",
    "f() { rm x; }",
    "case a in a) rm x;; esac",
    "cat <<EOF\n$(rm x)\nEOF",
    "ls && rm x",
    "ls; rm x",
    "rm{,} x",
]


@pytest.mark.parametrize("command", DENIED_FORMS)
def test_deny_rules_match_the_normalised_command(command: str) -> None:
    decision = decide(issue_policy(["Bash"], deny=["Bash(rm:*)"]), command)
    assert decision.verdict == "deny", decision
    assert decision.rule == "Bash(rm:*)"


# --- Ordinary lines under ordinary rules ---------------------------------------------
# Measured on the judge before issue 27 (which modelled bash): 1 of these 121 lines asked
# (`wc -l *.py`). The literal-only judge asks about the four in ORDINARY_EXPANSIONS, by
# design: an expansion or a subshell is never allowed.

WORKDIR = Path("/home/u/Projects/app")
ORDINARY_ALLOW = [
    "Bash(git status:*)", "Bash(git diff:*)", "Bash(git log:*)", "Bash(git show:*)",
    "Bash(git branch:*)", "Bash(pytest:*)", "Bash(python -m pytest:*)", "Bash(npm test:*)",
    "Bash(npm run build:*)", "Bash(cargo test:*)", "Bash(go test:*)", "Bash(make:*)",
    "Bash(make test:*)", "Bash(ruff:*)", "Bash(mypy:*)", "Bash(ls:*)", "Bash(head:*)",
    "Bash(tail:*)", "Bash(grep:*)", "Bash(rg:*)", "Bash(cat:*)", "Bash(echo:*)",
    "Bash(printf:*)", "Bash(wc:*)", "Bash(sort:*)", "Bash(uniq:*)", "Bash(cd:*)",
    "Bash(find:*)", "Bash(sed -n:*)", "Bash(sed:*)", "Bash(awk:*)", "Bash(diff:*)",
    "Bash(du:*)", "Bash(df:*)", "Bash(jq:*)", "Bash(file:*)", "Bash(stat:*)", "Bash(test:*)",
    "Bash(which:*)", "Bash(tar -tzf:*)", "Bash(pwd)", "Bash(date)", "Bash(tree:*)",
    "Bash(cut:*)", "Bash(tr:*)",
]  # fmt: skip
ORDINARY = [
    "git status", "git status --porcelain", "git status -sb", "git diff", "git diff --stat",
    "git diff HEAD~1", "git diff HEAD~1 -- src/", "git diff --name-only | wc -l",
    "git diff | grep '^+' | wc -l", "git log --oneline -n 20", "git log --oneline -5",
    "git log --format='%h %s' -n 5", "git log -p -- README.md", "git show HEAD", "git branch",
    "git branch -a", "git diff --cached", "git log --graph --oneline --all", "pytest -q",
    "pytest -x tests/test_a.py", "pytest -q tests/test_x.py", "pytest -q 2>&1 | tail -20",
    "pytest -q || echo failed", "pytest -k foo -v", "python -m pytest -q -k foo",
    "python -m pytest -x", "npm test", "npm test -- --watch=false", "npm run build", "cargo test",
    "go test ./...", "make", "make test", "make -j2", "cd sub && make", "(cd sub && make test)",
    "ruff check .", "mypy src", "ls", "ls -la", "ls -la | head", "ls src/*.py", "ls -1 | wc -l",
    "ls -d */", "ls 2>/dev/null", "ls > /dev/null 2>&1", "ls -la; echo ok", "ls -la\npwd",
    "ls | head -5 | tail -1", "ls ~/Projects", "cat README.md", "cat README.md | grep foo",
    "cat README.md | sed -n 1,5p", "cat ~/Projects/app/README.md", "cat a b > /dev/null",
    "echo done && ls", "echo hello", "echo hi >&2", "echo $HOME", 'echo "$PATH"', "echo 'a*b'",
    'echo "$(git status --short)"', "printf '%s\\n' a b", "grep -rn foo src/",
    "grep -rn TODO src | head -50", "grep -c foo *.py", "grep -E 'foo|bar' README.md",
    "grep -q foo x.txt && echo found", "grep -v '^$' notes.txt", "rg -n foo", "rg -n foo src",
    "rg -l TODO", "find . -name '*.py' | wc -l", "find src -type f -name '*.ts'",
    "find . -maxdepth 2 -type d", "head -50 f", "head -n 20 setup.py", "tail -n 50 build.log",
    "tail -f -n 5 build.log", "wc -l *.py", "wc -l src/*.py",
    "sort names.txt | uniq -c | sort -rn | head", "sed -n '1,20p' f", "sed -n '$p' notes.txt",
    "sed -n '/foo/p' a.txt", "awk '{print $1}' data.txt",
    "awk -F, '{print $2}' x.csv | sort | uniq", "jq .name package.json", "diff a.txt b.txt",
    "diff -u a b | head", "du -sh .", "df -h", "date", "pwd", "which python", "file README.md",
    "stat -c %s README.md", "test -f setup.py && echo yes", "tar -tzf dist.tar.gz | head",
    "time pytest -q", "timeout 120 npm test", "pytest -x \\\n  tests",
    "git diff --stat HEAD~3..HEAD", "git log --since=2.weeks --author=me", "ls -la ~/.config",
    "cat /etc/os-release", "echo \"it's fine\"", "echo '$((1+1))'", "# just a comment\nls",
    "cd ~/Projects/app && git log --oneline -5", "tree -L 2", "cut -d, -f1 x.csv | sort -u",
    "git show HEAD:README.md", "git log -1 --stat", "sed 's/foo/bar/g' a.txt",
    "sed -e 's/a/b/' -e 's/c/d/' x", "sed '$d' notes.txt", "awk '{print $NF}' data.txt",
    "nice -n 10 make", "grep -rn foo src/ | sort | head",
    "grep -rn foo --include=*.py .",
]  # fmt: skip
ORDINARY_EXPANSIONS = {
    "(cd sub && make test)", "echo $HOME", 'echo "$PATH"', 'echo "$(git status --short)"'
}  # fmt: skip


def ordinary_policy() -> Policy:
    return Policy(
        ORDINARY_ALLOW,
        [],
        ["Bash(rm -rf:*)", "Read(**/.env)"],
        HOME,
        WORKDIR,
        protected=[HOME / ".config/dispatch-matrix/config.toml", HOME / ".local/state/dm"],
        private=[HOME / ".local/state/dm"],
    )


@pytest.mark.parametrize("command", [c for c in ORDINARY if c not in ORDINARY_EXPANSIONS])
def test_ordinary_lines_still_run_without_a_question(command: str) -> None:
    decision = decide(ordinary_policy(), command)
    assert decision.verdict == "allow", decision
    assert decision.uncovered == ()


@pytest.mark.parametrize("command", sorted(ORDINARY_EXPANSIONS))
def test_ordinary_lines_with_an_expansion_ask(command: str) -> None:
    decision = decide(ordinary_policy(), command)
    assert decision.verdict == "ask", decision
    assert "only literal words" in decision.reason


def test_the_ordinary_table_is_large_and_has_no_duplicates() -> None:
    assert len(ORDINARY) >= 80
    assert len(set(ORDINARY)) == len(ORDINARY)
    asking = [c for c in ORDINARY if decide(ordinary_policy(), c).verdict != "allow"]
    assert len(asking) == len(ORDINARY_EXPANSIONS) == 4


# --- What the owner is shown ---------------------------------------------------------


def test_every_uncovered_part_is_listed() -> None:
    decision = decide(issue_policy(), "a; b; c; d; e && echo ok")
    assert decision.verdict == "ask"
    assert decision.uncovered == ("a", "b", "c", "d", "e")
    assert all(f"`{part}`" in decision.reason for part in "abcde")
    assert "…" not in decision.reason


def test_a_redirection_is_listed_as_a_part_of_its_own() -> None:
    decision = decide(issue_policy(), "echo k > ~/.ssh/authorized_keys")
    assert decision.uncovered == ("> ~/.ssh/authorized_keys",)
    assert "/home/u/.ssh/authorized_keys" in decision.reason


# --- "Always" learns a literal rule ---------------------------------------------------


def test_always_learns_a_literal_rule_not_a_wildcard() -> None:
    policy = issue_policy()
    assert policy.learn("bash", {"command": "rm *.tmp"}) == "Bash(rm \\*.tmp)"
    assert decide(policy, "rm *.tmp").verdict == "allow"
    assert decide(policy, "rm *.tmp").rule == "Bash(rm \\*.tmp)"
    for other in ("rm -rf / x.tmp", "rm a.tmp", "rm *.tmp; touch X", "rm *.tmp x"):
        assert decide(policy, other).verdict == "ask", other


def test_a_learned_rule_is_a_rule_like_any_other_after_a_restart() -> None:
    learned = issue_policy().learn("bash", {"command": "make && make install"})
    assert learned == "Bash(make && make install)"
    again = issue_policy([*ISSUE_ALLOW, learned])
    assert decide(again, "make && make install").verdict == "allow"
    assert decide(again, "make && make install && touch X").verdict == "ask"
    assert decide(again, "make").verdict == "ask"


def test_a_learned_rule_keeps_quoted_blanks_exact() -> None:
    policy = issue_policy()
    learned = policy.learn("bash", {"command": "touch 'a  b'"})
    assert learned is not None
    assert decide(policy, "touch   'a  b'").verdict == "allow"
    assert decide(policy, "touch 'a b'").verdict == "ask"


@pytest.mark.parametrize(
    "command",
    [
        "cat ~/sto*/config.toml",
        "echo $((1+1))",
        "echo hi > ~/store/x",
        "eval touch X",
        "sudo ls",
    ],
)
def test_no_rule_is_learned_for_what_a_rule_cannot_make_safe(command: str) -> None:
    policy = issue_policy()
    assert policy.learn("bash", {"command": command}) is None
    assert decide(policy, command).verdict == "ask"


def test_learned_path_rules_are_absolute_and_literal() -> None:
    policy = issue_policy([])
    rule = policy.learn("read", {"file_path": "notes[1].txt"})
    assert rule == "Read(//home/u/notes\\[1\\].txt)"
    assert policy.decide("read", {"file_path": "/home/u/notes[1].txt"}).verdict == "allow"
    assert policy.decide("read", {"file_path": "/home/u/notes1.txt"}).verdict == "ask"
    assert policy.decide("read", {"file_path": "/home/u/sub/notes[1].txt"}).verdict == "ask"


# --- Pieces ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "safe"),
    [
        ("1,20p", True),
        ("$p", True),
        ("/^#/d", True),
        ("/foo/,/bar/p", True),
        ("1~2p;$=", True),
        ("$!d", True),
        ("s/a/b/g", True),
        ("s/a\\/b/c/2p", True),
        ("s/a/b/e", False),
        ("s/a/b/w f", False),
        ("s/a/b/gw f", False),
        ("s|a|b|", False),
        ("s/[/]/x/", False),
        ("/[/]w x/p", False),
        ("y/abc/xyz/", False),
        ("$!N;P;D", False),
        ("w f", False),
        ("W f", False),
        ("r f", False),
        ("R f", False),
        ("1e id", False),
        ("1i text", False),
        ("b x w f\n:x", False),
        (":a;N;ba", False),
        ("p;w f", False),
        ("1!G;h;$!d", False),
        ("{p}", False),
        ("#n", False),
        ("s/a/b", False),
        ("", False),
    ],
)
def test_sed_scripts(script: str, safe: bool) -> None:
    assert sed_script_is_safe(script) is safe
