"""Doubling waits between attempts, capped: the one retry rhythm of every loop that waits
for something to come back (the homeserver, the API)."""

from __future__ import annotations


class Backoff:
    """The wait before each next attempt: `first_s`, then doubling up to `max_s`, until a
    success resets it."""

    def __init__(self, first_s: float = 1.0, max_s: float = 60.0) -> None:
        self._first_s = first_s
        self._max_s = max_s
        self._last = 0.0

    def next(self) -> float:
        """The wait before the next attempt (each call doubles it, up to the cap)."""
        self._last = min(max(self._last * 2, self._first_s), self._max_s)
        return self._last

    @property
    def failing(self) -> bool:
        """Whether an attempt failed since the last reset."""
        return self._last > 0

    def reset(self) -> None:
        """An attempt succeeded: the next failure waits `first_s` again."""
        self._last = 0.0
