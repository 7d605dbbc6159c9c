"""The environment the benchmarked bots run in: dispatch-matrix's own dependencies only.

The test environment (`.venv`) also holds Synapse, pytest and their dependencies, and some of
them change what the bot loads: structlog imports its Twisted integration whenever Twisted
is installed (2.7 MiB and ~50 ms of Twisted, zope.interface and friends in every bot), which
no user's `pip install dispatch-matrix` has. So the bots, the nio echo bot and the libraries'
floor run from `.venv-product`, made once with `pip install -e .` (no extras) and made
again when pyproject.toml changes; Synapse, the owner clients and the stand-in API stay in
the test environment.

    python = product_python()     # builds .venv-product if needed; prints what it does
    use_product_python()          # the harness's bots then run from it (DISPATCH_MATRIX_PYTHON)
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / ".venv-product"
STAMP = FOLDER / "dispatch-matrix-pyproject.sha256"
# Read by tests/harness/bot.py: the interpreter whose environment runs `dispatch-matrix`.
VARIABLE = "DISPATCH_MATRIX_PYTHON"


def _wanted() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def product_python() -> str:
    """The product environment's interpreter, built or rebuilt first when it is missing or
    older than pyproject.toml. Raises with pip's own message when the install fails."""
    python = FOLDER / "bin" / "python"
    if python.exists() and STAMP.exists() and STAMP.read_text().strip() == _wanted():
        return str(python)
    print(f"==> {FOLDER.name}: dispatch-matrix without extras, as a user installs it", flush=True)
    # The same versions as this environment's, so the two differ only in what is absent.
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    venv.EnvBuilder(with_pip=True, clear=True).create(FOLDER)
    constraints = FOLDER / "constraints.txt"
    constraints.write_text(
        "".join(line + "\n" for line in frozen.splitlines() if "==" in line and "@" not in line)
    )
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        + ["-c", str(constraints), "-e", str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"installing into {FOLDER} failed:\n{done.stderr[-2000:]}")
    STAMP.write_text(_wanted() + "\n")
    return str(python)


def use_product_python() -> str:
    """Point the harness's bots at the product environment; its interpreter."""
    python = product_python()
    os.environ[VARIABLE] = python
    return python


def bot_python() -> str:
    """The interpreter bot-side processes run with: the product one once chosen, else ours."""
    return os.environ.get(VARIABLE) or sys.executable
