"""Side doors in the programs other programs take as arguments: sed scripts and awk
programs. Pure; used by `sidedoors.py`, whose docstring says what counts as a door.

A sed script is judged by a small parser that accepts only commands that neither write,
read nor run (`p`, `d`, `s///` with flags `gpiImM` and digits, `y`, addresses, branches);
anything it does not recognise is a door. An awk program cannot be judged that exactly, so
any program mentioning `system`, `|`, `>`, `getline` or `@` (gawk's `@load`) is a door.
"""

from __future__ import annotations

from .shellmodel import SideDoor, Word
from .shellwords import long_option

HIDDEN = "reads instructions from a file the judge does not see"
UNKNOWN = "is an option the judge does not know"

_SED_SAFE_LONG = (
    "--quiet",
    "--silent",
    "--regexp-extended",
    "--posix",
    "--debug",
    "--sandbox",
    "--separate",
    "--unbuffered",
    "--null-data",
    "--zero-terminated",
    "--line-length",
    "--follow-symlinks",
)
_AWK_RISKY = ("system", "|", ">", "getline", "@")

_AWK_SAFE_SHORT = frozenset({"-b", "-c", "-r", "-s", "-S", "-N", "-P", "-t", "--"})

_AWK_SAFE_LONG = ("--characters-as-bytes", "--traditional", "--posix", "--re-interval")


def sed(args: list[str], words: list[Word]) -> list[SideDoor]:
    """The doors of a sed command line: in-place edits, script files, unsafe scripts."""
    doors: list[SideDoor] = []
    scripts: list[int] = []
    explicit = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            break
        if arg.startswith("--"):
            if long_option(arg, ("--in-place",)):
                doors.append(SideDoor("-i", arg, "edits files in place"))
            elif long_option(arg, ("--file",)):
                doors.append(SideDoor("-f", arg, HIDDEN))
            elif long_option(arg, ("--expression",)):
                explicit = True
                if "=" not in arg:
                    i += 1
                scripts.append(i)
            elif not long_option(arg, _SED_SAFE_LONG):
                doors.append(SideDoor(arg.split("=", 1)[0], arg, UNKNOWN))
        elif arg.startswith("-") and len(arg) > 1:
            for j, c in enumerate(arg[1:], 1):
                if c == "i":
                    doors.append(SideDoor("-i", arg, "edits files in place"))
                elif c == "f":
                    doors.append(SideDoor("-f", arg, HIDDEN))
                elif c == "e":
                    explicit = True
                    if j == len(arg) - 1:
                        i += 1
                        scripts.append(i)
                    else:
                        doors.extend(_sed_script(arg[j + 1 :], arg))
                elif c == "l":
                    i += j == len(arg) - 1
                elif c not in "nErsuz":
                    doors.append(SideDoor("-" + c, arg, UNKNOWN))
                else:
                    continue
                break
        elif not explicit:
            explicit = True
            scripts.append(i)
        i += 1
    for index in scripts:
        if index >= len(args) or words[index].literal is None:
            doors.append(SideDoor("script", "", "the sed script is not a plain literal"))
        else:
            doors.extend(_sed_script(args[index], args[index]))
    return doors


def _sed_script(script: str, arg: str) -> list[SideDoor]:
    if sed_script_is_safe(script):
        return []
    reason = "the sed script may write files or run commands (w, e, r, …)"
    return [SideDoor("script", arg, reason)]


def sed_script_is_safe(script: str) -> bool:
    """Whether a sed script is made only of commands that neither write, read nor run."""
    i, n = 0, len(script)
    while i < n:
        if script[i] in " \t\n;":
            i += 1
            continue
        i = _sed_address(script, i)
        if 0 <= i < n and script[i] == ",":
            i = _sed_address(script, i + 1)
        while 0 <= i < n and script[i] in " \t!":
            i += 1
        if i < 0 or i >= n:
            return False
        c = script[i]
        if c in "pdDnNgGhHxlPz={}qQF=":
            i += 1
            while i < n and script[i].isdigit():
                i += 1
        elif c in "btT:":
            while i < n and script[i] not in ";\n":
                i += 1
        elif c in "sy":
            if i + 1 >= n or script[i + 1] in "\n\\":
                return False
            delim = script[i + 1]
            i = _sed_delimited(script, i + 2, delim)
            i = _sed_delimited(script, i, delim) if i >= 0 else -1
            if i < 0:
                return False
            while c == "s" and i < n and (script[i] in "gpiImM" or script[i].isdigit()):
                i += 1
            if i < n and script[i] not in " \t\n;}":
                return False
        else:
            return False
    return True


def _sed_address(script: str, i: int) -> int:
    n = len(script)
    if i < n and script[i] in "+~":
        i += 1
    if i < n and script[i].isdigit():
        while i < n and (script[i].isdigit() or script[i] == "~"):
            i += 1
    elif i < n and script[i] == "$":
        i += 1
    elif i < n and script[i] in "/\\":
        if script[i] == "\\":
            if i + 1 >= n:
                return -1
            i += 1
        i = _sed_delimited(script, i + 1, script[i])
        while 0 <= i < n and script[i] in "IM":
            i += 1
    return i


def _sed_delimited(script: str, i: int, delim: str) -> int:
    """The index after the next unescaped `delim` from `i`; -1 when there is none."""
    while i < len(script):
        if script[i] == "\\":
            i += 2
            continue
        if script[i] == delim:
            return i + 1
        i += 1
    return -1


def awk(args: list[str], words: list[Word]) -> list[SideDoor]:
    """The doors of an awk command line: program files, unknown options, unsafe programs."""
    doors: list[SideDoor] = []
    programs: list[int] = []
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if arg in ("-F", "-v"):
            i += 1
        elif arg in ("-e", "--source"):
            i += 1
            programs.append(i)
        elif (
            arg.startswith(("-F", "-v"))
            or arg in _AWK_SAFE_SHORT
            or long_option(arg, _AWK_SAFE_LONG)
        ):
            pass
        elif arg.startswith(("-f", "--file", "-i", "--include", "-l", "--load", "-E", "--exec")):
            doors.append(SideDoor(arg[:2] if arg[1] != "-" else arg, arg, HIDDEN))
        else:
            doors.append(SideDoor(arg.split("=", 1)[0], arg, UNKNOWN + " (it may write a file)"))
        i += 1
    if not programs and not doors and i < len(args):
        programs.append(i)
    for index in programs:
        text = args[index] if index < len(args) else ""
        if index >= len(args) or words[index].literal is None or any(k in text for k in _AWK_RISKY):
            reason = "the awk program may run commands or write files (system, |, >, getline)"
            doors.append(SideDoor("program", text, reason))
    return doors
