"""The Claude Code engine's mapping (tool names, permission answers, billing, usage, the
task's turn), its session in the ledger, its config key; then the engine itself in-process,
with the bundled CLI pointed at the stand-in (skipped only without the claude-code extra)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from fake_messages_api import FakeMessagesAPI
from harness.taskio import FakeTaskIO

from dispatch_matrix.agent.claude_code_map import (
    BUILT_IN_TOOLS,
    RESUMED_NOTE,
    billing_of,
    mcp_result,
    policy_name,
    turn_for,
    usage_counts,
    user_message,
)
from dispatch_matrix.agent.ports import Approval
from dispatch_matrix.agent.tables import EngineSessions
from dispatch_matrix.app import config as config_module
from dispatch_matrix.app.config import AgentSection, validate_data
from dispatch_matrix.core.errors import ConfigError
from dispatch_matrix.permissions.policy import Policy
from dispatch_matrix.store import Database, Task
from dispatch_matrix.toolbox.base import ToolContext
from dispatch_matrix.toolbox.registry import ToolRegistry, default_tools

HAVE_EXTRA = importlib.util.find_spec("claude_agent_sdk") is not None
needs_extra = pytest.mark.skipif(
    not HAVE_EXTRA, reason="the claude-code extra is not installed (tools/sync --extra claude-code)"
)


@pytest.mark.parametrize(
    "cli_name, ours",
    [
        ("Read", "read"),
        ("Write", "write"),
        ("Edit", "edit"),
        ("Glob", "glob"),
        ("mcp__dispatch__bash", "bash"),
        ("mcp__dispatch__send_file", "send_file"),
        ("mcp__dispatch__mcp__files__read_text", "mcp__files__read_text"),
        ("mcp__dispatch__", "mcp__dispatch__"),
        ("WebFetch", "WebFetch"),
        ("Bash", "Bash"),
        ("mcp__other__tool", "mcp__other__tool"),
    ],
)
def test_the_policy_judges_each_call_by_our_name(cli_name: str, ours: str) -> None:
    assert policy_name(cli_name) == ours


def test_claude_codes_own_shell_and_grep_are_not_offered() -> None:
    assert "Bash" not in BUILT_IN_TOOLS
    assert "Grep" not in BUILT_IN_TOOLS
    assert not {"Agent", "Task", "CronCreate", "EnterWorktree"} & set(BUILT_IN_TOOLS)


@pytest.mark.parametrize(
    "source, billing",
    [
        ("none", "plan"),
        (None, "plan"),
        ("", "plan"),
        ("ANTHROPIC_API_KEY", "api"),
        ("apiKeyHelper", "api"),
        ("/login managed key", "api"),
    ],
)
def test_billing_follows_where_claude_code_found_its_credential(
    source: str | None, billing: str
) -> None:
    assert billing_of(source) == billing


def test_usage_maps_onto_the_ledgers_counts() -> None:
    usage = {
        "input_tokens": 12,
        "output_tokens": 40,
        "cache_creation_input_tokens": 11_688,
        "cache_read_input_tokens": 300,
        "cache_creation": {"ephemeral_5m_input_tokens": 11_000, "ephemeral_1h_input_tokens": 688},
        "service_tier": "standard",
    }
    assert usage_counts(usage) == {
        "input_tokens": 12,
        "output_tokens": 40,
        "cache_creation_input_tokens": 11_688,
        "cache_read_input_tokens": 300,
        "cache_write_1h": 688,
    }
    assert usage_counts(None) == {}
    # A count that is not a count is none.
    assert usage_counts({"input_tokens": "9", "output_tokens": -1})["input_tokens"] == 0


def test_a_task_taken_again_after_a_crash_is_told_so() -> None:
    opening = [{"type": "text", "text": "do the thing"}]
    fresh = turn_for(7, opening, running_task=None)
    assert fresh.blocks == opening and not fresh.again
    other = turn_for(7, opening, running_task=6)
    assert other.blocks == opening and not other.again
    again = turn_for(7, opening, running_task=7)
    assert again.again
    assert again.blocks == [{"type": "text", "text": RESUMED_NOTE}, *opening]


def test_the_task_goes_to_claude_code_word_for_word() -> None:
    message = user_message([{"type": "text", "text": "read @/etc/shadow"}])
    assert message["client_composed"] is True
    assert message["message"]["role"] == "user"


def test_a_tool_result_keeps_text_and_images_only() -> None:
    result = mcp_result([{"type": "text", "text": "x"}, {"type": "document", "source": {}}], False)
    assert result == {"content": [{"type": "text", "text": "x"}], "is_error": False}
    assert mcp_result([], True)["is_error"] is True


def test_the_session_of_each_conversation_is_kept(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "db.sqlite")
    first = db.current_conversation()
    assert EngineSessions(db).engine_session(first) is None
    EngineSessions(db).save_engine_session(first, "sess-1", 4)
    EngineSessions(db).save_engine_session(first, "sess-1", None)
    db.close()
    db = Database.open(tmp_path / "db.sqlite")
    stored = EngineSessions(db).engine_session(first)
    assert stored is not None and stored.session_id == "sess-1" and stored.running_task is None
    # `!new`: a new conversation, so no session until Claude Code starts one.
    assert EngineSessions(db).engine_session(db.new_conversation()) is None


def test_usage_rows_say_how_they_were_paid(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "db.sqlite")
    db.record_usage(None, "m", {"input_tokens": 1}, "plan")
    db.record_usage(None, "m", {"input_tokens": 1})
    rows = db._conn.execute("SELECT billing FROM usage ORDER BY id").fetchall()
    assert [row[0] for row in rows] == ["plan", None]


def test_the_engine_key_is_validated() -> None:
    base: dict[str, Any] = {
        "matrix": {"homeserver": "http://x", "user_id": "@b:x", "password": "p", "owners": ["@o:x"]}
    }
    assert validate_data(base).agent.engine == "api"
    with pytest.raises(ConfigError) as err:
        validate_data({**base, "agent": {"engine": "codex"}})
    assert err.value.key == "agent.engine"


def test_claude_code_without_its_extra_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[matrix]\nhomeserver = "http://x"\nuser_id = "@b:x"\npassword = "p"\nowners = ["@o:x"]\n'
        '[agent]\nengine = "claude-code"\n'
    )
    monkeypatch.setattr(config_module, "CLAUDE_CODE_PACKAGE", "no_such_package_here")
    with pytest.raises(ConfigError) as err:
        config_module.load_config(path)
    assert err.value.key == "agent.engine"
    assert "claude-code extra" in err.value.problem


# -- the engine, in-process -----------------------------------------------------------------


def make_engine(tmp_path: Path, fake: FakeMessagesAPI, allow: list[str], deny: list[str]) -> Any:
    from dispatch_matrix.agent.claude_code import ClaudeCodeAgent

    db = Database.open(tmp_path / "db.sqlite")
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    policy = Policy(allow=allow, ask=[], deny=deny, home=tmp_path, workdir=work)
    engine = ClaudeCodeAgent(
        db,
        settings=AgentSection(model="claude-sonnet-5-5"),
        system="You are a test.",
        tools=ToolRegistry(default_tools()),
        policy=policy,
        context=ToolContext(workdir=work, allowed_roots=(work,), bash_timeout_s=30),
        env={
            "ANTHROPIC_BASE_URL": fake.url,
            "ANTHROPIC_API_KEY": "fake",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            # Claude Code's sessions and settings in the test's folder, not the user's.
            "CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        },
    )
    return engine, db, work


def new_task(db: Database, n: int, body: str) -> Task:
    task = db.add_task(f"$e{n}", "!r:x", "@me:x", body, n)
    assert task is not None
    return task


def bodies(fake: FakeMessagesAPI) -> list[dict[str, Any]]:
    return [r.body for r in fake.requests if r.path == "/v1/messages" and r.status == 200]


@needs_extra
@pytest.mark.claude_code
async def test_every_call_is_judged_and_the_session_resumed(tmp_path: Path) -> None:
    with FakeMessagesAPI() as fake:
        engine, db, work = make_engine(tmp_path, fake, allow=["Read"], deny=["Write"])
        (work / "a.txt").write_text("hello")
        fake.reply(tools=[("Read", {"file_path": str(work / "a.txt")})])
        fake.reply(tools=[("Write", {"file_path": str(work / "b.txt"), "content": "x"})])
        fake.reply(tools=[("mcp__dispatch__bash", {"command": "touch c.txt"})])
        fake.reply("first done")
        io = FakeTaskIO(Approval.NO)
        assert await engine.answer(new_task(db, 1, "go"), io) == "first done"
        # Read allowed by rule, Write denied by rule, bash asked and refused: nothing written.
        assert [d.subject for d in io.asked] == ["touch c.txt"]
        assert not (work / "b.txt").exists() and not (work / "c.txt").exists()
        assert any("reading" in line for line in io.shown)
        results = [
            block
            for m in bodies(fake)[-1]["messages"]
            if isinstance(m["content"], list)
            for block in m["content"]
            if block.get("type") == "tool_result"
        ]
        assert len(results) == 3
        assert results[1].get("is_error") and "Not allowed" in json.dumps(results[1])
        assert results[2].get("is_error") and "did not approve" in json.dumps(results[2])
        conversation = db.current_conversation()
        stored = EngineSessions(db).engine_session(conversation)
        assert stored is not None and stored.running_task is None
        usage = db._conn.execute(
            "SELECT billing, cache_creation_input_tokens FROM usage"
        ).fetchall()
        assert usage and usage[0][0] == "api" and usage[0][1] > 0

        # The next task, in a new engine (a restart): the same session, resumed.
        engine, db, work = make_engine(tmp_path, fake, allow=["Read"], deny=["Write"])
        fake.reply(tools=[("mcp__dispatch__bash", {"command": "touch d.txt"})])
        fake.reply("second done")
        io = FakeTaskIO(Approval.YES)
        assert await engine.answer(new_task(db, 2, "again"), io) == "second done"
        assert (work / "d.txt").exists()
        last = json.dumps(bodies(fake)[-1]["messages"])
        assert "first done" in last and "touch c.txt" in last
        assert EngineSessions(db).engine_session(conversation) == stored


# -- doctor: the CLI and its login, offline ---------------------------------------------------


@pytest.mark.parametrize(
    "status, ok, said",
    [
        (None, False, "unreadable"),
        ({"loggedIn": False, "authMethod": "none"}, False, "not logged in"),
        (
            {"loggedIn": True, "authMethod": "api_key", "apiKeySource": "ANTHROPIC_API_KEY"},
            True,
            "billed to the API",
        ),
        ({"loggedIn": True, "authMethod": "claude.ai"}, True, "its own login"),
    ],
)
def test_doctor_reads_claude_codes_login_status(
    status: dict[str, Any] | None, ok: bool, said: str
) -> None:
    from dispatch_matrix.agent.claude_code_login import judge_status

    line = judge_status(status, "2.1.332")
    assert line.ok is ok and said in line.what
    assert ok or "log Claude Code in" in line.fix


def test_doctor_says_when_there_is_no_cli(tmp_path: Path) -> None:
    from dispatch_matrix.agent.claude_code_login import check

    lines = check(tmp_path, {"PATH": str(tmp_path)})
    assert [line.ok for line in lines] == [False] and "not found" in lines[0].what


@needs_extra
@pytest.mark.claude_code
@pytest.mark.parametrize("key, ok", [(None, False), ("sk-test", True)])
def test_doctor_asks_the_bundled_cli_offline(tmp_path: Path, key: str | None, ok: bool) -> None:
    import claude_agent_sdk

    from dispatch_matrix.agent.claude_code_login import check

    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        # Nothing listens here: the check must not need the network.
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
    }
    if key:
        env["ANTHROPIC_API_KEY"] = key
    [line] = check(Path(claude_agent_sdk.__file__).parent, env)
    assert line.ok is ok, line


def test_usage_on_the_plan_is_credit_not_money(tmp_path: Path) -> None:
    from dispatch_matrix.agent.usage import total
    from dispatch_matrix.queue.texts import usage_report

    db = Database.open(tmp_path / "db.sqlite")
    counts = {"input_tokens": 1_000_000, "output_tokens": 0}
    db.record_usage(None, "claude-sonnet-5-5", counts)
    db.record_usage(None, "claude-sonnet-5-5", counts, "api")
    db.record_usage(None, "claude-sonnet-5-5", counts, "plan")
    totals = total(db.usage_rows())
    assert totals.requests == 3
    assert totals.plan_usd > 0 and totals.cost_usd == pytest.approx(2 * totals.plan_usd)
    report = usage_report(totals, totals, [], 0)
    assert "of plan credit" in report
    api_only = total(db.usage_rows()[:2])
    assert "plan credit" not in usage_report(api_only, api_only, [], 0)


def test_the_digest_marks_plan_credit_apart() -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from dispatch_matrix.agent.usage import Totals
    from dispatch_matrix.schedule import texts as schedule_texts

    since = datetime(2026, 12, 4, tzinfo=UTC)
    plan = Totals(requests=2, input_tokens=10, output_tokens=5, cost_usd=0.0, plan_usd=0.5)
    text = schedule_texts.digest(since, [], [], [], plan, ZoneInfo("UTC"))
    assert "$0.50 of plan credit" in text
    assert "plan credit" not in schedule_texts.digest(
        since, [], [], [], Totals(requests=1, cost_usd=0.5), ZoneInfo("UTC")
    )


@needs_extra
@pytest.mark.claude_code
async def test_new_starts_a_fresh_session_and_compact_asks_claude_code(tmp_path: Path) -> None:
    with FakeMessagesAPI() as fake:
        engine, db, _work = make_engine(tmp_path, fake, allow=[], deny=[])
        assert await engine.compact_now() is None, "no session yet: nothing to compact"
        fake.reply("one")
        await engine.answer(new_task(db, 1, "the word is OSPREY"), FakeTaskIO())
        first = EngineSessions(db).engine_session(db.current_conversation())
        assert first is not None

        sent = len(bodies(fake))
        assert await engine.compact_now() is True
        compacting = bodies(fake)[sent:]
        assert compacting, "Claude Code asked the model for its summary"
        assert "OSPREY" in json.dumps(compacting[0]["messages"])

        db.new_conversation()  # what `!new` does
        fake.reply("two")
        await engine.answer(new_task(db, 2, "hello again"), FakeTaskIO())
        second = EngineSessions(db).engine_session(db.current_conversation())
        assert second is not None and second.session_id != first.session_id
        assert "OSPREY" not in json.dumps(bodies(fake)[-1]["messages"])


@pytest.mark.parametrize(
    "kind, text, reason, resumed, expected",
    [
        ("CLINotFoundError", "Claude Code not found", None, False, "no_cli"),
        ("ResultError", "No conversation found with session ID: x", None, True, "lost_session"),
        # Not resuming, the same words cannot mean our session is lost.
        ("ResultError", "No conversation found with session ID: x", None, False, "failed"),
        ("ResultError", "API Error: 529 overloaded", "api_error", True, "outage"),
        ("CLIConnectionError", "Failed to start Claude Code", None, False, "outage"),
        ("ProcessError", "exit code 1", None, True, "failed"),
    ],
)
def test_failures_are_sorted_by_what_they_mean(
    kind: str, text: str, reason: str | None, resumed: bool, expected: str
) -> None:
    from dispatch_matrix.agent.claude_code_map import failure_kind

    assert failure_kind(kind, text, reason, resumed) == expected


@needs_extra
@pytest.mark.claude_code
async def test_a_session_claude_code_lost_is_started_afresh(tmp_path: Path) -> None:
    with FakeMessagesAPI() as fake:
        engine, db, _work = make_engine(tmp_path, fake, allow=[], deny=[])
        conversation = db.current_conversation()
        gone = "7b0c4a4e-1111-4222-8333-944455556666"
        EngineSessions(db).save_engine_session(conversation, gone, None)
        fake.reply("fresh start")
        assert await engine.answer(new_task(db, 1, "hello"), FakeTaskIO()) == "fresh start"
        stored = EngineSessions(db).engine_session(conversation)
        assert stored is not None and stored.session_id != gone
        assert "could not be restored" in json.dumps(bodies(fake)[-1]["messages"])


@needs_extra
@pytest.mark.claude_code
async def test_the_owners_claude_code_settings_cannot_widen_what_runs(tmp_path: Path) -> None:
    """Allow-everything settings in Claude Code's own folder and in the project, and a
    bypass mode: none of them lets a call past our policy (setting_sources = [])."""
    with FakeMessagesAPI() as fake:
        engine, db, work = make_engine(tmp_path, fake, allow=[], deny=["Write"])
        marker = tmp_path / "hook-ran"
        hook = {"type": "command", "command": f"touch {marker}"}
        widening = {
            "permissions": {
                "allow": ["Write", "Edit", "Read", "mcp__dispatch__bash"],
                "defaultMode": "bypassPermissions",
            },
            # A settings file's hook would run a command outside every policy and wall.
            "hooks": {"PreToolUse": [{"matcher": "*", "hooks": [hook]}]},
        }
        for folder in (tmp_path / "claude", work / ".claude"):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "settings.json").write_text(json.dumps(widening))
            (folder / "settings.local.json").write_text(json.dumps(widening))
        fake.reply(tools=[("Write", {"file_path": str(work / "w.txt"), "content": "x"})])
        fake.reply(tools=[("mcp__dispatch__bash", {"command": "touch b.txt"})])
        fake.reply("done")
        io = FakeTaskIO(Approval.NO)
        await engine.answer(new_task(db, 1, "go"), io)
        assert not (work / "w.txt").exists() and not (work / "b.txt").exists()
        assert [d.subject for d in io.asked] == ["touch b.txt"], "asked, not allowed by them"
        assert not marker.exists(), "no settings file was read"


@pytest.fixture
def confined(tmp_path: Path) -> tuple[ToolContext, Path]:
    """A root with a file, a link in it to a secret outside, and a hidden state folder."""
    root, outside, state = tmp_path / "root", tmp_path / "outside", tmp_path / "root" / "state"
    for folder in (root, outside, state, root / ".git" / "hooks"):
        folder.mkdir(parents=True, exist_ok=True)
    (root / "notes.txt").write_text("notes")
    (outside / "id_ed25519").write_text("PRIVATE KEY")
    (root / "link").symlink_to(outside / "id_ed25519")
    ctx = ToolContext(
        workdir=root,
        allowed_roots=(root,),
        bash_timeout_s=120,
        denied_paths=(state,),
        readonly_paths=(root / ".git" / "hooks",),
    )
    return ctx, root


@pytest.mark.parametrize(
    "ours, tool_input, refused",
    [
        ("read", {"file_path": "notes.txt"}, None),
        ("read", {"file_path": "{root}/notes.txt"}, None),
        ("read", {"file_path": "/etc/passwd"}, "outside the allowed roots"),
        ("read", {"file_path": "{root}/link"}, "outside the allowed roots"),
        ("read", {"file_path": "{root}/state/dispatch.db"}, "may not touch"),
        ("write", {"file_path": "{root}/new.txt", "content": "x"}, None),
        ("write", {"file_path": "{root}/.git/hooks/pre-commit", "content": "x"}, "no tool"),
        ("edit", {"file_path": "{root}/link", "old_string": "a", "new_string": "b"}, "outside"),
        ("glob", {"pattern": "**/*.txt"}, None),
        ("glob", {"pattern": "**/*", "path": "/"}, "outside the allowed roots"),
        ("glob", {"pattern": "../outside/*"}, "reaches outside"),
        ("glob", {"pattern": "/etc/*"}, "reaches outside"),
        ("bash", {"command": "cat /etc/passwd"}, None),  # the sandbox and the judge, not this
        ("WebFetch", {"url": "https://example.org"}, None),
    ],
)
def test_claude_codes_file_tools_are_confined_as_ours_are(
    confined: tuple[ToolContext, Path], ours: str, tool_input: dict[str, str], refused: str | None
) -> None:
    """Claude Code's own Read, Write, Edit and Glob do not run through our tools, so the
    roots, the hidden paths and symlinks are checked before it may open anything: a broad
    `Read` rule must not reach past the roots or through a link to a secret."""
    pytest.importorskip("claude_agent_sdk", reason="the claude-code extra is not installed")
    from dispatch_matrix.agent.claude_code import confinement_refusal

    ctx, root = confined
    filled = {k: v.format(root=root) for k, v in tool_input.items()}
    why = confinement_refusal(ours, filled, ctx)
    if refused is None:
        assert why is None, why
    else:
        assert why is not None and refused in why, why
