"""What the LimaCharlie emulator accepted: the ground truth every test compares against."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import orjson

Transport = Literal["usp", "webhook"]


@dataclass(frozen=True, slots=True)
class AcceptedEvent:
    transport: Transport
    sensor: str  # USP: "<oid>/<hostname>"; webhook: "<oid>/<hook name>"
    raw: bytes  # one line exactly as received
    at: float = 0.0  # when accepted (monotonic clock), for latency benches

    def json(self) -> Any:
        return orjson.loads(self.raw)


class EventStore:
    """Records events once they are acknowledged (USP) or answered 2xx (webhook).

    Events the emulator received but never acknowledged are *not* recorded: a sender that
    forgets to re-send them loses them here just as it would in the cloud.
    """

    def __init__(self) -> None:
        self._events: list[AcceptedEvent] = []
        # Accepted but not yet made into AcceptedEvents: that waits until somebody looks, so
        # that a benchmark charges the daemon, not the stand-in for LimaCharlie's cloud.
        self._batches: list[tuple[Transport, str, list[bytes], float]] = []
        self._count = 0
        self._changed = asyncio.Condition()

    @property
    def events(self) -> list[AcceptedEvent]:
        for transport, sensor, lines, at in self._batches:
            self._events.extend(AcceptedEvent(transport, sensor, line, at) for line in lines)
        self._batches.clear()
        return self._events

    async def add(self, transport: Transport, sensor: str, lines: list[bytes]) -> None:
        kept = [line for line in lines if line]
        self._batches.append((transport, sensor, kept, time.monotonic()))
        self._count += len(kept)
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, count: int, timeout: float = 30.0) -> None:
        """Wait until at least `count` events were accepted; TimeoutError names both counts."""

        async def reached() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self._count >= count)

        try:
            await asyncio.wait_for(reached(), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"emulator accepted {self._count} events, expected {count}"
            ) from None

    def event_ids(self) -> Counter[str]:
        """How many times each CloudTrail `eventID` was accepted."""
        return Counter(str(e.json().get("eventID")) for e in self.events)

    def by_sensor(self) -> Counter[str]:
        return Counter(e.sensor for e in self.events)

    def clear(self) -> None:
        self._events.clear()
        self._batches.clear()
        self._count = 0
