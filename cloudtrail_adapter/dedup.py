"""eventID de-duplication: a record LimaCharlie already acknowledged is not shipped again.

CloudTrail sometimes writes an event twice, and at-least-once delivery re-sends what was in
flight when the daemon died. A record's identity is its `eventID` with its
`recipientAccountId`, hashed to 96 bits in the worker processes (event_keys.py) next to the
minute of its `eventTime`; the event loop (this module) only compares those keys.

A key is *pending* from the moment one record claims it until the batch carrying it is
acknowledged; then it is *delivered*: written to the state database, in the same step and
before any item is credited, and remembered for `window` of event time. A record whose key
is delivered is dropped and its item credited at once. One whose key is pending is dropped
and its item waits for the pending batch's acknowledgement, so an item is never committed
on the strength of a record that might still not arrive; if that batch is given up before
it was sent, the waiting items fail and are read again. After a restart the delivered keys
are loaded back, so what was acknowledged just before a crash is not shipped again.

Memory is bounded: about 100 bytes per delivered key held, at most `max_keys` keys; past
that the oldest minutes are forgotten early (and a warning says the window shrank).
A record without an eventID or an eventTime is always shipped.
"""

from __future__ import annotations

import collections
import heapq
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

import structlog

from cloudtrail_adapter.decoding.event_keys import ENTRY, KEY_BYTES
from cloudtrail_adapter.model import DedupStats

if TYPE_CHECKING:
    from cloudtrail_adapter.acks import ItemProgress
    from cloudtrail_adapter.config import DedupOptions
    from cloudtrail_adapter.decoding.values import Fragment
    from cloudtrail_adapter.state import DeliveredKeys

__all__ = ["BatchFlights", "Deduplicator", "Flight"]

log = structlog.get_logger("cloudtrail_adapter.dedup")

_MINUTE_SHIFT: Final = 8 * KEY_BYTES


class Flight:
    """The keys one fragment claimed, from screening until their batch is acknowledged, and
    the items waiting on them (records they dropped as duplicates of these)."""

    __slots__ = ("blob", "keys", "waiters")

    def __init__(self, keys: list[int], blob: bytes) -> None:
        self.keys = keys
        self.blob = blob  # the keys as stored: `ENTRY` bytes each
        self.waiters: dict[ItemProgress, int] = {}

    @property
    def empty(self) -> bool:
        return not self.keys


class BatchFlights:
    """An `AckToken` put first in a batch's parts: on acknowledgement its keys are stored
    before any item of the batch is credited."""

    __slots__ = ("_dedup", "_flights")

    def __init__(self, dedup: Deduplicator, flights: Sequence[Flight]) -> None:
        self._dedup = dedup
        self._flights = flights

    def acknowledged(self, records: int) -> None:
        self._dedup.delivered(self._flights)


class Deduplicator:
    """One source's keys: pending (in flight) and delivered (acknowledged, within the window).

    A key is the 128-bit integer of a record's entry: the event minute is its top 32 bits,
    so the newest minute of many keys is their maximum, and every loop over records is a
    C loop (set and dict operations) unless a fragment holds duplicates. Delivered keys are
    held in groups by the newest minute of each acknowledged fragment, and a group is
    forgotten when that minute leaves the window.
    """

    def __init__(self, source: str, store: DeliveredKeys, options: DedupOptions):
        self.source = source
        self.stats = DedupStats()
        self._store = store
        self._window = max(1, int(options.window // 60))  # minutes
        self._max_keys = options.max_keys
        #: Key -> the flight that claimed it, until acknowledged or abandoned.
        self.pending: dict[int, Flight] = {}
        self._delivered: set[int] = set()
        self._groups: dict[int, list[int]] = {}  # newest event minute -> keys
        self._heap: list[int] = []  # the minutes of `_groups`, oldest first
        self._newest = 0
        self._pruned_before = 0
        self._warned = False

    @property
    def _cutoff(self) -> int:
        return self._newest - self._window

    def load(self) -> int:
        """Reads back the keys delivered within the window, newest first, up to `max_keys`."""
        newest, blobs = self._store.read(self._window)
        self._newest = newest
        for blob in blobs:
            if self.stats.keys_held >= self._max_keys:
                break
            keys = [k for k in _keys(blob) if k not in self._delivered]
            self._remember(keys[: self._max_keys - self.stats.keys_held])
        self.stats.loaded = self.stats.keys_held
        return self.stats.loaded

    def screen(self, progress: ItemProgress, part: Fragment) -> tuple[Flight, list[int]]:
        """Claims the fragment's new keys; returns them, and the indexes of its duplicates
        (already credited to `progress`, or left for it to wait on)."""
        keys = _keys(part.keys)
        distinct = set(keys)
        distinct.discard(0)
        # dict_keys.isdisjoint walks the smaller side; set.isdisjoint(dict) would walk
        # every pending key, at each screening
        if (
            len(distinct) == len(keys)
            and self.pending.keys().isdisjoint(distinct)
            and distinct.isdisjoint(self._delivered)
        ):
            flight = Flight(keys, part.keys)  # the usual case: all new
            self.pending.update(dict.fromkeys(keys, flight))
            return flight, []
        return self._screen_each(progress, keys)

    def _screen_each(self, progress: ItemProgress, keys: list[int]) -> tuple[Flight, list[int]]:
        flight = Flight([], b"")
        drop: list[int] = []
        credited = 0
        for index, key in enumerate(keys):
            if not key:
                continue  # no identity: shipped, not remembered
            owner = self.pending.get(key)
            if owner is not None:
                owner.waiters[progress] = owner.waiters.get(progress, 0) + 1
            elif key in self._delivered:
                credited += 1
            else:
                self.pending[key] = flight
                flight.keys.append(key)
                continue
            drop.append(index)
        flight.blob = b"".join(k.to_bytes(ENTRY, "little") for k in flight.keys)
        self.stats.duplicates += len(drop)
        if credited:
            progress.acknowledged(credited)
        return flight, drop

    def delivered(self, flights: Sequence[Flight]) -> None:
        """Their batch was acknowledged: store the keys, then credit whoever waited on them."""
        claimed = [f for f in flights if f.keys]
        if claimed:
            newest = max(max(f.keys) for f in claimed) >> _MINUTE_SHIFT
            self._store.save(newest, b"".join(f.blob for f in claimed))
        for flight in claimed:
            collections.deque(map(self.pending.__delitem__, flight.keys), maxlen=0)
            self._remember(flight.keys)
        self._forget_old()
        for flight in flights:
            for progress, count in flight.waiters.items():
                progress.acknowledged(count)

    def abandon(self, flights: Iterable[Flight]) -> list[ItemProgress]:
        """The fragments will not be sent: their keys are free again, and the items that
        dropped records on the strength of them must be read again (returned)."""
        waiting: list[ItemProgress] = []
        for flight in flights:
            for key in flight.keys:
                if self.pending.get(key) is flight:
                    del self.pending[key]
            waiting += flight.waiters
            flight.waiters = {}
        return waiting

    def _remember(self, keys: list[int]) -> None:
        """Delivered keys not yet held (none is: a held key is never claimed again). None
        is 0: a record without identity claims no key, so none is stored or loaded."""
        if not keys:
            return
        minute = max(keys) >> _MINUTE_SHIFT
        self._newest = max(self._newest, minute)
        if minute < self._cutoff:
            return  # older than the window: not worth memory
        group = self._groups.get(minute)
        if group is None:
            group = self._groups[minute] = []
            heapq.heappush(self._heap, minute)
        group += keys
        self._delivered.update(keys)
        self.stats.keys_held += len(keys)

    def _forget_old(self) -> None:
        while self._heap and self._heap[0] < self._cutoff:
            self._forget_group()
        if self._cutoff > self._pruned_before:
            self._store.prune(self._cutoff)
            self._pruned_before = self._cutoff
        if self.stats.keys_held <= self._max_keys:
            return
        if not self._warned:
            self._warned = True
            log.warning(
                "dedup_window_shortened", max_keys=self._max_keys, window_minutes=self._window
            )
        while self.stats.keys_held > self._max_keys and self._heap:
            self.stats.forgotten_early += self._forget_group()

    def _forget_group(self) -> int:
        keys = self._groups.pop(heapq.heappop(self._heap))
        self._delivered.difference_update(keys)
        self.stats.keys_held -= len(keys)
        return len(keys)


def _keys(blob: bytes) -> list[int]:
    """The entries of a keys blob as integers (0 for a record without identity)."""
    from_bytes = int.from_bytes
    return [from_bytes(blob[i : i + ENTRY], "little") for i in range(0, len(blob), ENTRY)]
