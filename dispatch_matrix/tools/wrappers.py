"""Commands that run other commands: wrappers, evaluators, shells and `sudo`. Pure.

The shell judge sees through the wrappers here to the command they run. Each wrapper's
options are listed exactly (an option not listed means the judge cannot tell where the
wrapped command starts, so it asks). Deny rules get a wider net (`deny_forms`): after any
program that may run its arguments, every later word that is not an option is tried as the
start of the command, so `sudo -u root rm`, `nice -n 5 rm` and `xargs -0 rm` all meet
`Bash(rm:*)`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .shellmodel import Word
from .shellwords import expand_braces, unescape


@dataclass(frozen=True)
class _Options:
    flags: frozenset[str]
    valued: frozenset[str]
    # Words after the options that belong to the wrapper (timeout's duration).
    positional: int = 0
    # Leading NAME=value words set the wrapped command's environment (env, sudo).
    assignments: bool = False


def _opts(flags: str, valued: str, positional: int = 0, assignments: bool = False) -> _Options:
    return _Options(frozenset(flags.split()), frozenset(valued.split()), positional, assignments)


# Seen through: an allow rule must cover the wrapped command.
SEE_THROUGH = {
    "time": _opts("-p", ""),
    "nice": _opts("", "-n --adjustment"),
    "nohup": _opts("", ""),
    "timeout": _opts(
        "--preserve-status --foreground -v --verbose", "-s --signal -k --kill-after", 1
    ),
    "stdbuf": _opts("", "-i -o -e --input --output --error"),
    "ionice": _opts("-t", "-c -n --class --classdata"),
    "command": _opts("", ""),
    "env": _opts("-i --ignore-environment -0 --null -", "-u --unset", assignments=True),
    "setsid": _opts("-c -f -w --ctty --fork --wait", ""),
    "chronic": _opts("-e -v", ""),
    "unbuffer": _opts("-p", ""),
}
# Run a command too, but are never covered by the wrapped command's rule alone.
_INNER = {
    "sudo": _opts(
        "-A -b -E -H -K -k -n -P -S -s -i --preserve-env --login --shell --non-interactive",
        "-u -g -C -D -h -p -r -t -T -U --user --group --chdir --host --prompt --role --type",
        assignments=True,
    ),
    "doas": _opts("-n -s", "-u -C"),
    "pkexec": _opts("--disable-internal-agent", "--user"),
    "run0": _opts("", "-u --user -D --chdir"),
    "exec": _opts("-c -l", "-a"),
    "builtin": _opts("", ""),
    "coproc": _opts("", ""),
    "xargs": _opts(
        "-0 -r -t -x -p -o --null --no-run-if-empty --verbose --exit --interactive --open-tty",
        "-a -d -E -I -L -n -P -s --arg-file --delimiter --eof --replace --max-lines --max-args"
        " --max-procs --max-chars --process-slot-var",
    ),
    "watch": _opts(
        "-b -c -d -e -g -p -t -x --beep --color --differences --errexit --chgexit"
        " --precise --no-title --exec",
        "-n --interval",
    ),
}
SUDO = frozenset({"sudo", "doas", "pkexec", "run0"})
EVALUATORS = frozenset(
    {"eval", "source", ".", "exec", "builtin", "coproc", "trap", "enable", "hash", "fc", "let"}
    | {"alias", "watch", "su", "runuser"}
)
SHELLS = frozenset({"bash", "sh", "zsh", "dash", "ksh", "mksh", "ash"})
PURE_OUTPUT = frozenset({"echo", "printf", "true", "false", ":", "sleep"})
_RUNS_ARGUMENTS = (
    frozenset(SEE_THROUGH)
    | frozenset(_INNER)
    | EVALUATORS
    | SHELLS
    | {"strace", "ltrace", "flock", "chroot", "unshare", "nsenter", "firejail", "taskset"}
    | {"caffeinate", "systemd-run", "proxychains", "torsocks", "parallel", "script"}
)
_SHELL_FLAGS = frozenset("euxv")
_SAFE_SET_O = frozenset({"pipefail", "errexit", "nounset", "xtrace"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def unwrap(name: str, args: Sequence[Word]) -> tuple[list[Word], list[Word] | None] | None:
    """For a see-through wrapper: (environment words, the wrapped command's words).

    The command is None when an option is not understood, [] when there is none (the
    wrapper alone, or `command -v x`, which runs nothing). None for any other program.
    """
    if name not in SEE_THROUGH:
        return None
    if name == "command" and args and args[0].literal in ("-v", "-V"):
        return [], []
    if name == "command" and args and args[0].literal == "-p":
        return [], None
    return _split(SEE_THROUGH[name], name, args)


def inner_command(name: str, args: Sequence[Word]) -> list[Word] | None:
    """The command `sudo`, `xargs`, `exec`, `watch` … would run (None when unclear)."""
    spec = _INNER.get(name)
    if spec is None:
        return None
    _, command = _split(spec, name, args)
    return command or None


def shell_script(name: str, args: Sequence[Word]) -> tuple[bool, str | None] | None:
    """`bash -c SCRIPT`: (whether judged exactly, the script text as far as known).

    Exactly means a literal script after options that only set `-e -u -x -v` or
    `-o pipefail` and the like; otherwise the text (if any) is only for deny rules. None
    when the shell is not given `-c` (it runs a file or its input).
    """
    exact = True
    i = 0
    while i < len(args):
        text = args[i].literal
        if text is None or not text.startswith("-") or text == "-":
            return None
        if not text.startswith("--") and "c" in text[1:]:
            exact = exact and set(text[1:]) <= _SHELL_FLAGS | {"c"}
            if i + 1 >= len(args):
                return False, None
            script = args[i + 1]
            if script.literal is not None:
                return exact, script.literal
            source = script.source
            quoted = len(source) >= 2 and source[0] == source[-1] == '"'
            return False, source[1:-1] if quoted else None
        if text == "-o" and i + 1 < len(args):
            exact = exact and args[i + 1].literal in _SAFE_SET_O
            i += 2
            continue
        exact = exact and not text.startswith("--") and set(text[1:]) <= _SHELL_FLAGS
        i += 1
    return None


def evaluated(name: str, args: Sequence[Word]) -> tuple[str | None, list[Word] | None]:
    """What an evaluator or `sudo` runs, for the deny rules: (script text, command words)."""
    texts = [w.literal if w.literal is not None else w.source for w in args]
    if name == "eval":
        return " ".join(texts), None
    if name == "trap":
        return (texts[0] if texts and not texts[0].startswith("-") else None), None
    if name in ("su", "runuser"):
        index = next((i for i, t in enumerate(texts) if t in ("-c", "--command")), None)
        script = texts[index + 1] if index is not None and index + 1 < len(texts) else None
        return script, None
    command = inner_command(name, args)
    if name == "watch" and command:
        return " ".join(w.literal or w.source for w in command), None
    return None, command


def deny_forms(prefix: Sequence[Word], words: Sequence[Word]) -> list[str]:
    """Every normalised spelling of one command that deny and ask rules are tried on."""
    flat: list[str] = []
    for word in words:
        if word.pattern is None:
            flat.append(word.source)
        else:
            alternatives = expand_braces(word.pattern) or [word.pattern]
            flat.extend(unescape(a) for a in alternatives)
    assignments = [w.literal if w.literal is not None else w.source for w in prefix]
    forms = [" ".join(assignments + flat), " ".join(flat)]
    if flat and posixpath.basename(flat[0]) in _RUNS_ARGUMENTS:
        forms += [" ".join(flat[j:]) for j in range(1, len(flat)) if not flat[j].startswith("-")]
    named: list[str] = []
    for form in forms:
        first, _, rest = form.partition(" ")
        if "/" in first:
            named.append(f"{posixpath.basename(first)} {rest}".strip())
    return [f for f in dict.fromkeys(forms + named) if f]


def _split(spec: _Options, name: str, args: Sequence[Word]) -> tuple[list[Word], list[Word] | None]:
    i = 0
    while i < len(args):
        text = args[i].literal
        if text is None:
            return [], None
        if text == "--":
            i += 1
            break
        if not text.startswith("-") or (text == "-" and "-" not in spec.flags):
            break
        if text in spec.flags:
            i += 1
        elif text in spec.valued:
            i += 2
        elif _attached(text, spec.valued) or _numeric_or_optional(name, text):
            i += 1
        else:
            return [], None
    i += spec.positional
    if i > len(args):
        return [], None
    rest = list(args[i:])
    env: list[Word] = []
    while spec.assignments and rest and _NAME.match(rest[0].source):
        env.append(rest.pop(0))
    return env, rest


def _numeric_or_optional(name: str, text: str) -> bool:
    """`nice -5` (an adjustment) and xargs's `-i`/`-e`/`-l` (optionally attached values)."""
    return (name == "nice" and text[1:].isdigit()) or (
        name == "xargs" and text[:2] in ("-i", "-e", "-l")
    )


def _attached(text: str, valued: frozenset[str]) -> bool:
    """`-n10`, `-sKILL` or `--signal=KILL`: an option with its value in the same word."""
    for option in valued:
        if option.startswith("--") and text.startswith(option + "="):
            return True
        if not option.startswith("--") and text.startswith(option) and len(text) > 2:
            return True
    return False
