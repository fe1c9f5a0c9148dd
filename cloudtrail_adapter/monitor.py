"""What the running daemon shows an operator: Prometheus metrics and readiness.

Nothing here counts anything itself. Each source's stages already keep their numbers
(PipelineStats, TrackerStats, and what the Source and Sink protocols' `stats()` give); a
`SourceRuntime` points at the current ones and a collector reads them at scrape time, so the
data path pays nothing for being watched and a restarted source simply points at new stages.

Every counter is in every scrape from the source's start, at 0, with every label value known
ahead (decode reasons, verdicts, quarantine and skip reasons): Prometheus' `increase()` sees
an event only in a series that existed before it, so a counter that first appeared at 1
would never raise its alert. The durations alerts hold against (how long a source has kept
failing, LimaCharlie has been out of reach, an object has been in work, no record has been
acknowledged) are measured here, on a `Clock`, rather than by a rule's `for:`, which a
restart or a brief retry would reset.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, get_args

import structlog
from prometheus_client import Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from cloudtrail_adapter.acks import AckTracker, TrackerStats
from cloudtrail_adapter.config import DEFAULT_UNREADY_AFTER
from cloudtrail_adapter.decoding.values import DecodeReason
from cloudtrail_adapter.integrity.verdicts import DIGEST_VERDICTS, FILE_VERDICTS, IntegrityStats
from cloudtrail_adapter.model import (
    ListingStats,
    PipelineStats,
    QueueStats,
    Sink,
    Source,
    Stages,
    ThrottlingStats,
    UspStats,
    WebhookStats,
)
from cloudtrail_adapter.sources.polling import TOO_LARGE

log = structlog.get_logger("cloudtrail_adapter.monitor")
PREFIX = "cloudtrail_adapter"
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: Why an object failed, as far as known ahead: the decode reasons. A fetch error is AWS's
#: own code (AccessDenied, NoSuchKey, ...), open-ended: its series appears with its first
#: count, and the alerts on these counters hold for a series that appears (README, Alerts).
FAILURE_REASONS: Final = tuple(get_args(DecodeReason))
#: Why an object was quarantined, as far as known ahead: a failure reason, or too large.
QUARANTINE_REASONS: Final = (*FAILURE_REASONS, TOO_LARGE)
LISTING_KINDS: Final = frozenset({"s3", "file"})
QUEUE_KINDS: Final = frozenset({"sqs", "sqs-files"})
#: Real seconds a run must last before a source that failed counts as back: a source retried
#: with backoff runs for a moment between its failures (real ones, whatever the Clock's rate).
SETTLED_AFTER: Final = 60.0


@dataclass(frozen=True)
class Clock:
    """What the durations in the metrics are measured in: real seconds at `rate` 1, as the
    daemon always runs. A test runs it faster, to see in seconds an alert whose threshold
    is an hour. `real` is the stages' own clock (they measure on `time.monotonic`)."""

    rate: float = 1.0
    real: Callable[[], float] = time.monotonic

    def now(self) -> float:
        return self.real() * self.rate

    def seconds(self, real: float) -> float:
        """Real seconds (measured by a stage) on this clock."""
        return real * self.rate


@dataclass
class SourceRuntime:
    """One configured source: its current (or last) stages, None before it first ran, and
    the times (on `clock`) its alerts are measured from."""

    name: str
    kind: str
    restarts: int = 0
    pipeline: Stages | None = None
    tracker: AckTracker | None = None
    sink: Sink | None = None
    source: Source | None = None
    latency: Callable[[float], None] | None = None  # the ack latency histogram's observe
    summary_interval: float = 60.0
    running: bool = False
    clock: Clock = field(default_factory=Clock)
    added_at: float = field(init=False)
    attached_at: float | None = None
    attached_real: float | None = None  # the same on the stages' clock
    failing_since: float | None = None  # the first failure since the source last settled
    last_record_at: float | None = None  # when LimaCharlie last acknowledged a record

    def __post_init__(self) -> None:
        self.added_at = self.clock.now()

    def attach(self, pipeline: Stages, tracker: AckTracker, sink: Sink) -> None:
        self.pipeline, self.tracker, self.sink = pipeline, tracker, sink
        self.running = True
        self.attached_at = self.clock.now()
        self.attached_real = self.clock.real()

    def detach(self) -> None:
        """Stopped: the last stages stay, so their final numbers can still be read. A run
        that ended before it settled continues the failures before it."""
        now = self.clock.now()
        if self.failing_since is None or self._settled():
            self.failing_since = now
        self.running = False

    def observe_latency(self, seconds: float) -> None:
        """The tracker's callback for each acknowledged batch."""
        self.last_record_at = self.clock.now()
        if self.latency is not None:
            self.latency(seconds)

    def failing_for(self, now: float) -> float:
        """How long the source has kept failing (0 once a run has settled): retries with
        backoff run for a moment between failures, and those moments do not end it."""
        if self.failing_since is None or (self.running and self._settled()):
            return 0.0
        return now - self.failing_since

    def unreachable_for(self, now: float) -> float:
        """How long the running source's LimaCharlie has been out of reach (0 when it is,
        or while the source does not run: then `failing_for` tells). Before a USP sink's
        first connection: since the source started this run."""
        if not self.running or self.sink is None:
            return 0.0
        down = self.sink.unreachable_for(self.clock.real())
        if down is None:
            return 0.0
        if down == float("inf"):
            return now - (self.attached_at if self.attached_at is not None else now)
        return self.clock.seconds(down)

    def last_record_age(self, now: float) -> float:
        """Since LimaCharlie last acknowledged a record of the source (since the daemon
        started, before the first): the number that says a source ships nothing."""
        return now - (self.last_record_at if self.last_record_at is not None else self.added_at)

    def _settled(self) -> bool:
        began = self.attached_real
        return began is not None and self.clock.real() - began >= SETTLED_AFTER


@dataclass
class Monitor:
    """Every source's runtime, readiness, and the registry `/metrics` serves."""

    unready_after: float = DEFAULT_UNREADY_AFTER
    summary_interval: float = 60.0
    clock: Clock = field(default_factory=Clock)
    sources: dict[str, SourceRuntime] = field(default_factory=dict)
    registry: CollectorRegistry = field(init=False)

    def __post_init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        # Observed on every ack, so a real histogram; served through the collector below.
        self.ack_latency = Histogram(
            f"{PREFIX}_ack_latency_seconds",
            "seconds from a batch being packed to LimaCharlie acknowledging it",
            ["source"],
            registry=None,
            buckets=LATENCY_BUCKETS,
        )
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)  # the main process's memory, CPU and files

    def add(self, name: str, kind: str) -> SourceRuntime:
        runtime = SourceRuntime(name, kind, clock=self.clock)
        runtime.latency = self.ack_latency.labels(name).observe
        runtime.summary_interval = self.summary_interval
        self.sources[name] = runtime
        return runtime

    def unready(self, now: float | None = None) -> list[str]:
        """Why the daemon is not ready (empty when it is): a source not running, or one whose
        LimaCharlie has been out of reach for longer than `unready_after`."""
        now = time.monotonic() if now is None else now
        reasons = []
        for rt in self.sources.values():
            if rt.sink is None or not rt.running:
                reasons.append(f"{rt.name}: not running")
                continue
            down = rt.sink.unreachable_for(now)
            if down is not None and down >= self.unready_after:
                since = "never connected" if down == float("inf") else f"for {down:.0f} s"
                reasons.append(f"{rt.name}: LimaCharlie unreachable ({since})")
        return reasons


async def log_progress(runtime: SourceRuntime) -> None:
    """Until cancelled: one `source_progress` line per interval, for operators who read
    logs rather than metrics (rates over the interval, lag, failures so far)."""
    before = _Totals.of(runtime)
    while True:
        await asyncio.sleep(runtime.summary_interval)
        now = _Totals.of(runtime)
        tracker = runtime.tracker
        log.info(
            "source_progress",
            source=runtime.name,
            records_per_second=round((now.acked - before.acked) / runtime.summary_interval, 1),
            objects_committed=now.committed - before.committed,
            in_flight=tracker.open_items if tracker else 0,
            lag_seconds=round(tracker.oldest_open_age(time.monotonic()), 1) if tracker else 0.0,
            failed=now.failed,
        )
        before = now


@dataclass(frozen=True)
class _Totals:
    acked: int = 0
    committed: int = 0
    failed: int = 0

    @classmethod
    def of(cls, rt: SourceRuntime) -> _Totals:
        if rt.tracker is None or rt.pipeline is None:
            return cls()
        stats = rt.tracker.stats
        return cls(stats.records_acked, stats.committed, rt.pipeline.stats.objects_failed)


class _Collector(Collector):
    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterator[Metric]:
        families = _Families(self._monitor.clock)
        for rt in self._monitor.sources.values():
            families.source(rt)
        yield from families.all()
        yield from self._monitor.ack_latency.collect()


def _no_listing() -> ListingStats:
    return ListingStats(0, 0, 0, 0, {}, 0, listing_done=False)


def _no_queue() -> QueueStats:
    return QueueStats(0, 0, 0, 0, 0, 0)


class _Families:
    """One family per metric name, filled source by source."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._counters: dict[str, CounterMetricFamily] = {}
        self._gauges: dict[str, GaugeMetricFamily] = {}

    def counter(self, name: str, doc: str, source: str, value: float, **labels: str) -> None:
        names = ["source", *labels]
        family = self._counters.setdefault(
            name, CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=names)
        )
        family.add_metric([source, *labels.values()], value)

    def by_label(
        self,
        name: str,
        doc: str,
        source: str,
        counts: Mapping[str, int],
        label: str,
        known: tuple[str, ...] = (),
    ) -> None:
        """A counter per value of `label`: every `known` one from the start, at 0, and any
        other from its first count. The family is declared even with no series at all."""
        self._counters.setdefault(
            name, CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["source", label])
        )
        for value, count in sorted((dict.fromkeys(known, 0) | dict(counts)).items()):
            self.counter(name, doc, source, count, **{label: value})

    def gauge(self, name: str, doc: str, source: str, value: float) -> None:
        family = self._gauges.setdefault(
            name, GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["source"])
        )
        family.add_metric([source], value)

    def all(self) -> Iterator[Metric]:
        yield from self._counters.values()
        yield from self._gauges.values()

    def source(self, rt: SourceRuntime) -> None:
        """Everything of one source; before its stages exist, what they will count, at 0."""
        name = rt.name
        self.gauge(
            "source_up", "1 while the source runs, 0 while it waits to restart", name, rt.running
        )
        self.counter("source_restarts", "restarts after a failure", name, rt.restarts)
        self._durations(rt)
        self._pipeline(name, rt.pipeline)
        self._tracker(name, rt.tracker)
        self._source_stats(rt)
        if rt.sink is not None:
            sink = rt.sink.stats()
            if sink.usp is not None:
                self._usp(name, sink.usp)
            if sink.webhook is not None:
                self._webhook(name, sink.webhook)
            down = rt.sink.unreachable_for(self._clock.real())
            self.gauge(
                "limacharlie_reachable", "1 when LimaCharlie is reachable", name, down is None
            )

    def _durations(self, rt: SourceRuntime) -> None:
        """What the alerts hold against, on the monitor's clock."""
        now = self._clock.now()
        self.gauge(
            "source_failing_seconds",
            "how long the source has kept failing (0 once a run lasted a minute)",
            rt.name,
            rt.failing_for(now),
        )
        self.gauge(
            "limacharlie_unreachable_seconds",
            "how long LimaCharlie has been out of reach of the running source (0 when not)",
            rt.name,
            rt.unreachable_for(now),
        )
        self.gauge(
            "last_record_age_seconds",
            "seconds since LimaCharlie last acknowledged a record (since start, before one)",
            rt.name,
            rt.last_record_age(now),
        )

    def _source_stats(self, rt: SourceRuntime) -> None:
        """The source's own counts: before it first ran, its kind's, at 0."""
        stats = rt.source.stats() if rt.source is not None else None
        queue = stats.queue if stats is not None else None
        if queue is not None or (stats is None and rt.kind in QUEUE_KINDS):
            self._sqs(rt.name, queue or _no_queue())
        listing = stats.listing if stats is not None else None
        if listing is not None or (stats is None and rt.kind in LISTING_KINDS):
            self._listing(rt.name, listing or _no_listing())
        if stats is not None and stats.integrity is not None:
            self._integrity(rt.name, stats.integrity)
        if stats is not None and stats.throttling is not None:
            self._throttling(rt.name, stats.throttling)

    def _pipeline(self, name: str, p: Stages | None) -> None:
        st = p.stats if p is not None else PipelineStats()
        self.counter("objects_decoded", "objects read and decoded", name, st.objects_decoded)
        self.counter("records_decoded", "records split from objects", name, st.records_decoded)
        self.counter("bytes_read", "compressed bytes of objects read", name, st.bytes_loaded)
        self.counter("records_sent", "records handed to the transport", name, st.records_sent)
        self.counter("batches_sent", "batches handed to the transport", name, st.batches_sent)
        self.counter(
            "records_oversized", "records over CloudTrail's 256 KB", name, st.records_oversized
        )
        self.by_label(
            "records_filtered",
            "records dropped by a filter, by filter",
            name,
            st.records_filtered,
            "filter",
        )
        self.by_label(
            "records_unreadable",
            "parts of damaged objects that were no record on their own, set aside, by reason",
            name,
            st.records_unreadable,
            "reason",
        )
        if p is not None and (d := p.dedup_stats) is not None:
            self.counter("records_duplicate", "records dropped as duplicates", name, d.duplicates)
            self.gauge("dedup_keys", "delivered eventIDs remembered", name, d.keys_held)
            self.counter(
                "dedup_keys_forgotten_early",
                "keys forgotten before their window ran out (dedup.max_keys)",
                name,
                d.forgotten_early,
            )
        self.by_label(
            "objects_failed",
            "objects that failed, by reason",
            name,
            st.failures_by_reason,
            "reason",
            FAILURE_REASONS,
        )
        self.gauge(
            "work_queue_depth", "items waiting for a fetcher", name, p.queue_depth if p else 0
        )
        self.gauge(
            "buffered_bytes",
            "objects and compressed records in work",
            name,
            p.buffered_bytes if p else 0,
        )

    def _tracker(self, name: str, t: AckTracker | None) -> None:
        st = t.stats if t is not None else TrackerStats()
        self.counter(
            "records_acknowledged", "records LimaCharlie acknowledged", name, st.records_acked
        )
        self.counter(
            "objects_committed",
            "items committed after every record was acknowledged",
            name,
            st.committed,
        )
        self.gauge(
            "items_in_flight", "items read but not yet committed", name, t.open_items if t else 0
        )
        oldest = t.oldest_open_age(self._clock.real()) if t is not None else 0.0
        self.gauge(
            "oldest_unacknowledged_seconds",
            "age of the oldest item not yet committed: how far behind the daemon is",
            name,
            self._clock.seconds(oldest),
        )

    def _usp(self, name: str, st: UspStats) -> None:
        self.gauge(
            "usp_window", "messages LimaCharlie lets us have unacknowledged", name, st.window
        )
        self.gauge(
            "usp_unacknowledged", "messages sent and not yet acknowledged", name, st.unacknowledged
        )
        self.counter("usp_reconnects", "USP connections after the first", name, st.reconnects)
        self.counter("usp_backoffs", "`bo` back-off requests obeyed", name, st.backoffs)

    def _webhook(self, name: str, st: WebhookStats) -> None:
        self.gauge("webhook_in_flight", "POSTs not yet answered with 2xx", name, st.in_flight)
        self.counter(
            "webhook_retries", "POSTs retried after 429, 5xx or a network error", name, st.retries
        )

    def _listing(self, name: str, st: ListingStats) -> None:
        self.counter("list_calls", "ListObjectsV2 requests (S3)", name, st.list_calls)
        self.counter(
            "objects_off_layout",
            "objects listed from places off the CloudTrail layout (shipped)",
            name,
            st.off_layout,
        )
        passed = {"digest": st.digests, "outside_window": st.outside_window}
        self.by_label(
            "objects_passed_over",
            "objects listed and not shipped, by reason",
            name,
            passed,
            "reason",
        )
        self.by_label(
            "objects_quarantined",
            "objects quarantined, by reason",
            name,
            st.quarantined,
            "reason",
            QUARANTINE_REASONS,
        )
        self.by_label(
            "s3_requests",
            "S3 requests sent, retries included (each is billed), by kind: list, get, head, other",
            name,
            st.requests,
            "kind",
        )
        self.gauge("streams", "CloudTrail streams this source lists (S3)", name, st.streams)
        self.gauge(
            "streams_active",
            "streams listed every poll_interval because they delivered lately",
            name,
            st.streams_active,
        )
        self.gauge(
            "list_cost_monthly_dollars",
            "LIST requests a month at the present cadence, at list_price",
            name,
            st.monthly_cost,
        )

    def _throttling(self, name: str, st: ThrottlingStats) -> None:
        """Halved on each 503 SlowDown, one more per success (limiter.py)."""
        self.counter("s3_throttled", "S3 requests answered 503 (SlowDown)", name, st.throttled)
        self.gauge(
            "s3_fetch_concurrency", "GETs the bucket gets at once now", name, st.fetch_concurrency
        )
        self.gauge(
            "s3_list_concurrency",
            "ListObjectsV2 calls the bucket gets at once now",
            name,
            st.list_concurrency,
        )

    def _integrity(self, name: str, st: IntegrityStats) -> None:
        """The digest check (integrity.verify): every verdict counted, valid ones too."""
        self.by_label(
            "integrity_files",
            "log files checked against CloudTrail's digests, by verdict",
            name,
            {v: st.files[v] for v in FILE_VERDICTS},
            "verdict",
        )
        self.by_label(
            "integrity_digests",
            "digest files checked, by verdict",
            name,
            {v: st.digests[v] for v in DIGEST_VERDICTS},
            "verdict",
        )
        self.by_label(
            "integrity_files_unverified",
            "log files that could not be checked, by reason",
            name,
            st.unverified,
            "reason",
        )
        self.by_label(
            "integrity_errors",
            "digests or keys that could not be read (tried again), by reason",
            name,
            st.errors,
            "reason",
        )
        self.gauge(
            "integrity_files_waiting",
            "shipped log files waiting for their digest",
            name,
            st.files_waiting,
        )
        self.gauge(
            "integrity_events_queued",
            "integrity events not yet acknowledged by LimaCharlie",
            name,
            st.events_queued,
        )

    def _sqs(self, name: str, st: QueueStats) -> None:
        self.counter("sqs_messages_received", "messages received", name, st.received)
        self.counter(
            "sqs_messages_deleted",
            "messages deleted after every record was acknowledged",
            name,
            st.deleted,
        )
        self.counter(
            "sqs_messages_poison", "messages left for the dead-letter queue", name, st.poison
        )
        self.counter(
            "sqs_visibility_extensions",
            "heartbeats that kept a message hidden",
            name,
            st.visibility_extensions,
        )
        self.counter("sqs_delete_failures", "failed deletes (retried)", name, st.delete_failures)
        self.gauge(
            "sqs_messages_in_work",
            "messages received and not yet deleted or left",
            name,
            st.in_work,
        )
