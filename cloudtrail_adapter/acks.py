"""The acknowledgement tracker: an item is committed only when LimaCharlie acknowledged all of it.

Each WorkItem gets an `ItemProgress`. Decoding sets its record total; every acknowledged
batch credits the records it carried. When the credited count reaches the total, the item's
`commit` runs on a single committer task, so commits never run concurrently with each other
and a failed commit never counts as done. An item that failed (fetch or decode) is never
committed: its source will offer it again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from cloudtrail_adapter.model import Batch, WorkItem

log = structlog.get_logger("cloudtrail_adapter.acks")


class ItemProgress:
    """Per-item counters; it is the `AckToken` batches carry back from the sink."""

    __slots__ = ("_tracker", "acked", "done", "item", "opened_at", "total")

    def __init__(self, tracker: AckTracker, item: WorkItem) -> None:
        self._tracker = tracker
        self.item = item
        self.opened_at = time.monotonic()
        self.total: int | None = None
        self.acked = 0
        self.done = False

    def acknowledged(self, records: int) -> None:
        self.acked += records
        self._tracker._maybe_ready(self)


@dataclass
class TrackerStats:
    opened: int = 0
    committed: int = 0
    failed: int = 0
    records_acked: int = 0


class AckTracker:
    """Counts open records per item and commits items in the order they become complete."""

    def __init__(self, source: str, on_latency: Callable[[float], None] | None = None) -> None:
        self.source = source
        self._on_latency = on_latency  # seconds from batch to acknowledgement
        self.stats = TrackerStats()
        self._open: set[ItemProgress] = set()
        self._ready: asyncio.Queue[ItemProgress] = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def open_items(self) -> int:
        return len(self._open)

    def oldest_open_age(self, now: float) -> float:
        """Seconds the oldest uncommitted item has been in work (0 with none): lag."""
        return max((now - p.opened_at for p in self._open), default=0.0)

    def open(self, item: WorkItem) -> ItemProgress:
        progress = ItemProgress(self, item)
        self._open.add(progress)
        self._idle.clear()
        self.stats.opened += 1
        return progress

    def set_total(self, progress: ItemProgress, total: int) -> None:
        """Called once the item is decoded, before any of its records is batched."""
        progress.total = total
        self._maybe_ready(progress)

    def fail(self, progress: ItemProgress, reason: str, error: str) -> None:
        """The item will never be complete: drop it without committing."""
        if progress in self._open and not progress.done:
            progress.done = True
            self.stats.failed += 1
            progress.item.release(reason, error)
            self._close(progress)

    def on_batch_acked(self, batch: Batch) -> None:
        """The sink's ack callback: credit each item the batch carried."""
        self.stats.records_acked += batch.records
        if self._on_latency is not None:
            self._on_latency(time.monotonic() - batch.created_at)
        for token, count in batch.parts:
            token.acknowledged(count)

    def _maybe_ready(self, progress: ItemProgress) -> None:
        if progress.done or progress.total is None or progress.acked < progress.total:
            return
        if progress.acked > progress.total:  # a bug upstream; committing would hide it
            raise AssertionError(f"{progress.item.ref}: acked {progress.acked} > {progress.total}")
        progress.done = True
        self._ready.put_nowait(progress)

    def _close(self, progress: ItemProgress) -> None:
        self._open.discard(progress)
        if not self._open:
            self._idle.set()

    async def run_committer(self) -> None:
        """Runs each ready item's commit, one at a time, until cancelled."""
        while True:
            progress = await self._ready.get()
            item = progress.item
            try:
                await item.commit()
            except Exception as exc:  # the source offers it again; a duplicate, never a loss
                error = f"{type(exc).__name__}: {exc}"
                item.release("commit_failed", error)
                log.error("commit_failed", ref=item.ref, error=error, **item.log_fields)
            else:
                self.stats.committed += 1
                log.debug("item_committed", ref=item.ref, records=progress.total)
            self._close(progress)

    async def wait_idle(self) -> None:
        """Returns when no item is open: everything opened was committed or failed."""
        await self._idle.wait()
