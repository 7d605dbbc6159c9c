"""What a newcomer meets on a first run, each said in one line with its fix: no API key, a
config that is not there, a state folder that moved, an error page from a stranger on the
stand-in's port; and the start-up banner says where the owner's password is."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dispatch_matrix.agent.errors import ModelOutage, described
from dispatch_matrix.app.agent_kit import anthropic_client
from dispatch_matrix.app.config import load_config
from dispatch_matrix.app.daemon import _start_and_serve
from dispatch_matrix.app.onboarding import OWNER_PASSWORD_FILE
from dispatch_matrix.app.start_notices import banner
from dispatch_matrix.core.errors import ConfigError, StateError
from dispatch_matrix.store.db import Session
from dispatch_matrix.store.state import StateFolder

GOOD = """
[matrix]
homeserver = "http://127.0.0.1:8008"
user_id = "@dispatch:localhost"
password = "hunter2hunter2"
owners = ["@me:localhost"]
"""

LOCAL = (
    GOOD
    + """
[local_homeserver]
enabled = true
"""
)


def write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text(text)
    return path


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No key anywhere the SDK looks: its environment, and its credential files in ~."""
    for name in [*os.environ]:
        if name.startswith(("ANTHROPIC_", "DISPATCH_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.mark.usefixtures("no_key")
def test_no_api_key_is_a_config_error_not_a_traceback_at_the_first_task(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    with pytest.raises(ConfigError) as raised:
        anthropic_client(config)
    assert raised.value.key == "agent.api_key"
    assert "ANTHROPIC_API_KEY" in (raised.value.fix or "")
    assert raised.value.exit_code == 2


@pytest.mark.usefixtures("no_key")
def test_doctor_lists_a_missing_api_key_as_a_failed_check(tmp_path: Path) -> None:
    from dispatch_matrix.app.doctor import _api

    checks = asyncio.run(_api(load_config(write(tmp_path, GOOD))))
    assert [check.ok for check in checks] == [False]
    assert "no Anthropic API key" in checks[0].what
    assert "ANTHROPIC_API_KEY" in checks[0].fix


def test_an_api_key_in_the_config_is_enough(tmp_path: Path, no_key: None) -> None:
    text = GOOD.replace("[matrix]", '[agent]\napi_key = "sk-ant-test"\n\n[matrix]')
    client = anthropic_client(load_config(write(tmp_path, text)))
    assert client.api_key == "sk-ant-test"


def test_a_missing_config_names_where_it_looked_and_the_way_to_give_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as raised:
        load_config(Path("store") / "config.toml")
    assert str(tmp_path / "store" / "config.toml") in raised.value.problem
    assert "--config" in (raised.value.fix or "")
    assert "dispatch-matrix init --config store/config.toml" in (raised.value.fix or "")


def test_a_state_folder_without_its_private_homeserver_is_refused_before_anything_is_made(
    tmp_path: Path,
) -> None:
    config = load_config(write(tmp_path / "conf", LOCAL.replace("[matrix]", _moved("[matrix]"))))
    with pytest.raises(StateError) as raised:
        asyncio.run(_start_and_serve(config, print))
    assert "private homeserver is not set up" in raised.value.message
    assert "[store] path" in (raised.value.fix or "")
    assert not (tmp_path / "moved").exists()


def _moved(section: str) -> str:
    return f'[store]\npath = "../moved"\n\n{section}'


def test_the_banner_says_where_the_owners_password_is_for_a_private_homeserver(
    tmp_path: Path,
) -> None:
    config = load_config(write(tmp_path, LOCAL))
    session = Session("http://127.0.0.1:8008", "@dispatch:localhost", "DEVICE", "token")
    assert "password in" not in banner(config, session, 0.5)
    StateFolder(config.state_dir).ensure()
    (config.state_dir / OWNER_PASSWORD_FILE).write_text("pw")
    shown = banner(config, session, 0.5)
    assert f"sign in as @me:localhost: password in {config.state_dir / OWNER_PASSWORD_FILE}" in (
        shown
    )
    assert "pw\n" not in shown


def test_the_checkouts_store_readme_is_not_a_privacy_problem(tmp_path: Path) -> None:
    state = StateFolder(tmp_path / "store").ensure()
    (state.root / "README.md").write_text("# store/\n")
    (state.root / "README.md").chmod(0o644)
    assert state.privacy_problems() == []
    (state.root / "fake-api.log").write_text("")
    (state.root / "fake-api.log").chmod(0o644)
    assert state.privacy_problems() == [f"{state.root / 'fake-api.log'} is mode 0644"]


def test_an_html_error_page_is_said_in_one_short_line() -> None:
    page = (
        '<!DOCTYPE HTML>\n<html lang="en">\n    <head>\n        <title>Error response</title>\n'
        "    </head>\n    <body>\n        <p>Error code: 501</p>\n"
        "        <p>Message: Unsupported method ('POST').</p>\n    </body>\n</html>\n"
    )
    said = described(ModelOutage, 501, None, page)
    assert "<" not in said and "\n" not in said
    assert "Error code: 501" in said
    assert len(described(ModelOutage, 503, None, "x" * 2000)) < 400
    assert described(ModelOutage, 529, "overloaded_error", "Overloaded") == (
        "the Messages API is unavailable (overloaded_error, 529): Overloaded"
    )


def test_a_reader_that_goes_away_is_no_internal_error(tmp_path: Path) -> None:
    """`dispatch-matrix status | head -1`: the pipe closes early; no traceback, no "bug"."""
    config = write(tmp_path, GOOD)
    cmd = [sys.executable, "-m", "dispatch_matrix.cli", "status", "--config", str(config)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1
    assert "internal error" not in err and "Traceback" not in err


def test_init_names_the_command_as_it_can_be_called_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dispatch_matrix.app.onboarding import command_name

    script = tmp_path / "venv" / "bin" / "dispatch-matrix"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(script)])
    monkeypatch.setenv("PATH", "/nowhere")
    assert command_name() == str(script)  # a venv not on PATH: the path it was started by
    monkeypatch.setenv("PATH", str(script.parent))
    assert command_name() == "dispatch-matrix"


def ctrl_c_as_from_a_terminal() -> None:
    """In a child before it runs: SIGINT back to its default, which Python turns into
    KeyboardInterrupt (a background job's children start with it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_init_is_one_line_and_the_shells_interrupt_code(tmp_path: Path) -> None:
    """Ctrl-C while init waited on the homeserver printed a KeyboardInterrupt traceback."""
    with socket.socket() as server:
        # A homeserver that takes the connection and never answers: init is waiting on it.
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(60)
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        config = tmp_path / "store" / "config.toml"
        cmd = [sys.executable, "-m", "dispatch_matrix.cli", "init", "--config", str(config)]
        cmd += ["--homeserver", url, "--user-id", "@bot:localhost", "--password", "pw"]
        proc = subprocess.Popen(
            [*cmd, "--owner", "@me:localhost"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # As from a terminal: a suite started in the background (`cmd &`) hands its
            # children SIGINT ignored, and Python then never raises KeyboardInterrupt.
            preexec_fn=ctrl_c_as_from_a_terminal,
        )
        try:
            held, _ = server.accept()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
            held.close()
        finally:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert b"Traceback" not in err and err.decode().count("\n") == 1, err
    assert b"init interrupted" in err and b"run init again" in err, err
    assert not config.exists()


async def test_a_refused_api_key_is_said_on_the_console_at_start() -> None:
    from structlog.testing import capture_logs

    from dispatch_matrix.agent.catalogue import ModelStatus
    from dispatch_matrix.app.start_notices import report_model

    class Refused:
        async def model_status(self) -> ModelStatus:
            return ModelStatus(
                "claude-sonnet-5-5", "unknown", refused="HTTP 401: invalid x-api-key"
            )

    with capture_logs() as logged:
        # Nothing else is asked of the room when there is no model notice.
        await report_model(Refused(), None, None, None)  # type: ignore[arg-type]
    [event] = [e for e in logged if e["event"] == "model.access_refused"]
    assert "refused the API key (HTTP 401: invalid x-api-key)" in event["error"]
    assert "ANTHROPIC_API_KEY" in event["fix"] and "wait in the queue" in event["fix"]


@pytest.mark.parametrize(
    ("managed", "answering", "started"),
    [
        (False, False, False),  # an account elsewhere: nothing to start
        (True, True, False),  # already up (the daemon's): left alone
        (True, False, True),  # stopped with the daemon: started, then stopped
    ],
)
def test_pair_starts_the_private_homeserver_the_daemon_would_have_started(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    managed: bool,
    answering: bool,
    started: bool,
) -> None:
    """`init --local-homeserver` says "run pair here"; with the daemon stopped, as pair
    asks, its homeserver was stopped too, and pair said 'cannot reach … connection
    refused'. trust and reset-identity go the same way."""
    from dispatch_matrix import cli
    from dispatch_matrix.app.homeserver import LocalSynapse

    calls: list[str] = []
    monkeypatch.setattr(LocalSynapse, "is_up", lambda self: answering)
    monkeypatch.setattr(LocalSynapse, "start", lambda self: calls.append("start"))
    monkeypatch.setattr(LocalSynapse, "stop", lambda self: calls.append("stop"))
    config = load_config(write(tmp_path, LOCAL if managed else GOOD))
    (tmp_path / "homeserver").mkdir()
    with cli._homeserver_up(config):
        calls.append("command")
    assert calls == (["start", "command", "stop"] if started else ["command"])


def test_init_refuses_a_state_folder_a_running_bot_holds(tmp_path: Path) -> None:
    """init --force on a running bot's folder restored its device into a second client on
    the same crypto store (and --local-homeserver would stop the bot's Synapse)."""
    from dispatch_matrix.app.onboarding import InitAnswers, init
    from dispatch_matrix.core.errors import AlreadyRunning

    config = write(tmp_path, GOOD)
    running = StateFolder(tmp_path).ensure()
    running.lock()
    said: list[str] = []
    answers = InitAnswers(config, local=True, force=True)
    try:
        with pytest.raises(AlreadyRunning) as refused:
            init(answers, said.append)
    finally:
        running.unlock()
    assert "already running" in refused.value.message and refused.value.exit_code == 4
    assert said == [] and not (tmp_path / "homeserver").exists(), "nothing was started"
    assert config.read_text() == GOOD


def test_a_full_disk_in_any_command_is_one_line_not_an_internal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """init on a full disk said 'internal error (OSError: [Errno 28] …); this is a bug —
    the traceback is in the log', and no log could be written there."""
    import errno

    from dispatch_matrix import cli

    def full(args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(cli._HANDLERS, "init", full)
    config = tmp_path / "store" / "config.toml"
    assert cli.main(["init", "--config", str(config)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error" not in err, err
    assert f"the state folder {config.parent} is full" in err and "run init again" in err


def test_init_into_a_folder_it_cannot_make_names_its_own_flag(tmp_path: Path) -> None:
    """init said 'choose a writable [store] path': a key of a config not yet written."""
    from dispatch_matrix.app.onboarding import InitAnswers, init

    (tmp_path / "a-file").write_text("")
    answers = InitAnswers(tmp_path / "a-file" / "config.toml", local=True)
    with pytest.raises(StateError) as refused:
        init(answers, print)
    assert "is not a folder" in refused.value.message
    assert refused.value.fix is not None and "--config" in refused.value.fix
    assert "[store]" not in refused.value.one_line()


# -- preflight: what `run` refuses before connecting, and what `doctor` lists ----------------


def test_preflight_finds_what_run_refuses_before_connecting(tmp_path: Path) -> None:
    """A bad rule, a misspelt tool, no key: all said before "connected" (issue 28)."""
    from dispatch_matrix.app.preflight import problems

    text = GOOD + '\n[permissions]\nallow = ["Bash(:*)"]\ndeny = ["Bahs"]\n'
    config = load_config(write(tmp_path / "c", text))
    found = problems(config, {}, tmp_path)
    keys = [getattr(p, "key", None) for p in found]
    assert keys == ["permissions.allow[0]", "permissions.deny[0]", "agent.api_key"]
    assert "did you mean 'Bash'?" in (found[1].fix or "")
    assert (
        problems(
            config.model_copy(
                update={"permissions": load_config(write(tmp_path / "d", GOOD)).permissions}
            ),
            {"ANTHROPIC_API_KEY": "k"},
            tmp_path,
        )
        == []
    )


def test_a_mistyped_store_path_is_one_error_naming_both_folders(tmp_path: Path) -> None:
    """The login lives in the config's folder; [store] path points at a folder that is not
    there: `run` would log in a second device (issue 28)."""
    from dispatch_matrix.app.preflight import problems
    from dispatch_matrix.app.status import show_status
    from dispatch_matrix.store import Database

    folder = tmp_path / "store"
    config = load_config(write(folder, GOOD + '\n[store]\npath = "stor"\n'))
    db = Database.open(StateFolder(folder).ensure().db_path)
    db.save_session(Session("http://127.0.0.1:8008", "@dispatch:localhost", "DEV", "syt_x"))
    db.close()
    found = problems(config, {"ANTHROPIC_API_KEY": "k"}, tmp_path)
    assert len(found) == 1 and isinstance(found[0], StateError)
    assert str(folder / "stor") in found[0].message and str(folder) in (found[0].fix or "")
    # status said "No state yet in …/stor: run init", which would make a second bot.
    with pytest.raises(StateError) as status_says:
        show_status(config, print)
    assert status_says.value.one_line() == found[0].one_line()
    # A first run (no login anywhere near) creates its folder as before.
    fresh = load_config(write(tmp_path / "new", GOOD + '\n[store]\npath = "state"\n'))
    assert problems(fresh, {"ANTHROPIC_API_KEY": "k"}, tmp_path) == []


def test_doctor_prints_each_check_as_it_finishes_and_a_slow_one_runs_out(
    tmp_path: Path,
) -> None:
    from dispatch_matrix.app.doctor import Check, Report

    said: list[tuple[float, str]] = []
    began = asyncio.new_event_loop()

    async def slow() -> list[Check]:
        await asyncio.sleep(30)
        return [Check(True, "never")]

    async def quick() -> list[Check]:
        return [Check(True, "quick")]

    async def main() -> int:
        report = Report(lambda line: said.append((loop.time(), line)))
        await report.run("quick", quick, 1)
        # Printed as it finished, before the slow check began (not gathered for the end).
        assert [line for _, line in said] == ["✓ quick"], said
        await report.run("login", slow, 0.2)
        return report.end()

    loop = began
    try:
        code = loop.run_until_complete(main())
    finally:
        loop.close()
    lines = [line for _, line in said]
    assert lines[:2] == [
        "✓ quick",
        "✗ login: no answer within 0.2 s\n    fix: check the network "
        "and that the server is up; then run doctor again",
    ]
    assert code == 1 and lines[-1] == "\n1 passed, 1 failed"


def test_doctor_after_tools_run_knows_the_bot_uses_the_stand_in(tmp_path: Path) -> None:
    """tools/run gives only the bot the stand-in's address and key; doctor, run beside it
    without them, used to fail on the key (issue 28). Also: a homeserver that is down is
    said at once, and the login check is skipped, not hung."""
    from dispatch_matrix.app.doctor import run_doctor
    from dispatch_matrix.app.preflight import STAND_IN_FILE
    from dispatch_matrix.store import Database

    folder = tmp_path / "store"
    path = write(folder, GOOD.replace("8008", "9") + '\n[agent]\nsandbox = "none"\n')
    db = Database.open(StateFolder(folder).ensure().db_path)
    db.save_session(Session("http://127.0.0.1:9", "@dispatch:localhost", "DEV", "syt_x"))
    db.close()
    (folder / STAND_IN_FILE).write_text("http://127.0.0.1:8099\n")
    for private in (path, folder / STAND_IN_FILE):
        private.chmod(0o600)  # as tools/run and init write them
    said: list[str] = []
    code = run_doctor(path, said.append, env={})
    text = "\n".join(said)
    assert "✓ no Anthropic API key: tools/run gives the bot its local stand-in" in text
    assert "✓ config valid" in text and "ANTHROPIC_API_KEY is not set" not in text
    assert "✗ homeserver unreachable at http://127.0.0.1:9: connection refused" in text
    assert "– login not checked: the homeserver is unreachable" in text
    # The homeserver is the one failure (how many pass depends on the checks there are).
    assert code == 1 and said[-1].endswith(" passed, 1 failed"), said[-1]
    assert sum(line.startswith("✗") for line in said) == 1, text


def test_run_says_a_bad_rule_before_it_connects(tmp_path: Path) -> None:
    """A misspelt tool in a rule used to be reported after "connected … send a message";
    with the homeserver away, not at all (issue 28)."""
    path = write(
        tmp_path / "s",
        GOOD.replace("8008", "9")
        + '\n[agent]\nsandbox = "none"\n[permissions]\nallow = ["Bahs"]\n',
    )
    cmd = [sys.executable, "-m", "dispatch_matrix.cli", "run", "--config", str(path)]
    env = {**os.environ, "ANTHROPIC_API_KEY": "sk-ant-test"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2, done.stderr
    assert "permissions.allow[0]: 'Bahs': unknown tool 'Bahs' — did you mean 'Bash'?" in done.stderr
    assert not (tmp_path / "s" / "dispatch.db").exists(), "nothing was started"
