"""Small asyncio helpers the stages share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Stopped(Exception):
    """Raised by `unless_stopped` when the stop event won the race."""


async def unless_stopped(stop: asyncio.Event, work: Awaitable[T]) -> T:
    """Awaits `work` unless `stop` is set first, in which case `work` is cancelled and
    Stopped raised. Lets a source stop taking new work at any await, cleanly."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise Stopped
    return task.result()


class ByteBudget:
    """Bytes a stage may hold in memory at once, shared by its tasks.

    `reserve` waits until the amount fits. An amount larger than the whole budget waits for
    an empty budget instead of forever, so one huge item is slowed, never refused.
    `resize` corrects an estimate once the real size is known, and may overshoot: the
    next reservations then wait until enough is released.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._freed = asyncio.Event()

    def fits(self, amount: int) -> bool:
        return not self.used or self.used + amount <= self.limit

    async def reserve(self, amount: int) -> int:
        while not self.fits(amount):
            self._freed.clear()
            await self._freed.wait()
        self.used += amount
        return amount

    def resize(self, reserved: int, actual: int) -> int:
        self.used += actual - reserved
        if actual < reserved:
            self._freed.set()
        return actual

    def release(self, amount: int) -> None:
        self.used -= amount
        self._freed.set()
