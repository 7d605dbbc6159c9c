"""A part the daemon builds off its start-up path, awaited where it is first needed."""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class Pending(Generic[T]):
    """Set once; `get` waits for it.

    When building the part fails, the daemon's task group ends every waiter with the error,
    so a waiter never runs on without it.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._ready = asyncio.Event()
        self._value: list[T] = []

    @classmethod
    def of(cls, value: T, what: str = "part") -> Pending[T]:
        """One that is ready already (tests, and parts built on the spot)."""
        pending: Pending[T] = cls(what)
        pending.set(value)
        return pending

    def set(self, value: T) -> None:
        """The part is built: wake every waiter."""
        self._value[:] = [value]
        self._ready.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def get(self) -> T:
        """The part, once it is built."""
        await self._ready.wait()
        return self._value[0]
