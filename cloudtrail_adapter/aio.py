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
