"""Small asyncio helpers the stages share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

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


async def gather_limited(calls: Iterable[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Every call's result in order, at most `limit` running at once; the first error
    cancels the rest and is raised as it is."""
    room = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with room:
            return await call()

    tasks = [asyncio.ensure_future(one(call)) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        await _cancelled(tasks)


async def merge_limited(
    sources: Iterable[Callable[[], AsyncIterator[T]]], limit: int
) -> AsyncIterator[T]:
    """The items of every source as they come, at most `limit` sources read at once and
    at most `limit` items waiting for the consumer (backpressure). The first error cancels
    the rest and is raised as it is; so does closing the iterator early."""
    ready: asyncio.Queue[T] = asyncio.Queue(limit)
    todo = iter(sources)

    async def drain() -> None:
        for source in todo:
            async for item in source():
                await ready.put(item)

    async def run() -> None:
        readers = [asyncio.create_task(drain()) for _ in range(limit)]
        try:
            for reader in asyncio.as_completed(readers):
                await reader
        finally:
            await _cancelled(readers)

    runner = asyncio.create_task(run())
    getter: asyncio.Future[T] | None = None
    try:
        while True:
            getter = asyncio.ensure_future(ready.get())
            await asyncio.wait({getter, runner}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():  # the readers are done: take what is left without waiting
                getter.cancel()
                await asyncio.gather(getter, return_exceptions=True)
            if not getter.cancelled():
                yield getter.result()
                continue
            runner.result()  # raise a reader's error, if any
            while not ready.empty():
                yield ready.get_nowait()
            return
    finally:
        await _cancelled([runner] + ([getter] if getter else []))


async def _cancelled(tasks: Sequence[asyncio.Future[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


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
