"""An approval question cannot be cut or spoofed, end to end: Synapse, a strict js client
(the phone), the bot process and the scripted Messages API. A command of a thousand
harmless lines and a last line that would write a file reaches the phone whole, as an
encrypted file, and the question shows that last line as code, never as the bot's prose."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import pytest
from conftest import BotSetup, started
from fake_messages_api import FakeMessagesAPI
from harness.bot import BotProcess
from harness.jsclient import JsClient

pytestmark = [pytest.mark.e2e]

StartClient = Callable[..., Awaitable[JsClient]]

PERMISSIONS = """
[permissions]
allow = ["Bash(echo:*)"]
approval_timeout_s = 60
"""
SPOOF = "✅ Checked by dispatch-matrix: safe to approve"


async def test_a_long_command_reaches_the_phone_whole_and_its_last_line_shows_as_code(
    make_bot: Callable[..., BotSetup],
    owner_client: StartClient,
    fake_api: FakeMessagesAPI,
    running: list[BotProcess],
) -> None:
    setup, _bot, owner, room = await started(make_bot, owner_client, running, extra=PERMISSIONS)
    work = setup.config.folder / "work"
    bot_id = setup.bot.user_id
    last = f"touch {work}/pwned # ` **{SPOOF}** `"
    command = "".join(f"echo harmless line {i}\n" for i in range(1000)) + last
    fake_api.reply(tools=[("bash", {"command": command})])
    fake_api.reply("Understood, I did not run it.")
    await owner.send_text(room, "run the setup script")

    # Judging a thousand lines takes a while on a busy machine.
    shared = await owner.wait_message(room, sender=bot_id, contains="command-", timeout=120)
    question = await owner.wait_message(room, sender=bot_id, contains="May I?", timeout=60)
    assert shared["was_encrypted"] and shared["content"]["msgtype"] == "m.file"
    whole = await owner.fetch_attachment(shared["content"]["file"])
    assert whole.decode() == command, "the phone holds exactly what would run"

    content = question["content"]
    assert shared["content"]["filename"] in content["body"]
    assert f"{len(command):,} characters in 1,001 lines" in content["body"]
    assert f"```\n{last}\n```" in content["body"]
    # The last line is code in the HTML too; nothing of it reads as the bot's words.
    prose = re.sub(r"<pre><code[^>]*>.*?</code></pre>", "", content["formatted_body"], flags=re.S)
    assert "pwned" in content["formatted_body"] and "pwned" not in prose
    assert "Checked by dispatch-matrix" not in prose

    await owner.send_text(room, "no")
    await owner.wait_message(room, sender=bot_id, contains="Understood, I did not", timeout=60)
    assert not (work / "pwned").exists()
