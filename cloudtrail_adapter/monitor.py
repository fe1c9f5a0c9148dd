"""What the running daemon shows an operator: Prometheus metrics and readiness.

Nothing here counts anything itself. Each source's stages already keep their numbers
(PipelineStats, TrackerStats, the sinks' and sources' own); a `SourceRuntime` points at
the current ones and a collector reads them at scrape time, so the data path pays nothing
for being watched and a restarted source simply points at new stages.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from cloudtrail_adapter.acks import AckTracker
from cloudtrail_adapter.model import Sink, Source
from cloudtrail_adapter.pipeline import Pipeline

PREFIX = "cloudtrail_adapter"


@dataclass
class SourceRuntime:
    """One configured source: its current stages (None while it is not running)."""

    name: str
    kind: str
    restarts: int = 0
    pipeline: Pipeline | None = None
    tracker: AckTracker | None = None
    sink: Sink | None = None
    source: Source | None = None

    @property
    def running(self) -> bool:
        return self.pipeline is not None

    def attach(self, pipeline: Pipeline, tracker: AckTracker, sink: Sink) -> None:
        self.pipeline, self.tracker, self.sink = pipeline, tracker, sink

    def detach(self) -> None:
        self.pipeline = self.tracker = self.sink = self.source = None


@dataclass
class Monitor:
    """Every source's runtime, readiness, and the registry `/metrics` serves."""

    unready_after: float = 60.0
    sources: dict[str, SourceRuntime] = field(default_factory=dict)
    registry: CollectorRegistry = field(init=False)

    def __post_init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def add(self, name: str, kind: str) -> SourceRuntime:
        runtime = SourceRuntime(name, kind)
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


class _Collector(Collector):
    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterator[Metric]:
        families = _Families()
        for rt in self._monitor.sources.values():
            families.source(rt)
        yield from families.all()


class _Families:
    """One family per metric name, filled source by source."""

    def __init__(self) -> None:
        self._counters: dict[str, CounterMetricFamily] = {}
        self._gauges: dict[str, GaugeMetricFamily] = {}

    def counter(self, name: str, doc: str, source: str, value: float, **labels: str) -> None:
        names = ["source", *labels]
        family = self._counters.setdefault(
            name, CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=names)
        )
        family.add_metric([source, *labels.values()], value)

    def gauge(self, name: str, doc: str, source: str, value: float) -> None:
        family = self._gauges.setdefault(
            name, GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["source"])
        )
        family.add_metric([source], value)

    def all(self) -> Iterator[Metric]:
        yield from self._counters.values()
        yield from self._gauges.values()

    def source(self, rt: SourceRuntime) -> None:
        name = rt.name
        self.gauge(
            "source_up", "1 while the source runs, 0 while it waits to restart", name, rt.running
        )
        self.counter("source_restarts", "restarts after a failure", name, rt.restarts)
        if rt.pipeline is not None:
            self._pipeline(name, rt.pipeline)
        if rt.tracker is not None:
            self._tracker(name, rt.tracker)
        if rt.sink is not None:
            down = rt.sink.unreachable_for(time.monotonic())
            self.gauge(
                "limacharlie_reachable", "1 when LimaCharlie is reachable", name, down is None
            )

    def _pipeline(self, name: str, p: Pipeline) -> None:
        st = p.stats
        self.counter("objects_decoded", "objects read and decoded", name, st.objects_decoded)
        self.counter("records_decoded", "records split from objects", name, st.records_decoded)
        self.counter("bytes_read", "compressed bytes of objects read", name, st.bytes_loaded)
        self.counter("records_sent", "records handed to the transport", name, st.records_sent)
        self.counter("batches_sent", "bundles handed to the transport", name, st.batches_sent)
        self.counter(
            "records_oversized", "records over CloudTrail's 256 KB", name, st.records_oversized
        )
        for reason, count in sorted(st.failures_by_reason.items()):
            self.counter(
                "objects_failed", "objects that failed, by reason", name, count, reason=reason
            )
        self.gauge("work_queue_depth", "items waiting for a worker", name, p.work.qsize())
        self.gauge(
            "buffered_bytes", "decoded records waiting for the batcher", name, p.buffered_bytes
        )

    def _tracker(self, name: str, t: AckTracker) -> None:
        st = t.stats
        self.counter(
            "records_acknowledged", "records LimaCharlie acknowledged", name, st.records_acked
        )
        self.counter(
            "objects_committed",
            "items committed after every record was acknowledged",
            name,
            st.committed,
        )
        self.gauge("items_in_flight", "items read but not yet committed", name, t.open_items)
        self.gauge(
            "oldest_unacknowledged_seconds",
            "age of the oldest item not yet committed: how far behind the daemon is",
            name,
            t.oldest_open_age(time.monotonic()),
        )
