"""`install-service` / `uninstall-service`: a systemd user unit (Linux) or a launchd agent
(macOS) that runs `dispatch-matrix run --config FILE` for the current config.

The unit and the plist are made by pure functions of a `ServiceSpec`, so their text is
table-tested; the edges (writing the file, `systemctl --user`, `launchctl`, `loginctl`)
are thin. Where the service manager cannot be reached (no user session, as root in a
container) the file is still written and the exact commands to enable it are printed.
Secrets never go into the unit: the API key lives in an environment file (0600) that the
unit names, or in the config's `api_key_file`.
"""

from __future__ import annotations

import os
import plistlib
import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dispatch_matrix.core.errors import DispatchError

NAME = "dispatch-matrix"
LABEL = "org.dispatch-matrix"
# Exit codes a restart cannot fix: the config is wrong (2), another copy already runs on
# this state folder (4), the homeserver rejects the bot's password (6).
NO_RESTART_CODES = (2, 4, 6)

ENV_FILE_TEXT = (
    "# Environment for the dispatch-matrix service (mode 0600, never in the unit).\n"
    "# ANTHROPIC_API_KEY=sk-ant-...\n"
)

Runner = Callable[[Sequence[str]], tuple[int, str]]


class ServiceError(DispatchError):
    """The service file could not be written or removed."""

    exit_code = 3


@dataclass(frozen=True)
class ServiceSpec:
    """What the service runs: every path absolute."""

    executable: Path
    config: Path
    workdir: Path
    env_file: Path
    log_dir: Path


def _systemd_word(word: str) -> str:
    # `%` starts a specifier in unit files; spaces and quotes need C-style quoting.
    word = word.replace("%", "%%")
    if any(c in word for c in " \t\"'\\;$"):
        escaped = word.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    return word


def _systemd_path(path: Path) -> str:
    # Path settings take the rest of the line as it is (spaces included): no quotes.
    return str(path).replace("%", "%%")


def run_arguments(spec: ServiceSpec) -> list[str]:
    """The command line the service starts."""
    return [str(spec.executable), "run", "--config", str(spec.config)]


def systemd_unit(spec: ServiceSpec) -> str:
    """The systemd user unit's text."""
    exec_start = " ".join(_systemd_word(word) for word in run_arguments(spec))
    no_restart = " ".join(str(code) for code in NO_RESTART_CODES)
    return (
        "# Written by `dispatch-matrix install-service`; removed by `uninstall-service`.\n"
        "[Unit]\n"
        "Description=dispatch-matrix: Claude agent commanded over Matrix\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"WorkingDirectory={_systemd_path(spec.workdir)}\n"
        "# The API key lives here (0600), never in this file; '-' lets it be absent.\n"
        f"EnvironmentFile=-{_systemd_path(spec.env_file)}\n"
        f"ExecStart={exec_start}\n"
        "# SIGTERM lets the running step finish its checkpoint; every completed step is on disk.\n"
        "KillSignal=SIGTERM\n"
        "TimeoutStopSec=30\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "# A wrong config (2), a copy already running (4), a rejected password (6): restarting\n"
        "# cannot fix these, so they stay stopped and say why in the journal.\n"
        f"RestartPreventExitStatus={no_restart}\n"
        "UMask=0077\n"
        "NoNewPrivileges=true\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def launchd_plist(spec: ServiceSpec) -> str:
    """The launchd agent's plist (XML)."""
    agent: dict[str, object] = {
        "Label": LABEL,
        "ProgramArguments": run_arguments(spec),
        "WorkingDirectory": str(spec.workdir),
        "RunAtLoad": True,
        # Restart only after a failure; launchd cannot exempt an exit code, so a copy that
        # found another running (exit 4) is retried after ThrottleInterval and exits again.
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 10,
        "Umask": 0o077,
        "StandardOutPath": str(spec.log_dir / "launchd.out"),
        "StandardErrorPath": str(spec.log_dir / "launchd.err"),
    }
    return plistlib.dumps(agent, sort_keys=False).decode()


def service_path(platform: str, home: Path, config_home: Path | None = None) -> Path:
    """Where the unit or plist goes for this user."""
    if platform == "darwin":
        return home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    if platform.startswith("linux"):
        return (config_home or home / ".config") / "systemd" / "user" / f"{NAME}.service"
    raise ServiceError(f"no service manager known for {platform}", fix="run it in the foreground")


def enable_commands(platform: str, path: Path, uid: int) -> list[list[str]]:
    """The commands that load and start the service once its file is written."""
    if platform == "darwin":
        return [["launchctl", "bootstrap", f"gui/{uid}", str(path)]]
    return [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", f"{NAME}.service"],
    ]


def disable_commands(platform: str, path: Path, uid: int) -> list[list[str]]:
    """The commands that stop and unload the service before its file is removed."""
    if platform == "darwin":
        return [["launchctl", "bootout", f"gui/{uid}", str(path)]]
    return [["systemctl", "--user", "disable", "--now", f"{NAME}.service"]]


def linger_advice(platform: str, user: str, linger: str | None) -> str | None:
    """What to say about lingering: a user service stops at logout unless it is on.

    `linger` is `loginctl show-user USER -p Linger --value` (None when loginctl could not
    answer, e.g. no session for this user).
    """
    if not platform.startswith("linux") or linger == "yes":
        return None
    how = f"sudo loginctl enable-linger {user}"
    if linger is None:
        return (
            f"Could not ask loginctl whether lingering is on for {user}. Without it the service "
            f"runs only while you are logged in; to keep it running after logout and start it "
            f"at boot: {how}"
        )
    return (
        f"Lingering is off for {user}: the service runs only while you are logged in. To keep "
        f"it running after logout and start it at boot: {how}"
    )


def _shell_line(command: Sequence[str]) -> str:
    return shlex.join(command)


def _subprocess(command: Sequence[str]) -> tuple[int, str]:
    try:
        done = subprocess.run(  # noqa: S603 - fixed argument lists, no shell
            list(command), capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return 127, str(err)
    return done.returncode, (done.stderr or done.stdout).strip()


def _run_all(
    commands: list[list[str]], run: Runner, say: Callable[[str], None], manual: str
) -> bool:
    """Run commands in order; on the first failure say why and print what is left to do."""
    for index, command in enumerate(commands):
        code, output = run(command)
        if code != 0:
            first = output.splitlines()[0] if output else f"exit {code}"
            say(f"`{_shell_line(command)}` did not work here ({first}).")
            say(manual)
            for rest in commands[index:]:
                say(f"  {_shell_line(rest)}")
            return False
    return True


def install(
    spec: ServiceSpec,
    *,
    platform: str,
    home: Path,
    config_home: Path | None,
    say: Callable[[str], None],
    dry_run: bool = False,
    enable: bool = True,
    run: Runner = _subprocess,
) -> int:
    """Write the unit (or print it, `dry_run`), then enable and start it if we can."""
    path = service_path(platform, home, config_home)
    text = launchd_plist(spec) if platform == "darwin" else systemd_unit(spec)
    if dry_run:
        say(f"# {path}")
        say(text.rstrip("\n"))
        return 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o644)
        if platform != "darwin" and not spec.env_file.exists():
            spec.env_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(spec.env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(ENV_FILE_TEXT)
    except OSError as err:
        raise ServiceError(
            f"cannot write {err.filename or path}: {err.strerror}", fix="check the folder"
        ) from err
    say(f"Wrote {path}")
    if platform != "darwin":
        say(f"Put ANTHROPIC_API_KEY=… in {spec.env_file} (0600) unless the config has it.")
    commands = enable_commands(platform, path, os.getuid())
    if not enable:
        say("To enable and start it:")
        for command in commands:
            say(f"  {_shell_line(command)}")
    elif _run_all(commands, run, say, "To enable and start it, in your login session run:"):
        say("Enabled and started. `dispatch-matrix status` shows how it is doing.")
    if platform != "darwin":
        user = os.environ.get("USER") or os.environ.get("LOGNAME") or str(os.getuid())
        code, value = run(["loginctl", "show-user", user, "-p", "Linger", "--value"])
        advice = linger_advice(platform, user, value.strip() if code == 0 else None)
        if advice:
            say(advice)
    return 0


def uninstall(
    *,
    platform: str,
    home: Path,
    config_home: Path | None,
    say: Callable[[str], None],
    enable: bool = True,
    run: Runner = _subprocess,
) -> int:
    """Stop and disable the service if we can, then remove its file; 1 if there was none."""
    path = service_path(platform, home, config_home)
    if not path.exists():
        say(f"No service installed ({path} does not exist).")
        return 1
    commands = disable_commands(platform, path, os.getuid())
    if enable:
        _run_all(commands, run, say, "To stop it, in your login session run:")
    path.unlink()
    say(f"Removed {path}")
    if platform != "darwin" and enable:
        run(["systemctl", "--user", "daemon-reload"])
    return 0
