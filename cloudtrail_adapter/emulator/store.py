"""What the LimaCharlie emulator accepted: the ground truth every test compares against."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

Transport = Literal["usp", "webhook"]
#: Told what the emulator did, as an event name and its fields (`cloudtrail-adapter emulate`
#: logs them): never a secret, an installation key or a record's content beyond its name.
Observer = Callable[[str, Mapping[str, Any]], None]


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

    def __init__(self, observer: Observer | None = None) -> None:
        self._observer = observer
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
        if self._observer is not None:
            self._observer("events_accepted", _summary(transport, sensor, kept, self._count))
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


def _summary(transport: Transport, sensor: str, lines: list[bytes], total: int) -> dict[str, Any]:
    """What an observer learns of one accepted batch: how many records, and their event
    names (`eventName`, or what kind of line it was when it is not a CloudTrail record)."""
    names: Counter[str] = Counter()
    for line in lines:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            names["(not JSON)"] += 1
            continue
        name = record.get("eventName") if isinstance(record, dict) else None
        names[name if isinstance(name, str) else "(no eventName)"] += 1
    return {
        "transport": transport,
        "sensor": sensor,
        "records": len(lines),
        "total": total,
        "event_names": dict(names.most_common()),
    }
