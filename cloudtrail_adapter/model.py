"""Values that flow between the stages: work items in, batches out, acknowledgements back.

Nothing here imports a source or a sink, so data flows one way:
source -> WorkItem -> decode -> batcher -> Batch -> sink -> ack -> tracker -> item.commit().
The stats values are what a source or a sink shows an operator (monitor.py, progress.py),
so that those read them through the protocols and never look at a concrete class.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from cloudtrail_adapter.integrity.verdicts import IntegrityStats
    from cloudtrail_adapter.readers import Reader


@dataclass
class PipelineStats:
    objects_decoded: int = 0
    objects_failed: int = 0
    records_decoded: int = 0
    bytes_loaded: int = 0
    batches_sent: int = 0
    records_sent: int = 0
    records_oversized: int = 0
    records_filtered: dict[str, int] = field(default_factory=dict)  # by filter
    records_unreadable: dict[str, int] = field(default_factory=dict)  # set aside, by reason
    failures_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass
class DedupStats:
    duplicates: int = 0  # records dropped
    keys_held: int = 0
    loaded: int = 0  # keys read back from the state database at start
    forgotten_early: int = 0  # keys dropped before their window ran out (max_keys)


@dataclass(eq=False, slots=True)
class WorkItem:
    """One unit a source commits as a whole: an S3 object, or the records of one SQS message.

    `reader` gives the object's raw bytes (gzip or plain JSON); `commit` is called by the
    tracker once LimaCharlie acknowledged every record decoded from it, and never otherwise;
    `release(reason, error)` is called instead when the item failed, so its source can
    record why and offer it again (or give up on it). `hashed`, when set, is given the
    hex SHA-256 of the object's uncompressed content, taken while it was decoded (the
    integrity check); `own` marks records the daemon made itself (integrity events), which
    no record filter drops. `attempts`, when set, keeps its decoding calls across restarts
    (DecodeAttempts).
    """

    source: str
    ref: str
    reader: Reader
    commit: Callable[[], Awaitable[None]]
    release: Callable[[str, str], None] = lambda reason, error: None
    log_fields: dict[str, str] = field(default_factory=dict)
    hashed: Callable[[str], None] | None = None
    own: bool = False
    attempts: DecodeAttempts | None = None


class DecodeAttempts(Protocol):
    """What a source keeps of an object's decoding calls (a call in a worker, or a step in
    a thread), so that an object whose decoding kills the process doing it is not decoded
    forever, across restarts too: `begin` is recorded before each call, `end` after it."""

    def begin(self) -> int:
        """How many earlier calls died; one that began and never ended counts (the process
        died in it)."""
        ...

    def end(self, *, died: bool) -> int:
        """How many calls died, this one included when `died` (its worker did)."""
        ...


@dataclass(frozen=True, slots=True)
class ListingStats:
    """A listing source's (S3, file) counts since it started, and its pass under way."""

    list_calls: int  # ListObjectsV2 requests
    off_layout: int  # objects listed from places off the CloudTrail layout (and shipped)
    digests: int  # objects listed and passed over: digest files
    outside_window: int  # ... and files outside start_time/end_time
    quarantined: Mapping[str, int]  # objects quarantined, by reason
    offered: int  # objects the pass under way offered so far
    listing_done: bool  # the pass under way listed everything: `offered` is final
    requests: Mapping[str, int] = field(default_factory=dict)  # S3 requests sent, by kind
    streams: int = 0  # CloudTrail streams listed (this replica's)
    streams_active: int = 0  # ... of them listed every poll_interval: they delivered lately
    monthly_cost: float = 0.0  # USD a month of LIST requests at the present cadence


@dataclass(slots=True)
class QueueStats:
    """A queue source's (SQS) counts since it started. The source counts into its own and
    hands out copies, so what a reader holds does not change under it."""

    received: int = 0
    deleted: int = 0  # after every record of the message was acknowledged
    poison: int = 0  # left for the dead-letter queue
    visibility_extensions: int = 0
    delete_failures: int = 0
    in_work: int = 0  # received and not yet deleted or left


@dataclass(frozen=True, slots=True)
class SourceStats:
    """What a source counted, as of now: the part for its kind is set, the others are None."""

    listing: ListingStats | None = None
    queue: QueueStats | None = None
    #: an S3 source's digest check (integrity.verify); its type lives with the verdicts
    #: it counts (integrity/verdicts.py)
    integrity: IntegrityStats | None = None
    #: an S3 source's requests at once, as throttling left them (limiter.py)
    throttling: ThrottlingStats | None = None


@dataclass(frozen=True, slots=True)
class ThrottlingStats:
    """GETs and ListObjectsV2 calls a bucket gets at once now, and 503s counted since start."""

    fetch_concurrency: int
    list_concurrency: int
    throttled: int


class Source(Protocol):
    """Puts WorkItems into `out` (waiting when it is full: that is the backpressure).

    `run` returns in single-load mode once everything it offered is finished with, and
    after `stop_intake()` once what it already offered is finished with. `hand_back()` gives
    back what is still in work when the shutdown grace ran out (SQS: visibility 0).
    `problems` counts what it gave up on (poison messages, say) for the exit code, and
    `recovered` the failed attempts (which the pipeline counted) of items it retried within
    the run and then committed, which do not fail a single-load run. `stats`
    is read at scrape time: it costs the data path nothing.
    """

    name: str

    async def run(self, out: asyncio.Queue[WorkItem]) -> None: ...

    def stop_intake(self) -> None: ...

    async def hand_back(self) -> None: ...

    def problems(self) -> int: ...

    def recovered(self) -> int: ...

    def stats(self) -> SourceStats: ...


class AckToken(Protocol):
    """What a batch remembers about each item it carries; only the tracker interprets it."""

    def acknowledged(self, records: int) -> None: ...


@dataclass(eq=False, slots=True)
class Batch:
    """A batch for either transport: `payload` is gzip of newline-separated compact records.

    `parts` says how many of its records came from which item, so that an acknowledgement
    can be credited back. Sinks never look inside `parts`.
    """

    payload: bytes
    records: int
    raw_bytes: int
    parts: tuple[tuple[AckToken, int], ...] = ()
    created_at: float = field(default_factory=time.monotonic)  # for the ack latency

    def __repr__(self) -> str:
        return f"Batch(records={self.records}, raw_bytes={self.raw_bytes}, gz={len(self.payload)})"


AckCallback = Callable[[Batch], None]


@dataclass(frozen=True, slots=True)
class UspStats:
    window: int  # messages LimaCharlie lets us have unacknowledged
    unacknowledged: int  # messages sent and not yet acknowledged
    reconnects: int  # connections after the first
    backoffs: int  # `bo` back-off requests obeyed


@dataclass(frozen=True, slots=True)
class WebhookStats:
    in_flight: int  # batches sent and not yet acknowledged
    max_in_flight_seen: int
    retries: int  # POSTs retried after 429, 5xx or a network error
    acked: int


@dataclass(frozen=True, slots=True)
class SinkStats:
    """What a transport counted, as of now: the part for its kind is set, the other is None."""

    usp: UspStats | None = None
    webhook: WebhookStats | None = None


class Sink(Protocol):
    """A LimaCharlie transport.

    `send` waits while the transport has no room (the USP window, the webhook's in-flight
    limit): that wait is the backpressure the whole pipeline relies on. Every batch passed to
    `send` is delivered eventually, retried across errors and reconnects, and reported exactly
    once, in order, to the `on_ack` callback given at construction. `run` is the transport's
    long-lived task: it raises FatalSinkError when retrying cannot help, and returns once
    `close` was called. `stats` is read at scrape time.
    """

    async def run(self) -> None: ...

    async def send(self, batch: Batch) -> None: ...

    async def close(self) -> None: ...

    def unreachable_for(self, now: float) -> float | None:
        """Seconds (on the monotonic clock) LimaCharlie has been out of reach, None when it
        is reachable; infinite before a transport with connections first connected."""
        ...

    def stats(self) -> SinkStats: ...


class Stages(Protocol):
    """What the monitor and the progress line read of a source's running pipeline."""

    @property
    def stats(self) -> PipelineStats: ...
    @property
    def dedup_stats(self) -> DedupStats | None: ...
    @property
    def queue_depth(self) -> int: ...
    @property
    def buffered_bytes(self) -> int: ...
