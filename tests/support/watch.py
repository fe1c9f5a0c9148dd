"""Waiting on what happened: acknowledged batches, and the daemon's structlog events in-process
(a retry is visible only in the logs, and logs are part of the interface)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog

from cloudtrail_adapter.config import SourceConfig
from cloudtrail_adapter.model import Batch


class AckRecorder:
    """A sink's on_ack callback: keeps acknowledged batches in order; tests wait on a count."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self._changed = asyncio.Event()

    def __call__(self, batch: Batch) -> None:
        self.batches.append(batch)
        self._changed.set()

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                while len(self.batches) < count:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"{len(self.batches)} batches acked, expected {count}") from None


class LogWatch:
    """A structlog processor that keeps every event and lets a test wait for one by name:
    a retry is visible only in the logs, and logs are part of the sink's interface."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    def __call__(self, _logger: Any, _method: str, event: MutableMapping[str, Any]) -> str:
        self.entries.append(dict(event))
        self._changed.set()
        raise structlog.DropEvent

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["event"] == name]

    async def wait_for(self, name: str, count: int = 1, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.named(name)) < count:
                self._changed.clear()
                await self._changed.wait()


@contextmanager
def watch_logs() -> Iterator[LogWatch]:
    watch = LogWatch()
    previous = structlog.get_config()["processors"]
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, watch])
    try:
        yield watch
    finally:
        structlog.configure(processors=previous)


async def passes_done(logs: LogWatch, configs: list[SourceConfig], more: int) -> None:
    """Until every source finished `more` listing passes after now."""
    before = Counter(e["source"] for e in logs.named("source_pass_done"))
    counts = {c.name: before[c.name] for c in configs}
    async with asyncio.timeout(30):
        while True:
            done = Counter(e["source"] for e in logs.named("source_pass_done"))
            if all(done[name] >= count + more for name, count in counts.items()):
                return
            await logs.wait_for("source_pass_done", len(logs.named("source_pass_done")) + 1, 30)
