"""dispatch-matrix: a persistent Claude agent on your computer, commanded over Matrix E2EE.

This module is the console script's entry and imports nothing heavy itself: the command
line (`cli.py`) is loaded inside `main`, so a Ctrl-C while it loads (half a second on a
quiet machine, seconds on a busy one) ends in one line like any other interrupt, not a
traceback."""

__version__ = "0.1.0"


def main() -> int:
    """The `dispatch-matrix` command: load the command line and run it."""
    import sys

    try:
        from dispatch_matrix.cli import main as command_line
    except KeyboardInterrupt:
        # Said as the command line says an interrupt: one line, the shell's code for it.
        print("dispatch-matrix: interrupted while starting", file=sys.stderr, flush=True)
        return 130
    return command_line()
