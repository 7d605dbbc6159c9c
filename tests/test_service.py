"""install-service / uninstall-service: the unit and plist text, checked by the platform's
own tools where they exist; the install and uninstall edges with a scripted runner; the
deploy/ examples kept consistent with what the generator writes; logs that rotate by size."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import plistlib
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from dispatch_matrix import cli
from dispatch_matrix.app.service import (
    ServiceSpec,
    install,
    launchd_plist,
    linger_advice,
    service_path,
    systemd_unit,
    uninstall,
)
from dispatch_matrix.core import logs

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def spec_in(folder: Path) -> ServiceSpec:
    return ServiceSpec(
        executable=Path(sys.executable).with_name("dispatch-matrix"),
        config=folder / "my bot" / "config.toml",
        workdir=folder / "my bot",
        env_file=folder / ".config" / "dispatch matrix" / "env",
        log_dir=folder / "my bot" / "logs",
    )


def directives(text: str) -> dict[str, str]:
    """`Key=value` lines of a unit, comments left out."""
    found = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found[key] = value
    return found


def test_unit_runs_the_venv_script_with_the_config_and_restarts_only_on_failure(
    tmp_path: Path,
) -> None:
    spec = spec_in(tmp_path)
    unit = directives(systemd_unit(spec))
    script = str(spec.executable)
    assert unit["ExecStart"] == f'{script} run --config "{spec.config}"'
    assert Path(script).is_absolute()
    assert unit["Restart"] == "on-failure"
    assert "4" in unit["RestartPreventExitStatus"].split()
    assert unit["EnvironmentFile"] == f"-{spec.env_file}"
    assert unit["WorkingDirectory"] == str(spec.workdir)
    assert unit["WantedBy"] == "default.target"
    assert "API_KEY=" not in systemd_unit(spec), "secrets stay in the environment file"


@pytest.mark.parametrize(
    "word, expected",
    [
        ("/home/a/bin/dispatch-matrix", "/home/a/bin/dispatch-matrix"),
        ("/home/a b/config.toml", '"/home/a b/config.toml"'),
        ("/home/100%/config.toml", "/home/100%%/config.toml"),
        ('/home/say "hi"/c.toml', '"/home/say \\"hi\\"/c.toml"'),
    ],
)
def test_unit_quotes_paths_for_systemd(tmp_path: Path, word: str, expected: str) -> None:
    spec = ServiceSpec(Path("/usr/bin/x"), Path(word), Path("/"), Path("/e"), Path("/l"))
    assert directives(systemd_unit(spec))["ExecStart"] == f"/usr/bin/x run --config {expected}"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    spec = spec_in(tmp_path)
    spec.workdir.mkdir(parents=True)
    unit = tmp_path / "dispatch-matrix.service"
    unit.write_text(systemd_unit(spec))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    # verify also reports unrelated units of the host; only lines about ours count.
    ours = [line for line in done.stderr.splitlines() if "dispatch-matrix" in line]
    assert ours == [], done.stderr


def test_plist_parses_and_restarts_only_after_a_failure(tmp_path: Path) -> None:
    spec = spec_in(tmp_path)
    text = launchd_plist(spec)
    if shutil.which("plutil"):
        path = tmp_path / "agent.plist"
        path.write_text(text)
        subprocess.run(["plutil", "-lint", str(path)], check=True)
    agent = plistlib.loads(text.encode())
    assert agent["ProgramArguments"] == [
        str(spec.executable),
        "run",
        "--config",
        str(spec.config),
    ]
    assert agent["KeepAlive"] == {"SuccessfulExit": False}
    assert agent["Umask"] == 0o077
    assert "EnvironmentVariables" not in agent, "no secret in the plist"


def test_deploy_unit_says_what_the_generator_writes() -> None:
    ours = directives(systemd_unit(spec_in(Path("/x"))))
    shipped = directives((DEPLOY / "dispatch-matrix.service").read_text())
    paths = {"WorkingDirectory", "EnvironmentFile", "ExecStart"}
    assert set(shipped) == set(ours)
    assert {k: v for k, v in shipped.items() if k not in paths} == {
        k: v for k, v in ours.items() if k not in paths
    }
    assert shipped["ExecStart"].split()[1:3] == ["run", "--config"]


def test_deploy_plist_says_what_the_generator_writes() -> None:
    ours = plistlib.loads(launchd_plist(spec_in(Path("/x"))).encode())
    shipped = plistlib.loads((DEPLOY / "org.dispatch-matrix.plist").read_bytes())
    assert set(shipped) == set(ours)
    paths = {"ProgramArguments", "WorkingDirectory", "StandardOutPath", "StandardErrorPath"}
    assert {k: v for k, v in shipped.items() if k not in paths} == {
        k: v for k, v in ours.items() if k not in paths
    }
    assert shipped["ProgramArguments"][1:3] == ["run", "--config"]


@pytest.mark.parametrize(
    "platform, linger, says",
    [
        ("linux", "yes", None),
        ("linux", "no", "sudo loginctl enable-linger ann"),
        ("linux", None, "sudo loginctl enable-linger ann"),
        ("darwin", None, None),
    ],
)
def test_linger_advice(platform: str, linger: str | None, says: str | None) -> None:
    advice = linger_advice(platform, "ann", linger)
    if says is None:
        assert advice is None
    else:
        assert advice is not None and says in advice


class Runner:
    """Answers service-manager commands as scripted, recording them."""

    def __init__(self, failing: str | None = None, linger: str = "no") -> None:
        self.calls: list[list[str]] = []
        self.failing = failing
        self.linger = linger

    def __call__(self, command: Sequence[str]) -> tuple[int, str]:
        self.calls.append(list(command))
        if command[0] == "loginctl":
            return 0, self.linger
        if self.failing and self.failing in command:
            return 1, "Failed to connect to bus: No medium found"
        return 0, ""


def test_install_writes_the_unit_and_env_file_and_enables_it(tmp_path: Path) -> None:
    spec, said, runner = spec_in(tmp_path), [], Runner()
    assert (
        install(
            spec, platform="linux", home=tmp_path, config_home=None, say=said.append, run=runner
        )
        == 0
    )
    unit = service_path("linux", tmp_path)
    assert unit == tmp_path / ".config/systemd/user/dispatch-matrix.service"
    assert unit.read_text() == systemd_unit(spec)
    assert spec.env_file.stat().st_mode & 0o077 == 0
    assert ["systemctl", "--user", "enable", "--now", "dispatch-matrix.service"] in runner.calls
    assert any("enable-linger" in line for line in said)


def test_install_without_a_user_session_prints_the_commands(tmp_path: Path) -> None:
    spec, said = spec_in(tmp_path), []
    runner = Runner(failing="daemon-reload", linger="yes")
    install(spec, platform="linux", home=tmp_path, config_home=None, say=said.append, run=runner)
    assert service_path("linux", tmp_path).exists()
    assert "  systemctl --user enable --now dispatch-matrix.service" in said
    assert not any("enable-linger" in line for line in said), "linger already on"
    assert ["systemctl", "--user", "enable", "--now", "dispatch-matrix.service"] not in (
        runner.calls
    )


def test_dry_run_prints_the_unit_and_writes_nothing(tmp_path: Path) -> None:
    spec, said, runner = spec_in(tmp_path), [], Runner()
    install(
        spec,
        platform="linux",
        home=tmp_path,
        config_home=None,
        say=said.append,
        dry_run=True,
        run=runner,
    )
    assert not service_path("linux", tmp_path).exists() and not spec.env_file.exists()
    assert runner.calls == []
    assert "Restart=on-failure" in "\n".join(said)


def test_install_keeps_an_existing_env_file(tmp_path: Path) -> None:
    spec = spec_in(tmp_path)
    spec.env_file.parent.mkdir(parents=True)
    spec.env_file.write_text("ANTHROPIC_API_KEY=sk-ant-kept\n")
    install(spec, platform="linux", home=tmp_path, config_home=None, say=print, run=Runner())
    assert spec.env_file.read_text() == "ANTHROPIC_API_KEY=sk-ant-kept\n"


def test_uninstall_disables_then_removes(tmp_path: Path) -> None:
    spec, runner = spec_in(tmp_path), Runner()
    install(spec, platform="darwin", home=tmp_path, config_home=None, say=print, run=runner)
    plist = tmp_path / "Library/LaunchAgents/org.dispatch-matrix.plist"
    assert plistlib.loads(plist.read_bytes())["Label"] == "org.dispatch-matrix"
    assert runner.calls[0][:2] == ["launchctl", "bootstrap"]
    said: list[str] = []
    assert (
        uninstall(platform="darwin", home=tmp_path, config_home=None, say=said.append, run=runner)
        == 0
    )
    assert runner.calls[-1][:2] == ["launchctl", "bootout"]
    assert not plist.exists()
    assert (
        uninstall(platform="darwin", home=tmp_path, config_home=None, say=said.append, run=runner)
        == 1
    )


def test_cli_install_service_then_uninstall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bot" / "config.toml"
    config.parent.mkdir()
    config.write_text(
        '[matrix]\nhomeserver = "http://127.0.0.1:1"\nuser_id = "@b:x"\npassword = "pw-123456"\n'
        'owners = ["@o:x"]\n'
    )
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(sys, "platform", "linux")
    assert cli.main(["install-service", "--config", str(config), "--no-enable"]) == 0
    unit = tmp_path / "xdg/systemd/user/dispatch-matrix.service"
    text = unit.read_text()
    assert f"--config {config}" in text
    assert "pw-123456" not in text
    out = capsys.readouterr().out
    assert "systemctl --user enable --now dispatch-matrix.service" in out
    assert cli.main(["uninstall-service", "--no-enable"]) == 0
    assert not unit.exists()


def test_log_file_rotates_by_size(tmp_path: Path) -> None:
    # As the daemon runs: everything it creates is private.
    old_umask = os.umask(0o077)
    logs.setup("info", tmp_path)
    handler = next(
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.handlers.RotatingFileHandler)
    )
    try:
        handler.maxBytes = 2_000
        log = logs.get("test")
        for n in range(200):
            log.info("test.filler", n=n, padding="x" * 40)
        kept = sorted(p.name for p in tmp_path.iterdir())
        assert kept == [
            "dispatch.jsonl",
            "dispatch.jsonl.1",
            "dispatch.jsonl.2",
            "dispatch.jsonl.3",
        ]
        for path in tmp_path.iterdir():
            assert path.stat().st_size <= 2_000 + 200
            assert path.stat().st_mode & 0o077 == 0, f"{path.name} is private"
            json.loads(path.read_text().splitlines()[0])
    finally:
        os.umask(old_umask)
        logs.setup("error")
