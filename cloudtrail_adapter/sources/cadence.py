"""When each stream is listed next: as often as its own deliveries need.

A pass runs every `poll_interval` and lists only the streams that are due. CloudTrail
names each file by its delivery time and, while an account and region are busy, delivers
about every five minutes; so a stream whose newest file is younger than `ACTIVE_WINDOW`
(two such periods) is listed every `poll_interval`, and so is one with work in hand
(objects offered by an earlier pass and not yet committed, or failed and waiting for their
retry), so that a retry or what follows it does not wait for a quiet stream's next turn.
Past that, its listings are spaced by how long it has been quiet beyond the window (each
gap about doubles the one before), up to `quiet_interval`. The first quiet gap since start
is drawn from all of it, and later ones are shortened by up to `JITTER` at random, so that
streams found quiet in one pass do not all come due in one later pass. The cadence is kept
in memory only: after a restart every stream is listed at once, and its newest file says
again how busy it is.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from cloudtrail_adapter.sources.trail_layout import Stream

__all__ = ["ACTIVE_WINDOW", "JITTER", "Schedule"]

ACTIVE_WINDOW: Final = 600.0
JITTER: Final = 0.1
HOUR: Final = 3600.0


@dataclass(frozen=True, slots=True)
class _Cadence:
    at: float  # when it was last listed
    newest: float | None  # the time in its newest file's name (epoch seconds), if any
    due: float
    interval: float
    active: bool


class Schedule:
    """Each stream's next listing, by its prefix. Times are epoch seconds of the source's
    clock; `rng` only jitters quiet gaps."""

    def __init__(
        self, poll_interval: float, quiet_interval: float, rng: random.Random | None = None
    ) -> None:
        self._poll = poll_interval
        self._quiet = max(quiet_interval, poll_interval)
        self._rng = rng or random.Random()
        self._streams: dict[str, _Cadence] = {}

    def due(self, streams: Iterable[Stream], now: float) -> list[Stream]:
        """The streams to list in a pass starting at `now`: those never listed, and those
        whose next listing has come."""
        found = []
        for stream in streams:
            cadence = self._streams.get(stream.prefix)
            if cadence is None or cadence.due <= now:
                found.append(stream)
        return found

    def listed(self, stream: Stream, now: float, newest: float | None, busy: bool) -> None:
        """`stream` was listed at `now`; `newest` is the latest time its listing found in a
        file name (None: none named with one); `busy`: it has objects in work since an
        earlier pass, or failed and waiting for their retry."""
        before = self._streams.get(stream.prefix)
        if before is not None and before.newest is not None:
            newest = before.newest if newest is None else max(newest, before.newest)
        interval, active = (self._poll, True) if busy else self._interval(now, newest)
        if before is None and not active:
            # The first gap of a quiet stream since start is drawn from all of it, so that
            # the streams a first pass found quiet come due spread over `quiet_interval`,
            # not in one later pass.
            interval = self._poll + self._rng.random() * (interval - self._poll)
        self._streams[stream.prefix] = _Cadence(now, newest, now + interval, interval, active)

    def listed_at(self, stream: Stream) -> float | None:
        """When `stream` was last listed (None: not since start)."""
        cadence = self._streams.get(stream.prefix)
        return None if cadence is None else cadence.at

    def _interval(self, now: float, newest: float | None) -> tuple[float, bool]:
        quiet_for = math.inf if newest is None else now - newest
        if quiet_for < ACTIVE_WINDOW:
            return self._poll, True
        wanted = min(self._quiet, quiet_for - ACTIVE_WINDOW)
        if wanted <= self._poll:
            return self._poll, False
        return max(self._poll, wanted * (1 - JITTER * self._rng.random())), False

    def keep(self, streams: Iterable[Stream]) -> None:
        """Forgets streams no longer listed (discovery lost them, or they left the shard)."""
        wanted = {s.prefix for s in streams}
        for prefix in list(self._streams):
            if prefix not in wanted:
                del self._streams[prefix]

    def is_active(self, stream: Stream) -> bool:
        cadence = self._streams.get(stream.prefix)
        return cadence is not None and cadence.active

    @property
    def streams(self) -> int:
        return len(self._streams)

    @property
    def active(self) -> int:
        """Streams listed every `poll_interval` because they delivered lately."""
        return sum(c.active for c in self._streams.values())

    def calls_per_hour(self) -> float:
        """Listings an hour at each stream's present cadence (one call each, while a
        stream's listing fits one page of 1,000 keys)."""
        return sum(HOUR / c.interval for c in self._streams.values())
