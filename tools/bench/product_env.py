"""The environment the benchmarked bots run in: dispatch-matrix's own dependencies only.

The test environment (`.venv`) also holds Synapse, pytest and their dependencies, and some of
them change what the bot loads: structlog imports its Twisted integration whenever Twisted
is installed (2.7 MiB and ~50 ms of Twisted, zope.interface and friends in every bot), which
no user's `pip install dispatch-matrix` has. So the bots, the nio echo bot and the libraries'
floor run from `.venv-product`, made once from uv.lock (no extras) and made
again when the lock changes; Synapse, the owner clients and the stand-in API stay in
the test environment.

    python = product_python()     # builds .venv-product if needed; prints what it does
    use_product_python()          # the harness's bots then run from it (DISPATCH_MATRIX_PYTHON)
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / ".venv-product"
STAMP = FOLDER / "dispatch-matrix-pyproject.sha256"
# Read by tests/harness/bot.py: the interpreter whose environment runs `dispatch-matrix`.
VARIABLE = "DISPATCH_MATRIX_PYTHON"


def _wanted() -> str:
    return hashlib.sha256((ROOT / "uv.lock").read_bytes()).hexdigest()


def product_python() -> str:
    """The product environment's interpreter, built or rebuilt first when it is missing or
    older than uv.lock. Raises with pip's own message when the install fails."""
    python = FOLDER / "bin" / "python"
    if python.exists() and STAMP.exists() and STAMP.read_text().strip() == _wanted():
        return str(python)
    print(f"==> {FOLDER.name}: dispatch-matrix without extras, as a user installs it", flush=True)
    # The locked versions (uv.lock), as the test environment's, so the two differ only in
    # what is absent; tools/sync has put the pinned uv in .uv/.
    done = subprocess.run(
        [str(ROOT / ".uv" / "bin" / "uv"), "sync", "--frozen", "-q", "--no-dev"],
        cwd=ROOT,
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(FOLDER), "UV_PYTHON_DOWNLOADS": "never"},
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
