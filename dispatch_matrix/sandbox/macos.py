"""The macOS `sandbox-exec` profile for a `SandboxSpec`: the same rules as on Linux.

UNTESTED on a Mac: this project's CI runs on Linux, where `sandbox-exec` does not exist.
The text is unit-tested (tests/test_sandbox.py) and README.md says so.

Seatbelt (SBPL) takes the last matching rule, so the profile is built from broad to narrow:
allow by default (so ordinary tools work), deny every write, allow writes in the roots and
the private temp folder, then deny reading and writing the hidden paths, and last forbid
renaming the folders that lead to a hidden path (else `mv` would carry it to a name no rule
covers). Other processes are invisible (their environment holds the daemon's secrets), Apple
Events and Launch Services are refused (both could have a process outside the sandbox run a
command), the keychain daemon is unreachable, and the network is refused when it is off.
Differences from Linux: the environment is what the daemon hands `sandbox-exec` (there is no
`--clearenv`), and there is no pid namespace: the process group is still stopped after each
call, but a double-forked daemon can escape it.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from dispatch_matrix.sandbox.spec import SandboxSpec

# Mach services that reach the keychain: `security find-generic-password` goes through them.
_KEYCHAIN_SERVICES = ("com.apple.SecurityServer", "com.apple.security.agent")


def quote(path: PurePosixPath | str) -> str:
    """An SBPL string literal."""
    text = str(path).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _ancestors(path: PurePosixPath) -> list[PurePosixPath]:
    return [p for p in path.parents if p != PurePosixPath("/")]


def profile(spec: SandboxSpec) -> str:
    """The SBPL profile text for `spec`. Pure."""
    lines = [
        "(version 1)",
        "(allow default)",
        "",
        "; The file system is read-only but for the roots and the private temp folder.",
        "(deny file-write*)",
        '(allow file-write-data (literal "/dev/null") (literal "/dev/tty") (literal "/dev/stdout")',
        '  (literal "/dev/stderr") (subpath "/dev/fd"))',
    ]
    writable = [*spec.writable, spec.tmp]
    lines.append("(allow file-write* " + " ".join(f"(subpath {quote(p)})" for p in writable) + ")")
    # Read-only inside the roots: what runs later outside the sandbox. Seatbelt matches a
    # path that does not exist yet, so the watched ones are simply denied here.
    kept = [f"(subpath {quote(p)})" for p in [*spec.readonly, *spec.watched]]
    if kept:
        lines += [
            "; What runs later outside the sandbox stays as it is, even inside a root.",
            "(deny file-write* " + " ".join(kept) + ")",
        ]
    hidden = [f"(subpath {quote(p)})" for p in spec.hidden_dirs]
    hidden += [f"(literal {quote(p)})" for p in spec.hidden_files]
    if hidden:
        lines += [
            "",
            "; The control plane and the credentials are not visible at all.",
            "(deny file-read* file-write* " + " ".join(hidden) + ")",
        ]
        parents = sorted(
            {a for p in [*spec.hidden_dirs, *spec.hidden_files] for a in _ancestors(p)},
            key=lambda p: (len(p.parts), str(p)),
        )
        if parents:
            lines += [
                "; Their folders cannot be renamed away from the rules that cover them.",
                "(deny file-write-unlink "
                + " ".join(f"(literal {quote(p)})" for p in parents)
                + ")",
            ]
    lines += [
        "",
        "; Other processes (and so their environment) are out of reach.",
        "(deny process-info* (require-not (target same-sandbox)))",
        "(deny signal (require-not (target same-sandbox)))",
        "; No other program may be asked to run something outside the sandbox.",
        "(deny appleevent-send)",
        "(deny lsopen)",
        "(deny mach-lookup "
        + " ".join(f"(global-name {quote(s)})" for s in _KEYCHAIN_SERVICES)
        + ")",
    ]
    if not spec.network:
        lines += ["", "; The network is off.", "(deny network*)"]
    return "\n".join(lines) + "\n"


def sandbox_exec_argv(program: str, spec: SandboxSpec, command: str) -> list[str]:
    """`sandbox-exec -p PROFILE /bin/bash -c COMMAND`."""
    return [program, "-p", profile(spec), "/bin/bash", "-c", command]
