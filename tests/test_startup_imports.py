"""The daemon's start-up path stays light: the Matrix half imports none of the heavy
libraries (they load in a thread while the first sync runs), and a missing one is one
clear error, not a traceback."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("anthropic", "mcp", "mcp_types", "tree_sitter", "tree_sitter_bash", "cryptography")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_matrix_half_imports_none_of_the_heavy_libraries() -> None:
    done = run_python(
        "import sys; import dispatch_matrix.cli, dispatch_matrix.app.daemon; "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_agent_half_brings_the_sdk_but_no_mcp_without_servers() -> None:
    done = run_python(
        "import sys; import dispatch_matrix.app.agent_parts; "
        "print('anthropic' in sys.modules, 'mcp' in sys.modules, 'tree_sitter' in sys.modules)"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False", "False"]


def test_a_library_the_agent_needs_that_will_not_import_is_one_clear_error() -> None:
    missing = "anthropic"
    done = run_python(
        f"import sys; sys.modules[{missing!r}] = None\n"
        "from dispatch_matrix.app.late_agent import load_agent_module\n"
        "from dispatch_matrix.core.errors import DispatchError\n"
        "try:\n"
        "    load_agent_module()\n"
        "except DispatchError as err:\n"
        "    print(err.one_line())\n"
    )
    assert done.returncode == 0, done.stderr
    assert "the agent could not be loaded" in done.stdout
    assert missing in done.stdout


def test_a_missing_shell_grammar_is_news_when_the_agent_is_built() -> None:
    done = run_python(
        "import importlib.util\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n.endswith('_bash') else real(n, *a)\n"
        "from dispatch_matrix.app import agent_parts\n"
        "try:\n"
        "    agent_parts.build(None, None, None, None, None, lambda: None)  # type: ignore\n"
        "except ImportError as err:\n"
        "    print(err.name)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "tree_sitter_bash"
