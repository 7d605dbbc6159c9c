"""What start-up imports: the commands that run no daemon import none of the heavy
libraries, the daemon brings the SDK but no MCP SDK without servers, and a library that is
missing is one clear error, not a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HEAVY = ("anthropic", "mcp", "mcp_types", "tree_sitter", "tree_sitter_bash", "cryptography")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_command_line_imports_none_of_the_heavy_libraries() -> None:
    done = run_python(
        "import sys; import dispatch_matrix.cli; "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_daemon_brings_the_sdk_but_no_mcp_nor_shell_grammar() -> None:
    done = run_python(
        "import sys; import dispatch_matrix.app.daemon; "
        "print('anthropic' in sys.modules, 'mcp' in sys.modules, 'tree_sitter' in sys.modules)"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False", "False"]


def test_a_library_the_daemon_needs_that_will_not_import_is_one_clear_error() -> None:
    missing = "anthropic"
    done = run_python(
        f"import sys; sys.modules[{missing!r}] = None\n"
        "from dispatch_matrix.cli import main\n"
        "sys.exit(main(['run', '--config', '/nonexistent/config.toml']))\n"
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "the daemon could not be loaded" in done.stderr
    assert missing in done.stderr
    assert "reinstall dispatch-matrix" in done.stderr


def test_a_missing_shell_grammar_is_news_when_the_agent_is_built() -> None:
    done = run_python(
        "import importlib.util\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n.endswith('_bash') else real(n, *a)\n"
        "from dispatch_matrix.app.agent_kit import build_agent\n"
        "try:\n"
        "    build_agent(None, None, None, None, None, None, lambda: None)  # type: ignore\n"
        "except ImportError as err:\n"
        "    print(err.name)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "tree_sitter_bash"


# A real SIGINT, sent by the process to itself the moment the command line starts loading:
# what a Ctrl-C in the first second of any command does.
_CTRL_C_WHILE_LOADING = """
import importlib.abc, os, signal, sys
# As from a terminal: a suite started in the background (`cmd &`) hands its children
# SIGINT ignored, and Python then never raises KeyboardInterrupt.
signal.signal(signal.SIGINT, signal.default_int_handler)
class CtrlC(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "dispatch_matrix.cli":
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, CtrlC())
import tomllib
script = tomllib.load(open("pyproject.toml", "rb"))["project"]["scripts"]["dispatch-matrix"]
module, _, name = script.partition(":")
entry = getattr(__import__(module, fromlist=[name]), name)
sys.exit(entry())
"""


def test_ctrl_c_while_the_command_line_loads_is_one_line_not_a_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CTRL_C_WHILE_LOADING],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == "dispatch-matrix: interrupted while starting"
    # Nothing of the command line ran: the interrupt came before it loaded.
    assert done.stdout == ""


def test_the_console_script_loads_the_command_line_and_runs_it() -> None:
    done = run_python(
        "import sys\nsys.argv = ['dispatch-matrix', '--version']\n"
        "from dispatch_matrix.__main__ import main\nsys.exit(main())\n"
    )
    assert done.returncode == 0, done.stderr
    assert "0.1.0" in done.stdout
