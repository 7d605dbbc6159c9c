"""Connectors, the pure parts: secrets by name and shape, launching with `${VAR}` and
secret files, tool names, MCP results as tool results, `mcp import`, the web tools and
their sources, the policy on MCP names, `!tools`, and the registry's providers."""

from __future__ import annotations

import base64
import json
import tomllib
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic.types
import mcp_types as types
import pytest
from harness.taskio import FakeTaskIO
from pydantic import ValidationError

from dispatch_matrix.connectors import web
from dispatch_matrix.connectors.importer import (
    ImportProblem,
    config_name,
    convert,
    servers_in,
    to_toml,
)
from dispatch_matrix.connectors.inventory import inventory, rule_for
from dispatch_matrix.connectors.launch import LaunchError, prepare
from dispatch_matrix.connectors.naming import MAX_NAME, api_names, server_of
from dispatch_matrix.connectors.results import tool_result
from dispatch_matrix.connectors.secrets import looks_secret
from dispatch_matrix.connectors.settings import (
    WEB_FETCH_VERSION,
    WEB_SEARCH_VERSION,
    McpSection,
    McpServerSpec,
    WebSection,
)
from dispatch_matrix.connectors.status import State, Status
from dispatch_matrix.core.logs import REDACTED, REDACTOR
from dispatch_matrix.permissions.policy import Policy
from dispatch_matrix.queue import texts
from dispatch_matrix.toolbox.base import ToolContext, ToolResult
from dispatch_matrix.toolbox.registry import ToolRegistry, default_tools

HOME = Path("/home/me")

# -- secrets -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value, secret",
    [
        ("GITHUB_PERSONAL_ACCESS_TOKEN", "not-shaped-like-anything", True),
        ("Authorization", "Bearer abc.def", True),
        ("X-Api-Key", "k3y-v4lue", True),
        ("DB_PASSWORD", "hunter2", True),
        ("ANYTHING", "ghp_" + "a" * 36, True),
        ("ANYTHING", "sk-ant-api03-abcdefghijklmnop", True),
        ("DATABASE_URL", "postgres://app:s3cret@db.local/app", True),
        ("ANYTHING", "Zq8xT2mB9vLk4Rw7Yp1Hs6Dn3Jc5Gf0A", True),
        ("GITHUB_TOKEN", "${GITHUB_TOKEN}", False),
        ("Authorization", "Bearer ${MAIL_TOKEN}", False),
        ("Authorization", "Bearer ${MAIL_TOKEN} leaked-extra-secret", True),
        ("LOG_LEVEL", "debug", False),
        ("ROOT", "/home/me/Projects/very-long-folder-name-2024", False),
        ("AUTHOR", "Jane Doe", False),
        ("ARG", "@modelcontextprotocol/server-filesystem", False),
        ("DATABASE_URL", "postgres://db.local/app", False),
        ("TOKEN", "", False),
    ],
)
def test_looks_secret(name: str, value: str, secret: bool) -> None:
    assert looks_secret(name, value) is secret


# -- launch --------------------------------------------------------------------------------


def spec(**kw: Any) -> McpServerSpec:
    return McpServerSpec(**kw)


def test_launch_expands_variables_and_reads_secret_files(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tok-from-file-123\n")
    launch = prepare(
        "notes",
        spec(
            command="notes-server",
            args=["--token", "${NOTES_TOKEN}", "--home", "${HOME}", "${MODE:-fast}"],
            env={"PLAIN": "1", "FROM_ENV": "${API_KEY}"},
            env_files={"NOTES_TOKEN": token},
        ),
        {"HOME": "/home/me", "API_KEY": "key-from-environment"},
        lambda p: Path(p).read_text(),
    )
    assert launch.args == ("--token", "tok-from-file-123", "--home", "/home/me", "fast")
    assert launch.env == {
        "PLAIN": "1",
        "FROM_ENV": "key-from-environment",
        "NOTES_TOKEN": "tok-from-file-123",
    }
    assert set(launch.secrets) == {"tok-from-file-123", "key-from-environment"}
    # The home folder is no secret: the redactor must not scrub every path.
    assert "/home/me" not in launch.secrets
    assert "tok-from-file-123" not in launch.describe()
    assert "${NOTES_TOKEN}" in launch.describe()


def test_launch_of_an_http_server_scrubs_every_header(tmp_path: Path) -> None:
    auth = tmp_path / "auth"
    auth.write_text("Bearer from-a-file-456")
    launch = prepare(
        "mail",
        spec(
            url="https://mail.example/mcp?tenant=${TENANT}",
            headers={"X-Team": "blue-team"},
            headers_files={"Authorization": auth},
            env={"TENANT": "acme"},
        ),
        {},
        lambda p: Path(p).read_text(),
    )
    assert launch.url == "https://mail.example/mcp?tenant=acme"
    assert launch.headers == {"Authorization": "Bearer from-a-file-456", "X-Team": "blue-team"}
    assert {"Bearer from-a-file-456", "blue-team"} <= set(launch.secrets)


@pytest.mark.parametrize(
    "server, environ, problem",
    [
        (spec(command="x", args=["${MISSING}"]), {}, "uses ${MISSING}, which is not set"),
        (spec(command="x", env={"A": "${GONE}"}), {}, "uses ${GONE}"),
        (spec(command="x", env_files={"T": Path("/nonexistent/t")}), {}, "cannot read"),
    ],
)
def test_launch_fails_with_the_key_and_the_fix(
    server: McpServerSpec, environ: dict[str, str], problem: str
) -> None:
    with pytest.raises(LaunchError) as caught:
        prepare("s", server, environ, lambda p: Path(p).read_text())
    assert problem in caught.value.message
    assert "mcp.servers.s" in caught.value.message and caught.value.fix


@pytest.mark.parametrize(
    "raw, problem",
    [
        ({"command": "x", "url": "https://a.example"}, "not both"),
        ({"args": ["a"]}, "needs `command`"),
        ({"type": "http"}, "needs `url`"),
        ({"url": "ftp://a.example"}, "http(s) URL"),
    ],
)
def test_server_specs_refuse_mixed_or_missing_transports(raw: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        McpServerSpec(**raw)


@pytest.mark.parametrize("name", ["my server", "a__b", "-x", "x" * 41, "dots.here"])
def test_server_names_that_cannot_be_tool_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="server name"):
        McpSection(servers={name: {"command": "x"}})


# -- names and results ---------------------------------------------------------------------


def test_tool_names_follow_claude_code_and_fit_the_api() -> None:
    names = api_names("notes", ["add_note", "list.notes", "x" * 80, "ok-name"])
    assert names["mcp__notes__add_note"] == "add_note"
    assert names["mcp__notes__ok-name"] == "ok-name"
    renamed = {v: k for k, v in names.items()}
    assert renamed["list.notes"].startswith("mcp__notes__list_notes_")
    assert all(len(n) <= MAX_NAME and n.replace("_", "").replace("-", "").isalnum() for n in names)
    # Stable: the same tools always get the same names, whatever else the server lists.
    assert api_names("notes", ["list.notes"]) == {renamed["list.notes"]: "list.notes"}
    assert server_of("mcp__notes__add_note") == "notes" and server_of("bash") is None


PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


def test_mcp_results_become_tool_result_blocks() -> None:
    REDACTOR.add("leaky-secret-value-42")
    result = types.CallToolResult(
        content=[
            types.TextContent(type="text", text="hello leaky-secret-value-42"),
            types.ImageContent(type="image", data=PNG, mime_type="image/png"),
            types.ImageContent(type="image", data=PNG, mime_type="image/tiff"),
            types.EmbeddedResource(
                type="resource",
                resource=types.TextResourceContents(uri="file:///n.txt", text="note body"),
            ),
            types.EmbeddedResource(
                type="resource",
                resource=types.BlobResourceContents(
                    uri="file:///r.pdf", blob=PNG, mime_type="application/pdf"
                ),
            ),
            types.EmbeddedResource(
                type="resource",
                resource=types.BlobResourceContents(
                    uri="file:///x.bin", blob=PNG, mime_type="application/zip"
                ),
            ),
        ],
        is_error=False,
    )
    blocks = tool_result(result).content
    assert blocks[0] == {"type": "text", "text": f"hello {REDACTED}"}
    assert blocks[1]["type"] == "image" and blocks[1]["source"]["media_type"] == "image/png"
    assert "cannot read" in blocks[2]["text"]
    assert blocks[3]["text"] == "[resource file:///n.txt]\nnote body"
    assert blocks[4]["type"] == "document"
    assert "not shown" in blocks[5]["text"]


def test_an_error_result_stays_an_error_and_structured_output_is_kept() -> None:
    failed = tool_result(
        types.CallToolResult(content=[types.TextContent(type="text", text="no")], is_error=True)
    )
    assert failed.is_error and failed.as_block("t1")["is_error"] is True
    structured = tool_result(types.CallToolResult(content=[], structured_content={"n": 3}))
    assert json.loads(structured.content[0]["text"]) == {"n": 3}


# -- import --------------------------------------------------------------------------------

DESKTOP = {
    "mcpServers": {
        "github": {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-github"],
            "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "ghp_" + "Z" * 36, "LOG_LEVEL": "info"},
        },
        "postgres": {
            "command": "npx",
            "args": ["-y", "server-postgres", "postgresql://app:pa55word@localhost/app"],
        },
        "mail box": {
            "type": "http",
            "url": "https://mail.example/mcp",
            "headers": {"Authorization": "Bearer mail-secret-789", "X-Region": "eu"},
        },
        "kept": {"command": "tool", "env": {"API_KEY": "${MY_API_KEY}"}},
        "odd": {"type": "websocket", "url": "wss://x.example"},
    }
}


def test_import_moves_every_secret_out_of_the_config(tmp_path: Path) -> None:
    found = servers_in(DESKTOP)
    imported = [convert(config_name(n), e, tmp_path / "s") for n, e in found.items()]
    text = to_toml(imported, "claude_desktop_config.json")
    for secret in ("ghp_" + "Z" * 36, "pa55word", "mail-secret-789"):
        assert secret not in text
    secrets = {s.value: s.path for server in imported for s in server.secrets}
    assert set(secrets) == {
        "ghp_" + "Z" * 36,
        "postgresql://app:pa55word@localhost/app",
        "Bearer mail-secret-789",
    }
    section = McpSection(**tomllib.loads(text)["mcp"])
    github = section.servers["github"]
    assert github.env == {"LOG_LEVEL": "info"}
    assert github.env_files["GITHUB_PERSONAL_ACCESS_TOKEN"] == secrets["ghp_" + "Z" * 36]
    postgres = section.servers["postgres"]
    assert postgres.args[-1] == "${POSTGRES_ARG2}"
    assert "POSTGRES_ARG2" in postgres.env_files
    mail = section.servers["mail-box"]
    assert mail.transport == "http" and mail.headers == {"X-Region": "eu"}
    assert "Authorization" in mail.headers_files
    assert section.servers["kept"].env == {"API_KEY": "${MY_API_KEY}"}
    assert "odd" not in section.servers
    assert any("not supported" in n for s in imported if s.name == "odd" for n in s.notes)
    # The secret's value never shows in a repr (a traceback, a log line).
    assert "pa55word" not in repr(imported)


def test_launching_an_imported_server_gives_it_back_its_secret(tmp_path: Path) -> None:
    server = convert("postgres", DESKTOP["mcpServers"]["postgres"], tmp_path)
    for secret in server.secrets:
        secret.path.write_text(secret.value + "\n")
    launch = prepare("postgres", McpServerSpec(**server.table), {}, lambda p: Path(p).read_text())
    assert launch.args[-1] == "postgresql://app:pa55word@localhost/app"


def test_import_reads_claude_code_project_files_and_refuses_others() -> None:
    code = {"projects": {"/w": {"mcpServers": {"a": {"command": "x"}}}}, "mcpServers": {}}
    assert list(servers_in(code)) == ["a"]
    with pytest.raises(ImportProblem):
        servers_in({"something": "else"})


# -- web tools -----------------------------------------------------------------------------


def sdk_tool_types() -> set[str]:
    """Every server-tool `type` the installed SDK lists."""
    found = set()
    for param in typing.get_args(anthropic.types.ToolUnionParam):
        hint = typing.get_type_hints(param).get("type")
        for arg in typing.get_args(hint):
            found.update(a for a in (arg, *typing.get_args(arg)) if isinstance(a, str))
    return found


def test_default_web_tool_versions_are_the_newest_the_sdk_lists() -> None:
    known = sdk_tool_types()
    assert WEB_SEARCH_VERSION in known and WEB_FETCH_VERSION in known
    assert max(t for t in known if t.startswith("web_search_")) == WEB_SEARCH_VERSION
    assert max(t for t in known if t.startswith("web_fetch_")) == WEB_FETCH_VERSION


def test_web_definitions_carry_domains_and_what_is_left_of_the_task_limit() -> None:
    tools = web.WebTools(
        WebSection(search=True, fetch=True, blocked_domains=["spam.example"], max_uses_per_task=3)
    )
    first = tools.definitions(0)
    assert [d["name"] for d in first] == ["web_search", "web_fetch"]
    assert first[0] == {
        "type": WEB_SEARCH_VERSION,
        "name": "web_search",
        "max_uses": 3,
        "blocked_domains": ["spam.example"],
    }
    assert first[1]["citations"] == {"enabled": True}
    assert [d["max_uses"] for d in tools.definitions(2)] == [1, 1]
    assert tools.definitions(3) == [] and tools.definitions(9) == []


def test_web_section_refuses_both_domain_lists_and_urls() -> None:
    with pytest.raises(ValidationError, match="not both"):
        WebSection(search=True, allowed_domains=["a.example"], blocked_domains=["b.example"])
    with pytest.raises(ValidationError, match="not a URL"):
        WebSection(search=True, allowed_domains=["https://a.example"])


def policy(allow: list[str] = (), ask: list[str] = (), deny: list[str] = ()) -> Policy:  # type: ignore[assignment]
    return Policy(allow=list(allow), ask=list(ask), deny=list(deny), home=HOME, workdir=HOME)


@pytest.mark.parametrize(
    "rules, refused",
    [
        ({}, []),
        ({"deny": ["WebSearch"]}, ["web_search"]),
        ({"ask": ["WebFetch"]}, ["web_fetch"]),
        ({"allow": ["WebSearch"]}, []),
    ],
)
def test_a_deny_or_ask_rule_takes_a_web_tool_away(
    rules: dict[str, list[str]], refused: list[str]
) -> None:
    assert web.refused(policy(**rules)) == refused


SEARCH = {"type": "server_tool_use", "name": "web_search", "id": "s1", "input": {}}


def test_uses_paused_and_sources() -> None:
    messages = [
        {"role": "assistant", "content": [SEARCH, {"type": "web_search_tool_result"}]},
        {"role": "user", "content": [{"type": "text", "text": "x"}]},
        {"role": "assistant", "content": [SEARCH, {**SEARCH, "name": "code_execution"}]},
    ]
    assert web.uses(messages) == 2
    assert web.paused([{"type": "text", "text": "a"}, SEARCH])
    assert not web.paused([SEARCH, {"type": "text", "text": "done"}])
    cite = {"type": "web_search_result_location", "url": "https://a.example/x", "title": "A [1]"}
    content = [
        {"type": "text", "text": "one", "citations": [cite]},
        {"type": "text", "text": "two", "citations": [cite, {**cite, "url": "https://b.example"}]},
        {
            "type": "web_fetch_tool_result",
            "content": {"url": "https://c.example", "content": {"title": "C"}},
        },
    ]
    found = web.sources(content)
    assert [s.url for s in found] == [
        "https://a.example/x",
        "https://b.example",
        "https://c.example",
    ]
    answer = web.with_sources("The answer.", found)
    assert answer.startswith("The answer.\n\n**Sources**\n1. [A \\[1\\]](https://a.example/x)")
    assert "3. [C](https://c.example)" in answer
    assert web.with_sources("plain", []) == "plain"


# -- the policy on MCP tools, and !tools ---------------------------------------------------


def test_mcp_rules_cover_a_server_or_one_tool_and_ask_shows_the_arguments_whole() -> None:
    rules = policy(
        allow=["mcp__gmail", "mcp__notes__list_notes"],
        ask=["mcp__gmail__send_email"],
        deny=["mcp__gmail__delete_all"],
    )
    assert rules.decide("mcp__gmail__search", {}).verdict == "allow"
    assert rules.decide("mcp__gmail__send_email", {}).verdict == "ask"
    assert rules.decide("mcp__gmail__delete_all", {}).verdict == "deny"
    assert rules.decide("mcp__gmailx__search", {}).verdict == "ask"
    assert rules.decide("mcp__notes__add_note", {}).verdict == "ask"
    body = "word " * 200 + "THE-END"
    asked = rules.decide("mcp__gmail__send_email", {"to": "boss@example.org", "body": body})
    assert "THE-END" in asked.subject and "boss@example.org" in asked.subject


def test_tools_inventory_names_the_rule_of_each_tool() -> None:
    rules = policy(allow=["Bash(echo:*)", "mcp__notes"], ask=["mcp__notes__add_note"])
    ready = Status("notes", State.READY, "", 2, 1, "python notes.py")
    broken = Status("broken", State.FAILED, "command not found", 0, 0, "nope", 30.0)
    tools = {"notes": ["mcp__notes__add_note", "mcp__notes__list_notes"], "broken": []}
    groups = inventory(
        rules, ["bash", "memory"], [ready, broken], tools.__getitem__, ["web_search"]
    )
    report = texts.tools_report(groups)
    assert "`bash` — allow Bash(echo:*); anything else asks" in report
    assert "`memory` — allow (own state)" in report
    assert "**MCP server notes** — ready, 2 tools (restarted 1×)" in report
    assert "`mcp__notes__add_note` — ask (mcp__notes__add_note)" in report
    assert "`mcp__notes__list_notes` — allow (mcp__notes)" in report
    assert "**MCP server broken** — failed: command not found, next try in 30s" in report
    assert "`web_search` — allow" in report
    assert rule_for(policy(), "mcp__x__y") == "ask (no rule)"


def test_tools_shows_the_read_rules_that_decide_send_file() -> None:
    """send_file is judged as a Read of its path: a bare Read rule lets it run, and !tools
    said 'ask (no rule)'."""
    allowing = policy(allow=["Read"])
    assert allowing.decide("send_file", {"path": str(HOME / "notes.txt")}).verdict == "allow"
    assert rule_for(allowing, "send_file") == "allow Read; anything else asks"
    assert rule_for(policy(deny=["send_file"]), "send_file") == "deny send_file; anything else asks"
    assert rule_for(policy(), "send_file") == "ask (no rule)"


# -- the registry and its providers --------------------------------------------------------


class Provider:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.asked: list[str] = []
        self.listed = 0
        self.watchers: list[Callable[[], None]] = []
        self.names = ["mcp__p__b", "mcp__p__a"]

    def watch(self, changed: Callable[[], None]) -> None:
        self.watchers.append(changed)

    def announce(self) -> None:
        for changed in self.watchers:
            changed()

    def definitions(self) -> list[dict[str, Any]]:
        self.listed += 1
        return [{"name": name, "input_schema": {}} for name in self.names]

    def provides(self, name: str) -> bool:
        self.asked.append(name)
        return name.startswith("mcp__p__")

    async def run_tool(self, name: str, tool_input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        self.calls.append(name)
        return ToolResult.text(f"ran {name}")


async def test_the_registry_offers_and_runs_a_providers_tools_after_its_own() -> None:
    registry = ToolRegistry()
    provider = Provider()
    registry.add_provider(provider)
    names = [d["name"] for d in registry.definitions()]
    assert names == ["mcp__p__b", "mcp__p__a"]
    ctx = ToolContext(workdir=HOME, allowed_roots=(HOME,), bash_timeout_s=1)
    result = await registry.run("mcp__p__a", {}, ctx)
    assert result.content[0]["text"] == "ran mcp__p__a" and provider.calls == ["mcp__p__a"]
    unknown = await registry.run("mcp__q__a", {}, ctx)
    assert unknown.is_error


def test_the_registry_lists_a_provider_again_only_when_it_announces_a_change() -> None:
    registry = ToolRegistry(default_tools())
    provider = Provider()
    registry.add_provider(provider)
    first = registry.definitions()
    for _ in range(3):
        assert registry.definitions() == first
    assert provider.listed == 1
    provider.names.append("mcp__p__c")
    # Not announced yet: the list stays as built (the hub announces each change).
    assert registry.definitions() == first and provider.listed == 1
    version = registry.version
    provider.announce()
    assert registry.version != version
    grown = registry.definitions()
    assert [d["name"] for d in grown][-3:] == ["mcp__p__b", "mcp__p__a", "mcp__p__c"]
    assert registry.definitions() == grown and provider.listed == 2


async def test_a_call_to_one_of_our_tools_does_not_ask_the_providers(tmp_path: Path) -> None:
    registry = ToolRegistry(default_tools())
    provider = Provider()
    registry.add_provider(provider)
    ctx = ToolContext(workdir=tmp_path, allowed_roots=(tmp_path,), bash_timeout_s=1)
    (tmp_path / "a.txt").write_text("hello\n")
    result = await registry.run("read", {"file_path": str(tmp_path / "a.txt")}, ctx)
    assert not result.is_error and provider.asked == []
    await registry.run("mcp__p__a", {}, ctx)
    assert provider.asked == ["mcp__p__a"]


# -- config and doctor -----------------------------------------------------------------------

CONFIG = """
[matrix]
homeserver = "http://127.0.0.1:1"
user_id = "@bot:example.org"
password = "hunter2hunter2"
owners = ["@me:example.org"]

[mcp.servers.gh]
command = "npx"
env = { GITHUB_TOKEN = "ghp_%s", MODE = "fast" }

[mcp.servers.mail]
url = "https://mail.example/mcp"
headers = { Authorization = "Bearer ${MAIL_TOKEN}" }
headers_files = { X-Key = "secrets/mail-key" }
""" % ("Q" * 36)


def test_mcp_tables_load_with_their_files_resolved_and_inline_secrets_are_flagged(
    tmp_path: Path,
) -> None:
    from dispatch_matrix.app.config import load_config
    from dispatch_matrix.connectors.checks import inline_secrets

    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    config = load_config(path)
    mail = config.mcp.servers["mail"]
    assert mail.transport == "http"
    assert mail.headers_files["X-Key"] == tmp_path.resolve() / "secrets" / "mail-key"
    flagged = inline_secrets(config)
    assert [line[1] for line in flagged] == [
        "MCP server gh: env.GITHUB_TOKEN holds a secret written inline"
    ]
    assert not flagged[0][0] and "env_files" in flagged[0][2]
    assert "Q" * 36 not in repr(flagged)


# -- the engine with server tools, in-process against the fake Messages API ----------------


def web_agent(tmp_path: Path, url: str) -> tuple[Any, Any]:
    import anthropic

    from dispatch_matrix.agent import Agent
    from dispatch_matrix.app.config import AgentSection
    from dispatch_matrix.store import Database

    db = Database.open(tmp_path / "db.sqlite")
    agent = Agent(
        db,
        anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0),
        settings=AgentSection(max_tokens=1024),
        system="You are a test.",
        tools=ToolRegistry(default_tools()),
        policy=policy(),
        context=ToolContext(workdir=tmp_path, allowed_roots=(tmp_path,), bash_timeout_s=5),
        web_tools=web.WebTools(WebSection(search=True, max_uses_per_task=2)),
    )
    return agent, db


RESULTS = [("https://a.example/1", "First"), ("https://b.example/2", "Second")]


async def test_a_paused_turn_is_continued_and_the_answer_lists_what_it_cites(
    tmp_path: Path, fake_api: Any
) -> None:
    from fake_web_search import paused_turn, search_turn

    agent, db = web_agent(tmp_path, fake_api.url)
    fake_api.script(paused_turn("q1", RESULTS[:1]))
    fake_api.script(search_turn("q2", RESULTS, [("Both agree.", [1, 0])], preface="More."))
    task = db.add_task("$e1", "!r:x", "@me:x", "research", 1)
    text = await agent.answer(task, FakeTaskIO())
    assert text.startswith("Searching…\n\nMore.\n\nBoth agree.")
    assert text.endswith("1. [Second](https://b.example/2)\n2. [First](https://a.example/1)")
    first, second = fake_api.requests
    assert second.body["messages"][-1]["role"] == "assistant"
    assert [t["max_uses"] for t in first.body["tools"] if t["name"] == "web_search"] == [2]
    assert [t["max_uses"] for t in second.body["tools"] if t["name"] == "web_search"] == [1]
    # Two searches used: a third request of this task would not offer the tool at all.
    rows = db.transcript_rows(db.current_conversation())
    assert agent._request(db.current_conversation()).tools[-1]["name"] != "web_search"
    assert web.uses(row.message() for row in rows) == 2


async def test_a_restart_inside_a_paused_turn_goes_on_with_it(
    tmp_path: Path, fake_api: Any
) -> None:
    from fake_web_search import search_blocks

    agent, db = web_agent(tmp_path, fake_api.url)
    task = db.add_task("$e1", "!r:x", "@me:x", "research", 1)
    conversation = db.current_conversation()
    db.append_message(conversation, task.id, "user", [{"type": "text", "text": "research"}])
    paused = [{"type": "text", "text": "Looking."}, *search_blocks("q", RESULTS[:1])]
    db.append_message(conversation, task.id, "assistant", paused)
    fake_api.reply("Found it.")
    text = await agent.answer(task, FakeTaskIO())
    assert text == "Looking.\n\nFound it."
    [request] = fake_api.requests
    assert request.body["messages"][-1]["content"][-1]["type"] == "web_search_tool_result"
