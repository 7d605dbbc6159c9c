"""Secrets end to end: values the daemon got from its environment and strings shaped like
secrets never reach the room (answers, the long-answer file), the log, or — for the
daemon's own secrets — the model; a secret-looking `env_passthrough` stops the start."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import BotSetup, started
from fake_messages_api import FakeMessagesAPI
from harness.bot import BotProcess
from harness.jsclient import JsClient

from dispatch_matrix.core.logs import REDACTED

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]

# What the daemon is started with: only the names say these are secrets.
ENV = {
    "ANTHROPIC_API_KEY": "sk-ant-api03-only-in-the-environment-0123456789",
    "NOTES_MCP_TOKEN": "opaque-notes-value-7f3a9c",
    "DISPATCH_VOICE__API_KEY": "voice-env-value-5b1c2d",
    "DISPATCH_AGENT__SECRET_ENV_PASSTHROUGH": '["NOTES_MCP_TOKEN"]',
}
SHAPED = {
    "mas": "mct_AbCdEfGhIjKlMnOpQrStUvWxYz0123_1a2b3c",
    "pat": "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEF",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJvd25lciIsImV4cCI6OTl9.c2lnbmF0dXJlLXBhcnQ",
    "url": "hunter2hunter2",
    "assignment": "correct-horse-battery",
    "pem": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
}
ANSWER = (
    "Here is what I found.\n"
    f"- the notes token {ENV['NOTES_MCP_TOKEN']}\n"
    f"- the voice key {ENV['DISPATCH_VOICE__API_KEY']}\n"
    f"- the API key {ENV['ANTHROPIC_API_KEY']}\n"
    f"- a MAS token {SHAPED['mas']} and a PAT {SHAPED['pat']}\n"
    f"- a JWT {SHAPED['jwt']}\n"
    f"- the remote https://me:{SHAPED['url']}@git.example.org/repo.git\n"
    f"- DB_PASSWORD={SHAPED['assignment']}\n"
    "- a key that was cut short:\n```\n-----BEGIN PRIVATE KEY-----\n"
    f"{SHAPED['pem']}\n```\nThat is all."
)
SECRETS = [*(v for k, v in ENV.items() if not k.endswith("PASSTHROUGH")), *SHAPED.values()]

PERMISSIONS = """
[permissions]
allow = ["Bash(echo:*)"]
"""


def text_of(block: dict[str, Any]) -> str:
    content = block["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


async def test_environment_secrets_and_secret_shapes_reach_neither_room_nor_log_nor_model(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, bot, owner, room = await started(make_bot, owner_client, running, PERMISSIONS, env=ENV)
    bot_id = setup.bot.user_id

    # 1. A command given a secret on purpose prints it; the model never sees it. (An
    # expansion is never allowed by a rule: the owner approves it.)
    fake_api.reply(tools=[("bash", {"command": "echo notes=$NOTES_MCP_TOKEN"})])
    fake_api.reply(ANSWER)
    await owner.send_text(room, "collect the credentials")
    await owner.wait_message(room, sender=bot_id, contains="May I?")
    await owner.send_text(room, "yes")
    answer = await owner.wait_message(room, sender=bot_id, contains="That is all")
    [result] = [
        b
        for b in fake_api.requests[1].body["messages"][-1]["content"]
        if b["type"] == "tool_result"
    ]
    assert text_of(result).startswith(f"notes={REDACTED}\n"), "it ran; the model got no secret"

    # 2. The answer keeps its words and hides every secret, also in the HTML.
    for shown in (answer["body"], answer["content"].get("formatted_body", "")):
        for secret in SECRETS:
            assert secret not in shown, secret
    assert "git.example.org" in answer["body"] and "That is all." in answer["body"]
    assert answer["body"].count(REDACTED) >= 9

    # 3. An answer too long for an event goes as a file: redacted too.
    fake_api.reply("x" * 17_000 + "\n" + ANSWER)
    await owner.send_text(room, "the long version")
    attached = await owner.wait_message(room, sender=bot_id, contains="answer-")
    assert attached["content"]["msgtype"] == "m.file"
    whole = (await owner.fetch_attachment(attached["content"]["file"])).decode()
    assert "That is all." in whole and REDACTED in whole
    for secret in SECRETS:
        assert secret not in whole, secret

    # 4. Nothing of it in the log or on the terminal.
    logged = bot.log_file.read_text() + "\n".join(bot.stdout + bot.stderr)
    assert bot.log_events("tool.result"), "the log was written"
    for secret in SECRETS:
        assert secret not in logged, secret
    # The request after the command held nothing of it anywhere (the later ones carry the
    # scripted model's own answer, which named the secrets itself).
    assert ENV["NOTES_MCP_TOKEN"] not in json.dumps(fake_api.requests[1].body)


async def test_a_secret_looking_env_passthrough_refuses_to_start_with_the_fix(
    make_bot: Callable[..., BotSetup],
) -> None:
    setup = make_bot()
    process = setup.process()
    process.env["DISPATCH_AGENT__ENV_PASSTHROUGH"] = '["LANGUAGE", "GITHUB_TOKEN"]'
    await process.spawn()
    assert await process.wait_exit(60) == 2
    said = "\n".join(process.stderr + process.stdout)
    assert "agent.env_passthrough" in said and "GITHUB_TOKEN looks like a secret" in said
    assert "secret_env_passthrough" in said
