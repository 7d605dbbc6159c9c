"""Escape attempts through the real bash tool under bubblewrap: reading the state folder,
the config, the password file and ~/.ssh (by glob, symlink, `..`, /proc/*/root, the
daemon's /proc environ, hard links, umount, renaming a parent), writing outside the roots,
children that try to outlive the call, the network when it is off. Each asserts the
payload did not run and the secret is not in the output. On Linux these fail, not skip,
when bubblewrap cannot run (CI included): the product refuses to start there, so the tests
must say so too. The rules as data are table-tested in tests/test_sandbox_rules.py."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from dispatch_matrix.sandbox import host as sandbox_host
from dispatch_matrix.sandbox.host import Confinement, default_hidden, spec_for
from dispatch_matrix.toolbox.base import ToolContext, ToolResult
from dispatch_matrix.toolbox.registry import ToolRegistry
from dispatch_matrix.toolbox.shell import BashTool

P = PurePosixPath

# --- escapes, through the real bash tool under bubblewrap -----------------------------

PASSWORD = "pw-Zq81-never-seen"
API_KEY = "sk-ant-api03-never-seen-0000"
SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY----- never-seen"


class Machine:
    """A fake home with credentials, a state folder, a config and a password file."""

    def __init__(self, base: Path, state_inside_root: bool) -> None:
        self.base = base
        self.home = base / "home"
        self.work = self.home / "work"
        self.outside = base / "outside"
        self.state = (self.work / "a" / "state") if state_inside_root else (base / "store")
        for folder in (self.work, self.outside, self.state, self.home / ".ssh"):
            folder.mkdir(parents=True, exist_ok=True)
        self.config = self.state / "config.toml"
        self.config.write_text(f'[matrix]\npassword = "{PASSWORD}"\n')
        (self.state / "dispatch.sqlite").write_text(f"token {API_KEY}\n")
        self.password_file = self.work / "bot-password.txt"
        self.password_file.write_text(PASSWORD + "\n")
        (self.home / ".ssh" / "id_ed25519").write_text(SSH_KEY + "\n")
        (self.home / ".netrc").write_text(f"machine example.org password {PASSWORD}\n")

    def context(self, **extra: Any) -> ToolContext:
        hidden = [self.state, self.config, self.password_file]
        hidden += default_hidden(self.home, os.getuid())
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.home), "LANG": "C.UTF-8"}
        return ToolContext(
            workdir=self.work,
            allowed_roots=(self.work,),
            bash_timeout_s=120,
            denied_paths=tuple(hidden),
            env=env,
            **extra,
        )


def text(result: ToolResult) -> str:
    return "\n".join(block["text"] for block in result.content if block["type"] == "text")


async def sh(confinement: Confinement, ctx: ToolContext, command: str, **more: Any) -> str:
    tools = ToolRegistry([BashTool(confinement)])
    return text(await tools.run("bash", {"command": command, **more}, ctx))


# A stand-in daemon: a process whose environment held a secret from its start, as the real
# one holds ANTHROPIC_API_KEY (/proc/PID/environ shows the environment a process began with).
_DAEMON = """
import asyncio, json, sys
from pathlib import Path
from dispatch_matrix.toolbox.base import ToolContext
from dispatch_matrix.toolbox.registry import ToolRegistry
from dispatch_matrix.sandbox.spec import Sandbox
from dispatch_matrix.sandbox.host import Confinement
from dispatch_matrix.toolbox.shell import BashTool
a = json.loads(sys.argv[1])
sandbox = Confinement(Sandbox(a["kind"]), a["program"], a["userns"], True)
work = Path(a["work"])
ctx = ToolContext(work, (work,), 120, tuple(Path(p) for p in a["hidden"]), env=a["env"])
result = asyncio.run(ToolRegistry([BashTool(sandbox)]).run("bash", {"command": a["cmd"]}, ctx))
print("".join(block["text"] for block in result.content))
"""


async def sh_in_daemon(confinement: Confinement, ctx: ToolContext, command: str) -> str:
    request = {
        "kind": confinement.kind.value,
        "program": confinement.program,
        "userns": confinement.user_namespace,
        "work": str(ctx.workdir),
        "hidden": [str(p) for p in ctx.denied_paths],
        "env": ctx.env,
        "cmd": command,
    }
    env = {**os.environ, "ANTHROPIC_API_KEY": "DAEMON_ONLY_SECRET"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _DAEMON,
        json.dumps(request),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    return out.decode()


def assert_no_secret(output: str) -> None:
    for secret in (PASSWORD, API_KEY, SSH_KEY, "DAEMON_ONLY_SECRET"):
        assert secret not in output, output


@pytest.fixture(params=[False, True], ids=["state-outside-root", "state-inside-root"])
def machine(request: pytest.FixtureRequest, tmp_path: Path) -> Machine:
    return Machine(tmp_path, state_inside_root=request.param)


READ_ATTEMPTS = [
    "cat {state}/config.toml",
    "cat {state}/*",
    "cat {base}/*/config.toml {base}/*/*/config.toml {base}/*/*/*/*/config.toml",
    "cat {state_glob}/config.toml",
    "grep -r {password} {base} 2>&1",
    "ln -s {state} link && cat link/config.toml",
    "cd {work} && cat ../../store/config.toml ../work/a/state/config.toml",
    "cat /proc/self/root{state}/config.toml /proc/1/root{state}/config.toml",
    "cat /proc/$PPID/environ /proc/1/environ /proc/*/environ | tr '\\0' '\\n'",
    "cat /proc/$PPID/cmdline /proc/1/cmdline | tr '\\0' ' '",
    "ps eww -A 2>&1",
    "cat {home}/.ssh/id_* ~/.ssh/id_ed25519 ~/.netrc",
    "cat {password_file}",
    "ln {password_file} hard && cat hard",
    "ln {config} hard2 && cat hard2",
    "umount {state} 2>&1; cat {state}/config.toml",
    "umount {home}/.ssh 2>&1; cat {home}/.ssh/id_ed25519",
    "mv {state_parent} {work}/moved 2>&1; cat {work}/moved/state/config.toml",
    "find / -name config.toml -path '*{marker}*' -exec cat {{}} + 2>/dev/null",
    "tar cf - {base} 2>/dev/null | strings",
    "python3 -c 'import os; print(os.environ)'",
]


@pytest.mark.parametrize("attempt", READ_ATTEMPTS)
async def test_no_read_reaches_a_secret(
    bwrap: Confinement, machine: Machine, attempt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The daemon's own environment holds a key the shell must never see.
    monkeypatch.setenv("ANTHROPIC_API_KEY", "DAEMON_ONLY_SECRET")
    command = attempt.format(
        state=machine.state,
        state_parent=machine.state.parent,
        state_glob=str(machine.state)[:-2] + "*",
        base=machine.base,
        work=machine.work,
        home=machine.home,
        config=machine.config,
        password_file=machine.password_file,
        password=PASSWORD,
        marker=machine.base.name,
    )
    run = sh_in_daemon if "/proc" in command or "ps " in command else sh
    output = await run(bwrap, machine.context(), command)
    assert_no_secret(output)
    # Nothing moved on the host either.
    assert machine.config.read_text().count(PASSWORD) == 1


WRITE_ATTEMPTS = [
    ("echo x > {outside}/planted", "{outside}/planted"),
    ("echo x > /etc/planted-by-sandbox", "/etc/planted-by-sandbox"),
    ("echo 'owner = \"@evil:x\"' >> {config}", None),
    ("echo x > {state}/planted", "{state}/planted"),
    ("mkdir -p {home}/.ssh && echo ssh-ed25519 AAAA >> {home}/.ssh/authorized_keys", None),
    ("echo x > {password_file}", None),
    ("touch /tmp/left-behind-{marker}", "/tmp/left-behind-{marker}"),
    ("cp /bin/sh {home}/.ssh/ 2>&1; ls {home}/.ssh", None),
]


@pytest.mark.parametrize(("attempt", "planted"), WRITE_ATTEMPTS)
async def test_no_write_lands_outside_the_roots(
    bwrap: Confinement, machine: Machine, attempt: str, planted: str | None
) -> None:
    values = {
        "outside": machine.outside,
        "state": machine.state,
        "config": machine.config,
        "home": machine.home,
        "password_file": machine.password_file,
        "marker": machine.base.name,
    }
    before = {p: p.read_bytes() for p in machine.base.rglob("*") if p.is_file()}
    await sh(bwrap, machine.context(), attempt.format(**values))
    if planted is not None:
        assert not Path(planted.format(**values)).exists()
    after = {p: p.read_bytes() for p in machine.base.rglob("*") if p.is_file()}
    assert after == before
    assert not (machine.home / ".ssh" / "authorized_keys").exists()


async def test_the_roots_stay_writable_and_tmp_is_private(
    bwrap: Confinement, machine: Machine
) -> None:
    ctx = machine.context()
    made = await sh(bwrap, ctx, "echo hi > made.txt && cat made.txt && echo t > /tmp/t && ls /tmp")
    assert made.startswith("hi\n")
    assert (machine.work / "made.txt").read_text() == "hi\n"
    again = await sh(bwrap, ctx, "cat /tmp/t 2>&1; echo $TMPDIR")
    assert "No such file" in again and "/tmp" in again


async def test_only_the_allowlisted_environment(
    bwrap: Confinement, machine: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPATCH_MATRIX__PASSWORD", "DAEMON_ONLY_SECRET")
    output = await sh(bwrap, machine.context(), "/usr/bin/env")
    names = {line.split("=", 1)[0] for line in output.splitlines()[:-1]}
    assert names <= {"PATH", "HOME", "LANG", "TMPDIR", "PWD", "SHLVL", "_"}
    assert_no_secret(output)


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if marker.encode() in cmdline and state not in ("Z", "X"):
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize(
    "leaver",
    [
        "setsid sleep {n} &",
        "nohup sleep {n} >/dev/null 2>&1 &",
        "( ( sleep {n} & ) & )",
        "setsid -f sh -c 'trap \"\" TERM HUP; exec sleep {n}' </dev/null >/dev/null 2>&1",
        "(exec -a sleeper sleep {n} &) ; disown -a",
    ],
)
async def test_nothing_a_call_started_outlives_it(
    bwrap: Confinement, machine: Machine, leaver: str
) -> None:
    marker = f"{600 + (time.monotonic_ns() % 100_000) / 100_000:.5f}"
    # The pause lets the child detach (setsid) before the shell ends and its group is stopped.
    command = leaver.format(n=marker) + " sleep 0.5; echo left"
    # A hang guard, not a speed bound: a call that waited for what it left behind would
    # wait the leaver's 600 s.
    output = await asyncio.wait_for(sh(bwrap, machine.context(), command), 120)
    assert "left" in output, output
    # The namespace's teardown kills them; on a loaded machine the last exit can take a moment.
    assert await gone(marker), processes_with(marker)


async def test_a_cancelled_call_leaves_nothing_behind(bwrap: Confinement, machine: Machine) -> None:
    marker = "700.4242"
    started = asyncio.Event()

    async def on_process(pgid: int) -> None:
        started.set()

    ctx = machine.context(on_process=on_process)
    task = asyncio.create_task(sh(bwrap, ctx, f"setsid sleep {marker} & sleep {marker}"))
    await asyncio.wait_for(started.wait(), 10)
    for _ in range(100):
        if len(processes_with(marker)) >= 2:
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone(marker)


@pytest.fixture
def listener() -> Any:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


@pytest.mark.parametrize("network", [True, False])
async def test_network_is_off_when_configured(
    bwrap: Confinement, machine: Machine, listener: int, network: bool
) -> None:
    confinement = Confinement(bwrap.kind, bwrap.program, bwrap.user_namespace, network)
    command = f"exec 3<>/dev/tcp/127.0.0.1/{listener} && echo connected"
    output = await sh(confinement, machine.context(), command)
    assert ("connected" in output) is network, output


async def test_the_spec_of_a_real_call(bwrap: Confinement, machine: Machine) -> None:
    ctx = machine.context()
    got = spec_for(ctx.allowed_roots, ctx.denied_paths, ctx.env, True, ctx.workdir)
    assert P(machine.work.resolve()) in got.writable
    if machine.state.is_relative_to(machine.work):
        assert P(machine.state.resolve()) in got.hidden_dirs
        assert P(machine.state.parent.resolve()) in got.pinned
    assert P(machine.password_file.resolve()) in got.hidden_files


async def test_a_call_cancelled_while_bwrap_sets_up_leaves_nothing_behind(
    bwrap: Confinement, machine: Machine
) -> None:
    # bubblewrap arms its "die with parent" only after its clone; a kill in those first
    # milliseconds used to leave about 1 sandbox in 200 running, adopted by init.
    marker = f"{800 + os.getpid() % 100 + 0.5:.1f}"
    for _ in range(60):
        started = asyncio.Event()

        async def on_process(pgid: int, started: asyncio.Event = started) -> None:
            started.set()

        ctx = machine.context(on_process=on_process)
        task = asyncio.create_task(sh(bwrap, ctx, f"setsid sleep {marker} & sleep {marker}"))
        await asyncio.wait_for(started.wait(), 10)
        await asyncio.sleep(random.random() * 0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await gone(marker)


async def gone(marker: str, within_s: float = 30.0) -> bool:
    """Whether every process with `marker` is gone; a killed one takes a moment to exit (a
    hang guard: it returns as soon as they are, and a loaded machine may take seconds)."""
    deadline = time.monotonic() + within_s
    while processes_with(marker):
        if time.monotonic() > deadline:
            return False
        # Nothing reports the exit of a process that is not our child: poll, briefly.
        await asyncio.sleep(0.02)
    return True


async def test_a_hard_link_to_a_secret_made_before_stops_the_shell(
    bwrap: Confinement, machine: Machine
) -> None:
    # The sandbox masks names; a second name made earlier could be anywhere: fail closed.
    os.link(machine.password_file, machine.work / "innocent.txt")
    output = await sh(bwrap, machine.context(), "cat innocent.txt")
    assert_no_secret(output)
    assert "hard link" in output
    ctx = machine.context()
    assert machine.password_file.resolve() in sandbox_host.hard_linked_secrets(ctx.denied_paths)
