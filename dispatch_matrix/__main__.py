"""The `dispatch-matrix` command's entry (and `python -m dispatch_matrix`).

It imports nothing heavy itself: the command line (`cli.py`) is loaded inside `main`, so a
Ctrl-C while it loads (half a second on a quiet machine, seconds on a busy one) ends in one
line like any other interrupt, not a traceback."""

from __future__ import annotations

import sys


def main() -> int:
    """Load the command line and run it."""
    try:
        from dispatch_matrix.cli import main as command_line
    except KeyboardInterrupt:
        # Said as the command line says an interrupt: one line, the shell's code for it.
        print("dispatch-matrix: interrupted while starting", file=sys.stderr, flush=True)
        return 130
    return command_line()


if __name__ == "__main__":
    sys.exit(main())
