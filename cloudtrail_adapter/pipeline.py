"""The stages between a source and a sink: fetch+decode workers, the batcher, the committer.

    source --WorkItem--> [work queue] --> workers (load, decode in a pool)
           --(progress, records)--> [decoded queue] --> batcher --Batch--> sink.send()

Every queue is bounded and `sink.send` waits while LimaCharlie's window is full, so a slow
LimaCharlie slows decoding, which slows the source: memory is bounded by queue sizes times
the largest object, never by the size of the input.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field

import structlog

from cloudtrail_adapter.acks import AckTracker, ItemProgress
from cloudtrail_adapter.aio import ByteBudget
from cloudtrail_adapter.config import DeliveryOptions
from cloudtrail_adapter.decode import DecodeError, compress_bundle, decode_object
from cloudtrail_adapter.model import Batch, WorkItem
from cloudtrail_adapter.stream_decode import STEP_OUTPUT, StreamDecoder

log = structlog.get_logger("cloudtrail_adapter.pipeline")

SendBatch = Callable[[Batch], Awaitable[None]]
STREAM_RANGE = 4 << 20  # compressed bytes per ranged read of a large object
WHOLE_RATIO = (
    10  # decoded bytes per compressed byte, to reserve before decoding (CloudTrail: ~6-10)
)


@dataclass
class PipelineStats:
    objects_decoded: int = 0
    objects_failed: int = 0
    records_decoded: int = 0
    bytes_loaded: int = 0
    batches_sent: int = 0
    records_sent: int = 0
    records_oversized: int = 0
    failures_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Decoded:
    progress: ItemProgress
    records: list[bytes]
    size: int  # bytes of `records`, held in the buffer budget until batched


class Pipeline:
    """One source's stages. `work` is the queue its source fills."""

    def __init__(
        self,
        name: str,
        *,
        send: SendBatch,
        tracker: AckTracker,
        delivery: DeliveryOptions,
        workers: int,
        executor: Executor | None = None,
    ) -> None:
        self.name = name
        self.stats = PipelineStats()
        self.work: asyncio.Queue[WorkItem] = asyncio.Queue(maxsize=workers * 2)
        self._decoded: asyncio.Queue[Decoded] = asyncio.Queue(maxsize=2)
        self._send = send
        self._tracker = tracker
        self._delivery = delivery
        self._workers = workers
        self._executor = executor
        self._waiting = 0  # workers waiting for the budget or for room in the decoded queue
        # Decoded records not yet batched: with the sink's window and the bundle size, this
        # bounds memory however slow LimaCharlie is and however large the objects.
        self._budget = ByteBudget(delivery.max_buffered_bytes)

    @property
    def buffered_bytes(self) -> int:
        return self._budget.used

    async def run(self) -> None:
        """Runs the workers and the batcher until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            for _ in range(self._workers):
                tasks.create_task(self._worker())
            tasks.create_task(self._batcher())

    async def drained(self) -> None:
        """Returns once every item put so far was decoded and then committed or failed."""
        await self.work.join()
        await self._tracker.wait_idle()

    async def _worker(self) -> None:
        while True:
            item = await self.work.get()
            try:
                progress = self._tracker.open(item)
                await self._read(item, progress)
            finally:
                self.work.task_done()

    async def _read(self, item: WorkItem, progress: ItemProgress) -> None:
        """Whole for ordinary objects, streamed for large ones; a failure is logged and the
        item released, never committed."""
        try:
            size = await item.reader.size()
            self.stats.bytes_loaded += size
            streamed = size > self._delivery.stream_threshold
            kind, total = await (self._stream if streamed else self._whole)(item, progress, size)
        except DecodeError as exc:
            self._failed(item, progress, exc.reason, str(exc))
            return
        except Exception as exc:  # a fetch error: the source offers the item again later
            self._failed(item, progress, _fetch_reason(exc), str(exc))
            return
        self.stats.objects_decoded += 1
        self.stats.records_decoded += total
        log.debug(
            "object_decoded", source=self.name, ref=item.ref, kind=kind, records=total,
            streamed=streamed, **item.log_fields,
        )  # fmt: skip

    async def _whole(self, item: WorkItem, progress: ItemProgress, size: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        reserved = await self._reserve(min(size * WHOLE_RATIO, self._budget.limit))
        try:
            data = await item.reader.read()
            decoded = await loop.run_in_executor(self._executor, decode_object, data)
        except BaseException:
            self._budget.release(reserved)
            raise
        del data
        reserved = self._budget.resize(reserved, sum(map(len, decoded.records)))
        self._tracker.set_total(progress, len(decoded.records))
        self._report_oversized(item, decoded.oversized)
        await self._hand_on(Decoded(progress, decoded.records, reserved))
        return decoded.kind, len(decoded.records)

    async def _stream(self, item: WorkItem, progress: ItemProgress, _size: int) -> tuple[str, int]:
        """Records go on as they are decoded; the total is known, and the item can commit,
        only once the whole object was read."""
        decoder = StreamDecoder()
        total = 0
        async for chunk in item.reader.chunks(STREAM_RANGE):
            decoder.feed(chunk)
            while not decoder.hungry:
                total += await self._step(decoder, progress)
        summary = decoder.finish()
        self._tracker.set_total(progress, total)
        self._report_oversized(item, summary.oversized)
        return summary.kind, total

    async def _step(self, decoder: StreamDecoder, progress: ItemProgress) -> int:
        loop = asyncio.get_running_loop()
        reserved = await self._reserve(STEP_OUTPUT)
        try:
            records = await loop.run_in_executor(self._executor, decoder.step)
        except BaseException:
            self._budget.release(reserved)
            raise
        reserved = self._budget.resize(reserved, sum(map(len, records)))
        await self._hand_on(Decoded(progress, records, reserved))
        return len(records)

    def _report_oversized(self, item: WorkItem, oversized: tuple[tuple[int, int], ...]) -> None:
        """Delivered all the same (an audit event is never dropped), but worth knowing."""
        if not oversized:
            return
        self.stats.records_oversized += len(oversized)
        log.warning(
            "records_oversized",
            source=self.name,
            ref=item.ref,
            count=len(oversized),
            largest=max(size for _, size in oversized),
            indexes=[index for index, _ in oversized[:10]],
            **item.log_fields,
        )

    async def _hand_on(self, entry: Decoded) -> None:
        if not entry.records:
            self._budget.release(entry.size)
            return
        if not self._decoded.full():
            self._decoded.put_nowait(entry)
            return
        with self._waiting_for("queue"):
            await self._decoded.put(entry)

    async def _reserve(self, amount: int) -> int:
        if self._budget.fits(amount):
            return await self._budget.reserve(amount)
        with self._waiting_for("budget"):
            return await self._budget.reserve(amount)

    @contextlib.contextmanager
    def _waiting_for(self, what: str) -> Iterator[None]:
        """Downstream is full (LimaCharlie is the bottleneck); when every worker waits, the
        pipeline holds all the memory its bounds allow."""
        self._waiting += 1
        log.debug("worker_waiting", source=self.name, on=what, waiting_workers=self._waiting)
        try:
            yield
        finally:
            self._waiting -= 1

    def _failed(self, item: WorkItem, progress: ItemProgress, reason: str, detail: str) -> None:
        self.stats.objects_failed += 1
        self.stats.failures_by_reason[reason] = self.stats.failures_by_reason.get(reason, 0) + 1
        self._tracker.fail(progress, reason, detail)
        log.error(
            "object_failed",
            source=self.name,
            ref=item.ref,
            reason=reason,
            error=detail,
            **item.log_fields,
        )

    async def _batcher(self) -> None:
        """Packs records of consecutive items into bundles bounded by count, bytes and linger."""
        loop = asyncio.get_running_loop()
        bundle = _Bundle()
        deadline = 0.0
        while True:
            timeout = None if bundle.empty else max(0.0, deadline - loop.time())
            try:
                async with asyncio.timeout(timeout):
                    entry = await self._decoded.get()
            except TimeoutError:
                await self._flush(bundle.take())
                continue
            if bundle.empty:
                deadline = loop.time() + self._delivery.batch_linger
            for record in entry.records:
                if bundle.full(self._delivery, len(record)):
                    await self._flush(bundle.take())
                    deadline = loop.time() + self._delivery.batch_linger
                bundle.add(entry.progress, record)
            self._budget.release(entry.size)  # the bundle's own bound takes over

    async def _flush(self, bundle: _Bundle) -> None:
        loop = asyncio.get_running_loop()
        payload, raw_bytes = await loop.run_in_executor(
            self._executor, compress_bundle, bundle.lines
        )
        batch = Batch(payload, len(bundle.lines), raw_bytes, bundle.parts())
        await self._send(batch)
        self.stats.batches_sent += 1
        self.stats.records_sent += batch.records


def _fetch_reason(exc: Exception) -> str:
    """AWS's error code (NoSuchKey, AccessDenied, ...) when there is one, else the type."""
    error = getattr(exc, "response", {}).get("Error", {})
    return str(error.get("Code") or type(exc).__name__)


class _Bundle:
    """Lines being packed, and how many came from each item (in order)."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.size = 0
        self._counts: list[tuple[ItemProgress, int]] = []

    @property
    def empty(self) -> bool:
        return not self.lines

    def full(self, delivery: DeliveryOptions, next_len: int) -> bool:
        if not self.lines:
            return False
        return (
            len(self.lines) >= delivery.batch_max_records
            or self.size + next_len + 1 > delivery.batch_max_bytes
        )

    def add(self, progress: ItemProgress, line: bytes) -> None:
        self.lines.append(line)
        self.size += len(line) + 1
        if self._counts and self._counts[-1][0] is progress:
            self._counts[-1] = (progress, self._counts[-1][1] + 1)
        else:
            self._counts.append((progress, 1))

    def parts(self) -> tuple[tuple[ItemProgress, int], ...]:
        return tuple(self._counts)

    def take(self) -> _Bundle:
        taken = _Bundle()
        taken.lines, taken.size, taken._counts = self.lines, self.size, self._counts
        self.lines, self.size, self._counts = [], 0, []
        return taken
