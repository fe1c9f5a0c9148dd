"""eventID de-duplication: a record LimaCharlie already acknowledged is not shipped again.

CloudTrail sometimes writes an event twice, and at-least-once delivery re-sends what was in
flight when the daemon died. A record's identity is its `eventID` with its
`recipientAccountId`, hashed to 96 bits in the worker processes (`record_keys`) next to the
minute of its `eventTime`; the event loop only compares those keys.

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

import functools
import hashlib
import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import msgspec
import structlog

if TYPE_CHECKING:
    from cloudtrail_adapter.acks import ItemProgress
    from cloudtrail_adapter.bundles import Fragment, Line
    from cloudtrail_adapter.config import DedupOptions
    from cloudtrail_adapter.state import StateStore

__all__ = [
    "ENTRY",
    "KEY_BYTES",
    "BatchFlights",
    "Deduplicator",
    "Flight",
    "event_key",
    "record_keys",
]

log = structlog.get_logger("cloudtrail_adapter.dedup")

#: Bytes per record in `Fragment.keys`: a 96-bit key, then the event minute (uint32 LE).
ENTRY: Final = 16
KEY_BYTES: Final = 12
_NO_KEY: Final = bytes(ENTRY)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class _Identity(msgspec.Struct):
    eventID: Any = None
    recipientAccountId: Any = None
    eventTime: Any = None


_decode_identity: Final = msgspec.json.Decoder(_Identity).decode


def event_key(event_id: str, account: str) -> bytes:
    """The 96-bit key of an event (2^-48 collision odds for a million keys held)."""
    digest = hashlib.blake2b(f"{event_id}\0{account}".encode(), digest_size=KEY_BYTES).digest()
    return digest if any(digest) else b"\1" + digest[1:]  # all zero means "no key"


def record_keys(lines: Sequence[Line]) -> bytes:
    """`ENTRY` bytes per record, in order: zeros for a record that has no identity."""
    return b"".join(map(_entry, lines))


def _entry(line: Line) -> bytes:
    try:
        ident = _decode_identity(line)
    except msgspec.DecodeError:
        return _NO_KEY
    event_id, when, account = ident.eventID, ident.eventTime, ident.recipientAccountId
    if not (isinstance(event_id, str) and event_id and isinstance(when, str)):
        return _NO_KEY
    minute = _minute(when[:16])
    if minute is None:
        return _NO_KEY
    return event_key(event_id, account if isinstance(account, str) else "") + minute.to_bytes(
        4, "little"
    )


@functools.lru_cache(maxsize=4096)
def _minute(prefix: str) -> int | None:
    """Minutes since the epoch of `YYYY-MM-DDTHH:MM` (UTC, as CloudTrail writes it)."""
    try:
        when = datetime.fromisoformat(prefix).replace(tzinfo=UTC)
    except ValueError:
        return None
    minute = int((when - _EPOCH).total_seconds()) // 60
    return minute if 0 <= minute < 1 << 32 else None


class Flight:
    """The keys one fragment claimed, from screening until their batch is acknowledged, and
    the items waiting on them (records they dropped as duplicates of these)."""

    __slots__ = ("entries", "keys", "minutes", "waiters")

    def __init__(self) -> None:
        self.keys: list[int] = []
        self.minutes: list[int] = []
        self.entries: list[bytes] = []
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


@dataclass
class DedupStats:
    duplicates: int = 0  # records dropped
    keys_held: int = 0
    loaded: int = 0  # keys read back from the state database at start
    forgotten_early: int = 0  # keys dropped before their window ran out (max_keys)


class Deduplicator:
    """One source's keys: pending (in flight) and delivered (acknowledged, within the window)."""

    def __init__(self, source: str, scope: str, store: StateStore, options: DedupOptions):
        self.source = source
        self.stats = DedupStats()
        self._scope = scope
        self._store = store
        self._window = max(1, int(options.window // 60))  # minutes
        self._max_keys = options.max_keys
        self._pending: dict[int, Flight] = {}
        self._delivered: set[int] = set()
        self._minutes: dict[int, list[int]] = {}  # event minute -> keys delivered in it
        self._heap: list[int] = []  # the minutes in `_minutes`, oldest first
        self._newest = 0
        self._pruned_before = 0
        self._warned = False

    @property
    def _cutoff(self) -> int:
        return self._newest - self._window

    def load(self) -> int:
        """Reads back the keys delivered within the window, newest first, up to `max_keys`."""
        newest, blobs = self._store.delivered_keys(self._scope, self._window)
        self._newest = newest
        for blob in blobs:
            for offset in range(0, len(blob), ENTRY):
                if self.stats.keys_held >= self._max_keys:
                    break
                self._remember(*_split(blob[offset : offset + ENTRY]))
        self.stats.loaded = self.stats.keys_held
        return self.stats.loaded

    def screen(self, progress: ItemProgress, part: Fragment) -> tuple[Flight, list[int]]:
        """Claims the fragment's new keys; returns them, and the indexes of its duplicates
        (already credited to `progress`, or left for it to wait on)."""
        flight = Flight()
        drop: list[int] = []
        credited = 0
        blob = part.keys
        for index, offset in enumerate(range(0, len(blob), ENTRY)):
            entry = blob[offset : offset + ENTRY]
            key, minute = _split(entry)
            if not key:
                continue
            owner = self._pending.get(key)
            if owner is not None:
                owner.waiters[progress] = owner.waiters.get(progress, 0) + 1
            elif key in self._delivered:
                credited += 1
            else:
                self._pending[key] = flight
                flight.keys.append(key)
                flight.minutes.append(minute)
                flight.entries.append(entry)
                continue
            drop.append(index)
        self.stats.duplicates += len(drop)
        if credited:
            progress.acknowledged(credited)
        return flight, drop

    def delivered(self, flights: Sequence[Flight]) -> None:
        """Their batch was acknowledged: store the keys, then credit whoever waited on them."""
        entries = b"".join(e for f in flights for e in f.entries)
        if entries:
            newest = max(max(f.minutes) for f in flights if f.minutes)
            self._store.save_delivered_keys(self._scope, newest, entries)
        for flight in flights:
            for key, minute in zip(flight.keys, flight.minutes, strict=True):
                del self._pending[key]
                self._remember(key, minute)
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
                if self._pending.get(key) is flight:
                    del self._pending[key]
            waiting += flight.waiters
            flight.waiters = {}
        return waiting

    def _remember(self, key: int, minute: int) -> None:
        self._newest = max(self._newest, minute)
        if minute < self._cutoff or key in self._delivered:
            return  # older than the window: not worth memory
        keys = self._minutes.get(minute)
        if keys is None:
            keys = self._minutes[minute] = []
            heapq.heappush(self._heap, minute)
        keys.append(key)
        self._delivered.add(key)
        self.stats.keys_held += 1

    def _forget_old(self) -> None:
        while self._heap and self._heap[0] < self._cutoff:
            self._forget_minute()
        if self._cutoff > self._pruned_before:
            self._store.prune_delivered_keys(self._scope, self._cutoff)
            self._pruned_before = self._cutoff
        if self.stats.keys_held <= self._max_keys:
            return
        if not self._warned:
            self._warned = True
            log.warning(
                "dedup_window_shortened", source=self.source, max_keys=self._max_keys,
                window_minutes=self._window,
            )  # fmt: skip
        while self.stats.keys_held > self._max_keys and self._heap:
            self.stats.forgotten_early += self._forget_minute()

    def _forget_minute(self) -> int:
        keys = self._minutes.pop(heapq.heappop(self._heap))
        self._delivered.difference_update(keys)
        self.stats.keys_held -= len(keys)
        return len(keys)


def _split(entry: bytes) -> tuple[int, int]:
    return int.from_bytes(entry[:KEY_BYTES], "little"), int.from_bytes(entry[KEY_BYTES:], "little")
