"""What the LimaCharlie emulator accepted: the ground truth every test compares against."""

from __future__ import annotations

import asyncio
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

    def json(self) -> Any:
        return orjson.loads(self.raw)


class EventStore:
    """Records events once they are acknowledged (USP) or answered 2xx (webhook).

    Events the emulator received but never acknowledged are *not* recorded: a sender that
    forgets to re-send them loses them here just as it would in the cloud.
    """

    def __init__(self) -> None:
        self.events: list[AcceptedEvent] = []
        self._changed = asyncio.Condition()

    async def add(self, transport: Transport, sensor: str, lines: list[bytes]) -> None:
        self.events.extend(AcceptedEvent(transport, sensor, line) for line in lines if line)
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, count: int, timeout: float = 30.0) -> None:
        """Wait until at least `count` events were accepted; TimeoutError names both counts."""

        async def reached() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.events) >= count)

        try:
            await asyncio.wait_for(reached(), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"emulator accepted {len(self.events)} events, expected {count}"
            ) from None

    def event_ids(self) -> Counter[str]:
        """How many times each CloudTrail `eventID` was accepted."""
        return Counter(str(e.json().get("eventID")) for e in self.events)

    def by_sensor(self) -> Counter[str]:
        return Counter(e.sensor for e in self.events)

    def clear(self) -> None:
        self.events.clear()
