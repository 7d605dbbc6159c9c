"""Attack review 3: the local sockets and services a shell call can reach. Each row starts a
real listener outside the sandbox (a unix socket at a path, an abstract one, a loopback TCP
port), then connects from a shell call under bubblewrap, with the network off or on, and
checks whether the listener's greeting came back. What is reachable on purpose with the
network on is asserted as such: README's sandbox section lists it as left open."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from harness.owner import Owner, build_owner

from dispatch_matrix.sandbox import choice, host, landlock
from dispatch_matrix.sandbox.host import Confinement, default_hidden
from dispatch_matrix.sandbox.sockets import candidates, env_sockets, loopback_without_token
from dispatch_matrix.toolbox.base import ToolContext
from dispatch_matrix.toolbox.registry import ToolRegistry
from dispatch_matrix.toolbox.shell import BashTool

GREETING = "reached-the-service"
# A client in the sandbox: a path, `@name` for an abstract socket, or a TCP port.
CLIENT = (
    'python3 -c "import socket, sys; a = sys.argv[1]; '
    "s = socket.socket(socket.AF_INET if a.isdigit() else socket.AF_UNIX); "
    "s.settimeout(5); "
    "s.connect(('127.0.0.1', int(a)) if a.isdigit() else a.replace('@', chr(0), 1)); "
    'print(s.recv(99).decode())" {} 2>&1 | tail -1'
)


@pytest.fixture
def make_owner(
    bwrap: Confinement, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Owner]:
    return build_owner(bwrap, tmp_path, monkeypatch)


class Listener:
    """A server that greets whoever connects, on its own thread, until closed."""

    def __init__(self, family: int, address: str | tuple[str, int]) -> None:
        self.sock = socket.socket(family)
        self.sock.bind(address)
        self.sock.listen()
        self.sock.settimeout(0.2)
        self._open = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._open:
            try:
                peer, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            with peer:
                peer.sendall(GREETING.encode())

    def close(self) -> None:
        self._open = False
        self._thread.join(timeout=30)
        self.sock.close()


@pytest.fixture
def listeners() -> Iterator[list[Listener]]:
    opened: list[Listener] = []
    yield opened
    for listener in opened:
        listener.close()


def unix_at(opened: list[Listener], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    opened.append(Listener(socket.AF_UNIX, str(path)))


# (a socket under the home, the default root; the variable that names it, if any). Each
# was reached from a sandbox with the network off before: a read-only mount does not stop
# `connect`.
PATH_SOCKETS = [
    (".1password/agent.sock", None),
    (".bitwarden-ssh-agent.sock", None),
    (".docker/desktop/docker.sock", None),
    (".colima/default/docker.sock", None),
    (".screen/S-me/123.pts-0.host", None),
    # Wherever the daemon's environment names one, under any name.
    ("keys/agent.sock", "SSH_AUTH_SOCK"),
    ("bus/session", "DBUS_SESSION_BUS_ADDRESS"),
    ("term/kitty.sock", "KITTY_LISTEN_ON"),
    ("mux/default", "TMUX"),
    ("editor/nvim.sock", "NVIM"),
    ("engine/docker.sock", "DOCKER_HOST"),
    ("other/unknown.sock", "SOME_TOOL_SOCKET"),
]
_SPELLED = {
    "DBUS_SESSION_BUS_ADDRESS": "unix:path={},guid=0123",
    "KITTY_LISTEN_ON": "unix:{}",
    "TMUX": "{},4242,0",
    "DOCKER_HOST": "unix://{}",
}


@pytest.mark.parametrize(("rel", "variable"), PATH_SOCKETS, ids=[r[0] for r in PATH_SOCKETS])
@pytest.mark.parametrize("network", [False, True], ids=["network off", "network on"])
async def test_a_socket_that_hands_out_more_is_not_reached(
    make_owner: Callable[..., Owner],
    listeners: list[Listener],
    monkeypatch: pytest.MonkeyPatch,
    rel: str,
    variable: str | None,
    network: bool,
) -> None:
    def prepare(home: Path) -> None:
        unix_at(listeners, home / rel)
        if variable:
            monkeypatch.setenv(variable, _SPELLED.get(variable, "{}").format(home / rel))

    owner = make_owner(prepare=prepare, network=network)
    output = await owner.sh(CLIENT.format(owner.home / rel))
    assert GREETING not in output, output


async def test_an_ordinary_socket_in_a_root_still_works(
    make_owner: Callable[..., Owner], listeners: list[Listener]
) -> None:
    """A socket the work itself made (a test server's) is no agent's: reached as before."""
    owner = make_owner(prepare=lambda home: unix_at(listeners, home / "work" / "app.sock"))
    output = await owner.sh(CLIENT.format(owner.home / "work" / "app.sock"))
    assert GREETING in output, output


@pytest.mark.parametrize("network", [False, True], ids=["network off", "network on"])
async def test_loopback_and_abstract_sockets_with_and_without_the_network(
    bwrap: Confinement, make_owner: Callable[..., Owner], listeners: list[Listener], network: bool
) -> None:
    """With the network off the sandbox has its own loopback and its own abstract sockets
    (held). With it on, loopback is the host's (left open, README: a local homeserver's or
    MCP server's port); the host's abstract sockets (an X11 display's) were reached too, and
    are now out of reach where Landlock scopes them (kernel 6.12+, as here), which
    `doctor` says."""
    name = f"dm-test-{os.getpid()}-{network}"
    listeners.append(Listener(socket.AF_UNIX, "\0" + name))
    tcp = Listener(socket.AF_INET, ("127.0.0.1", 0))
    listeners.append(tcp)
    owner = make_owner(network=network)
    port = tcp.sock.getsockname()[1]
    abstract = await owner.sh(CLIENT.format("@" + name))
    loopback = await owner.sh(CLIENT.format(port))
    scoped = not bwrap.abstract_open
    assert (GREETING in abstract) == (network and not scoped), abstract
    assert (GREETING in loopback) == network, loopback
    # The sandbox's own abstract sockets still work (a test server's, an X server's own).
    own = await owner.sh(
        "python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); s.bind(chr(0) + 'own'); "
        "s.listen(); c = socket.socket(socket.AF_UNIX); c.connect(chr(0) + 'own'); "
        "print('own reached')\""
    )
    assert "own reached" in own, own


def test_this_machine_scopes_abstract_sockets(bwrap: Confinement) -> None:
    """The proof above is only as good as the kernel under it: this machine has Landlock
    ABI 6 or later, so the scope was applied, not skipped."""
    if landlock.abi() < landlock.SCOPE_ABI:
        pytest.skip(f"Landlock ABI {landlock.abi()}: the scope needs {landlock.SCOPE_ABI}")
    assert bwrap.network and bwrap.abstract_open == "", bwrap.describe()
    assert "abstract unix sockets out of reach" in bwrap.describe()


async def test_the_terminals_of_the_host_are_not_the_sandbox_s(
    make_owner: Callable[..., Owner],
) -> None:
    """/dev/pts is the sandbox's own: no writing into the owner's terminal (held)."""
    owner = make_owner()
    output = await owner.sh("ls /dev/pts; for t in /dev/pts/[0-9]*; do echo x > $t; done")
    assert output.split()[:1] == ["ptmx"], output


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/run/user/1000/keyring/ssh", ["/run/user/1000/keyring/ssh"]),
        ("unix:path=/run/user/1000/bus,guid=ab12", ["/run/user/1000/bus"]),
        ("unix:path=/a/bus;unix:abstract=/tmp/dbus-x", ["/a/bus"]),
        ("unix:///var/run/docker.sock", ["/var/run/docker.sock"]),
        ("unix:/tmp/kitty", ["/tmp/kitty"]),
        ("unix:@kitty", []),
        ("/tmp/tmux-1000/default,4242,0", ["/tmp/tmux-1000/default"]),
        ("/usr/bin:/bin", ["/usr/bin", "/bin"]),
        ("tcp://127.0.0.1:2375", []),
        ("C.UTF-8", []),
    ],
)
def test_where_a_variable_names_a_socket(value: str, expected: list[str]) -> None:
    assert candidates(value) == [PurePosixPath(p) for p in expected]


def test_only_sockets_named_by_the_environment_are_hidden() -> None:
    sockets = {Path("/r/wayland-0"), Path("/h/agent.sock")}
    env = {
        "SSH_AUTH_SOCK": "/h/agent.sock",
        "WAYLAND_DISPLAY": "wayland-0",
        "XDG_RUNTIME_DIR": "/r",
        "PATH": "/usr/bin:/h",
        "HOME": "/h",
    }
    found = env_sockets(env, is_socket=lambda p: p in sockets)
    assert sorted(found) == sorted(sockets)


@pytest.mark.parametrize(
    "path",
    [
        "/run/libvirt/libvirt-sock",
        "/var/snap/lxd/common/lxd/unix.socket",
        "/var/lib/incus/unix.socket",
        "/run/crio/crio.sock",
        "/run/k3s/containerd/containerd.sock",
        "/run/buildkit/buildkitd.sock",
        "/run/screen/S-me/1.pts-0.host",
    ],
)
def test_engines_that_are_root_on_the_host_are_hidden(path: str) -> None:
    """Their sockets are not on this machine, so the proof is the list: each lies in a
    hidden path (the mounts themselves are proven above with sockets that exist)."""
    hidden = [PurePosixPath(p) for p in default_hidden(Path("/home/me"), 1000)]
    assert any(PurePosixPath(path).is_relative_to(h) for h in hidden), path


async def test_the_hosts_shared_memory_is_not_the_sandbox_s(
    make_owner: Callable[..., Owner],
) -> None:
    """/dev/shm is the sandbox's own (bubblewrap's `--dev`): a host program's shared
    memory (an audio server's, a browser's) is neither read nor changed (held)."""
    name = f"dm-attack3-{os.getpid()}"
    shared = Path("/dev/shm") / name
    shared.write_text("host memory\n")
    try:
        owner = make_owner()
        output = await owner.sh(f"cat /dev/shm/{name} 2>&1; echo evil > /dev/shm/{name}")
        assert "host memory" not in output, output
        assert shared.read_text() == "host memory\n"
    finally:
        shared.unlink()


@pytest.mark.parametrize(
    ("url", "has_headers", "said"),
    [
        ("http://127.0.0.1:8931/mcp", False, True),
        ("http://localhost:3000/sse", False, True),
        ("http://[::1]:9000/mcp", False, True),
        ("http://app.localhost/mcp", False, True),
        ("http://127.0.0.1:8931/mcp", True, False),
        ("https://mcp.example.org/", False, False),
        ("http://192.168.1.5:80/", False, False),
    ],
)
def test_a_loopback_mcp_server_without_a_token_is_named(
    url: str, has_headers: bool, said: bool
) -> None:
    """Left open, said at start (`sandbox.loopback_mcp`): with the network on, a shell call
    reaches a server on loopback (proven above with a listener) and, without a token the
    config sends, may call its tools without the rules."""
    assert loopback_without_token({"s": (url, has_headers)}) == (["s"] if said else [])


def test_a_kernel_that_refuses_the_scope_runs_the_sandbox_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A container's seccomp profile may refuse Landlock's calls though the kernel has
    them: the sandbox still starts, without the scope, and says why (never a crash)."""
    if landlock.abi() < landlock.SCOPE_ABI:
        pytest.skip("no Landlock scope here to refuse")
    tried: list[str] = []

    def probe(candidate: Confinement) -> str:
        tried.append(candidate.abstract_open)
        return "" if candidate.abstract_open else "landlock_restrict_self: Operation not permitted"

    monkeypatch.setattr(choice, "probe_once", probe)
    found = choice.check_sandbox("bubblewrap")
    assert tried[0] == "" and found.abstract_open.startswith("Landlock refused"), tried
    assert "abstract unix sockets in reach (Landlock refused" in found.describe()


async def test_a_scope_that_fails_in_the_child_is_a_tool_error(
    bwrap: Confinement, tmp_path: Path
) -> None:
    """Nothing runs, and the model is told, if the child cannot set the scope."""

    def refuse() -> None:
        raise OSError(1, "landlock_restrict_self")

    class Refusing(Confinement):
        def launch(self, spec: Any, command: str) -> host.SandboxedLaunch:
            launch = super().launch(spec, command)
            launch.preexec = refuse
            return launch

    tools = ToolRegistry([BashTool(Refusing(bwrap.kind, bwrap.program))])
    marker = tmp_path / "ran"
    ctx = ToolContext(
        workdir=tmp_path, allowed_roots=(tmp_path,), bash_timeout_s=30, env={"PATH": "/bin"}
    )
    result = await tools.run("bash", {"command": f"touch {marker}"}, ctx)
    assert result.is_error and "could not start the sandbox" in str(result.content), result
    assert not marker.exists()
