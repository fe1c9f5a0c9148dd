"""Waiting on what happened: acknowledged batches, the daemon's log events, and outside state
nothing announces.

Logs are part of the interface (a retry is visible only there), and a test reads them one
way whether the daemon runs in this process or as a child: a `LogWatch` of its structlog
events, fed by a structlog processor (`watch_logs()`) or by a child's JSON lines
(`DaemonProcess.logs`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog

from cloudtrail_adapter.config import SourceConfig
from cloudtrail_adapter.model import Batch

Event = dict[str, Any]
#: The default bound of a wait: long enough for a loaded machine, short of pytest's own.
TIMEOUT = 60.0
#: How often `eventually` asks again.
POLL = 0.05


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
    """Every log event, in order, as the dict structlog made of it (`event` its name): a
    test reads them by name and waits, bounded, for the one it needs.

    A child's log ends when it exits (`end()`): a wait then fails at once, with `describe()`
    (the child's last lines) in the message, instead of running out its timeout.
    """

    def __init__(self, describe: Callable[[], str] = lambda: "") -> None:
        self.entries: list[Event] = []
        self.ended = False
        self._describe = describe
        self._changed = asyncio.Event()

    def __call__(self, _logger: Any, _method: str, event: MutableMapping[str, Any]) -> str:
        """As the last structlog processor: keeps the event, and writes nothing."""
        self.add(dict(event))
        raise structlog.DropEvent

    def add(self, entry: Event) -> None:
        self.entries.append(entry)
        self._changed.set()

    def end(self) -> None:
        self.ended = True
        self._changed.set()

    def named(self, name: str) -> list[Event]:
        return [e for e in self.entries if e.get("event") == name]

    def mark(self) -> int:
        """A point in the log, for `wait_for(since=...)`: only what is logged after it."""
        return len(self.entries)

    async def wait_for(
        self,
        name: str,
        count: int = 1,
        *,
        when: Callable[[Event], bool] | None = None,
        since: int = 0,
        timeout: float = TIMEOUT,
    ) -> Event:
        """Until `name` was logged `count` times (after `since`, and where `when` holds):
        that last event. TimeoutError if it does not come, or if the log ended first."""
        seen, scanned = 0, since
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for entry in self.entries[scanned:]:
                        if entry.get("event") == name and (when is None or when(entry)):
                            seen += 1
                            if seen >= count:
                                return entry
                    scanned = len(self.entries)
                    if self.ended:
                        break
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            why = f"{seen} {name} events in {timeout}s, expected {count}"
            raise TimeoutError(f"{why}\n{self._describe()}") from None
        why = f"the log ended after {seen} {name} events, expected {count}"
        raise TimeoutError(f"{why}\n{self._describe()}")


@contextmanager
def watch_logs() -> Iterator[LogWatch]:
    """The events logged in this process while inside, each with its level and context
    (the source, where the daemon bound it), as a child's JSON lines carry them."""
    watch = LogWatch()
    previous = structlog.get_config()["processors"]
    chain: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        watch,
    ]
    structlog.configure(processors=chain)
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
            passes = len(logs.named("source_pass_done"))
            await logs.wait_for("source_pass_done", passes + 1, timeout=30)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    """Until `check()` holds, asked every POLL seconds: for outside state that announces
    nothing (moto's queues and sessions, an HTTP endpoint's answer), bounded."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():  # noqa: ASYNC110 (nothing to wait on but the answer)
                await asyncio.sleep(POLL)
    except TimeoutError:
        raise TimeoutError(f"{check.__name__}() did not hold in {timeout}s") from None
