"""The stages between a source and a sink: the fetchers, the batcher, the committer.

    source --WorkItem--> [work queue] --> fetchers (read; decode and pack, mostly off the loop)
           --(progress, packs)--> [decoded queue] --> batcher --Batch--> sink.send()

A *fetcher* is one of this pipeline's asyncio tasks (`parallel_fetch` of them): it reads an
item and has it decoded. *Workers* are the processes of the executor (workers.py), where the
CPU work (decompressing, splitting, compressing) happens: a fetcher hands the pool an
object's bytes and gets back deflate fragments of at most a batch each (batches.py); an
object of a few KiB is packed on the loop instead, the pool's round trip costing more. The
batcher joins fragments, of one object or of many small ones, into gzip batches by
concatenation, so the batcher only moves bytes: it never looks at a record and never
compresses.

Every queue is bounded and `sink.send` waits while LimaCharlie's window is full, so a slow
LimaCharlie slows decoding, which slows the source: memory is bounded by queue sizes times
what one object may hold (its compressed bytes when held, and one step of its text: never
more than packing's whole-object bound of it, whatever its compression ratio), never by the
size of the input.

A worker that dies costs only the object it was decoding (WorkerDied); the others in the
pool with it are decoded again at once (WorkerLost). Each decoding call off the loop is
recorded by the item's source before and after it (WorkItem.attempts), so that an object
whose decoding keeps killing its worker, or the daemon, is quarantined after DECODE_DEATHS.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import structlog

from cloudtrail_adapter.acks import AckTracker, ItemProgress
from cloudtrail_adapter.aio import ByteBudget
from cloudtrail_adapter.config import DeliveryOptions, RecordFilter
from cloudtrail_adapter.decoding.batches import drop_lines, gzip_batch
from cloudtrail_adapter.decoding.filters import Matcher, merge_counts
from cloudtrail_adapter.decoding.packing import (
    CHUNK,
    SALVAGEABLE,
    Decoding,
    Salvaging,
    chunks_of,
    decoding,
    file_chunks,
    pack_held,
    pack_step,
)
from cloudtrail_adapter.decoding.stream_decode import STEP_OUTPUT, StreamDecoder
from cloudtrail_adapter.decoding.values import (
    DecodeError,
    Fragment,
    LimitReason,
    PackedObject,
    PackLimits,
    TooLargeForWhole,
    Unreadable,
)
from cloudtrail_adapter.dedup import BatchFlights, Deduplicator, Flight
from cloudtrail_adapter.errors import aws_refused_us, failure_reason
from cloudtrail_adapter.model import AckToken, Batch, DedupStats, PipelineStats, WorkItem
from cloudtrail_adapter.workers import WorkerDied, WorkerLost

log = structlog.get_logger("cloudtrail_adapter.pipeline")

SendBatch = Callable[[Batch], Awaitable[None]]
STREAM_RANGE = CHUNK  # compressed bytes per ranged read of a large object
#: Decoding calls on one object that may die (its worker, or the daemon, killed during one)
#: before the object is quarantined (`decode_killed`) instead of decoded again. Two, not
#: one: a worker may be killed for another's sake (the OOM killer picks by size).
DECODE_DEATHS = 2
#: Bytes to reserve per compressed byte before packing an object: the input and its batches
#: (gzip level 1 of CloudTrail is ~1.3x its level-6 input) are held here at once.
WHOLE_RATIO = 3


@dataclass(frozen=True)
class Decoded:
    progress: ItemProgress
    fragments: Sequence[Fragment]
    size: int  # bytes of `fragments`, held in the buffer budget until batched
    flights: Sequence[Flight | None]  # the keys each fragment claimed (de-duplication)


#: Keeps a damaged object's unreadable parts (state.SourceState.set_aside): by its ref.
SetAside = Callable[[str, Sequence[Unreadable]], None]


class Pipeline:
    """One source's stages. `work` is the queue its source fills."""

    def __init__(
        self,
        name: str,
        *,
        send: SendBatch,
        tracker: AckTracker,
        delivery: DeliveryOptions,
        fetchers: int,
        executor: Executor | None = None,
        keep: RecordFilter | None = None,
        dedup: Deduplicator | None = None,
        set_aside: SetAside | None = None,
        hash_content: bool = False,
    ) -> None:
        self.name = name
        self._set_aside = set_aside
        self.stats = PipelineStats()
        self.work: asyncio.Queue[WorkItem] = asyncio.Queue(maxsize=fetchers * 2)
        # None: the fetchers went idle.
        self._decoded: asyncio.Queue[Decoded | None] = asyncio.Queue(maxsize=2)
        self._send = send
        self._tracker = tracker
        self._delivery = delivery
        self._fetchers = fetchers
        self._executor = executor
        self.dedup = dedup
        self._limits = PackLimits(
            delivery.batch_max_records,
            delivery.batch_max_bytes,
            max_inflated=delivery.max_inflated_size,
            keep=Matcher.of(keep),
            dedup=dedup is not None,
            hash_content=hash_content,
        )
        # The daemon's own records (integrity events): no filter, no hash.
        self._own_limits = dataclasses.replace(self._limits, keep=None, hash_content=False)
        self._busy = 0  # fetchers with an item
        self._waiting = 0  # fetchers waiting for the budget or for room in the decoded queue
        # Decoded records not yet batched: with the sink's window and the batch size, this
        # bounds memory however slow LimaCharlie is and however large the objects.
        self._budget = ByteBudget(delivery.max_buffered_bytes)

    @property
    def buffered_bytes(self) -> int:
        return self._budget.used

    @property
    def queue_depth(self) -> int:
        return self.work.qsize()

    @property
    def dedup_stats(self) -> DedupStats | None:
        return None if self.dedup is None else self.dedup.stats

    async def run(self) -> None:
        """Runs the fetchers and the batcher until cancelled."""
        try:
            async with asyncio.TaskGroup() as tasks:
                for _ in range(self._fetchers):
                    tasks.create_task(self._fetcher())
                tasks.create_task(self._batcher())
        except BaseExceptionGroup as group:  # the first failure is the pipeline's failure
            raise group.exceptions[0] from None

    async def drained(self) -> None:
        """Returns once every item put so far was decoded and then committed or failed."""
        await self.work.join()
        await self._tracker.wait_idle()

    async def _fetcher(self) -> None:
        while True:
            item = await self.work.get()
            self._busy += 1
            try:
                progress = self._tracker.open(item)
                await self._read(item, progress)
            finally:
                self._busy -= 1
                self.work.task_done()
            if not self._busy and self.work.empty():
                await self._decoded.put(None)  # the batcher need not wait out its linger

    async def _read(self, item: WorkItem, progress: ItemProgress) -> None:
        """Held in memory, or from ranges for large objects (packing.decoding says which); a
        failure is logged and the item released, never committed."""
        try:
            size = await item.reader.size()
            self.stats.bytes_loaded += size
            mode = decoding(size, self._delivery.stream_threshold, self._limits)
            streamed = mode == "ranges"
            if streamed:
                kind, total = await self._from_ranges(item, progress)
            else:
                kind, total = await self._held(item, progress, size, mode)
        except DecodeError as exc:
            self._failed(item, progress, exc.reason, str(exc))
            return
        except Exception as exc:  # a fetch error: the source offers the item again later
            refused = aws_refused_us(exc)
            if refused is not None:  # the source's failure, not the object's
                raise refused from exc
            self._failed(item, progress, failure_reason(exc), str(exc))
            return
        self.stats.objects_decoded += 1
        self.stats.records_decoded += total
        log.debug(
            "object_decoded",
            ref=item.ref,
            kind=kind,
            records=total,
            streamed=streamed,
            **item.log_fields,
        )

    async def _held(
        self, item: WorkItem, progress: ItemProgress, size: int, mode: Decoding
    ) -> tuple[str, int]:
        """Read into memory, then decoded whole here or in the executor, or in steps in a
        thread, as `mode` (packing.decoding, decided once in `_read`) says; in steps too when
        its text turns out too large to decode whole."""
        limits = self._own_limits if item.own else self._limits
        reserved = await self._reserve(min(size * WHOLE_RATIO, self._budget.limit))
        try:
            data = await item.reader.read()
            if len(data) != size:  # a size a notification announced: the bytes read decide
                mode = decoding(len(data), self._delivery.stream_threshold, limits)
            packed = await self._whole(item, data, limits, mode)
        except BaseException:
            self._budget.release(reserved)
            raise
        if packed is None:
            try:  # the reservation covers the data and its steps' fragments
                return await self._stream(
                    item, progress, _chunks(data), _again(data), limits, reserve=False
                )
            finally:
                self._budget.release(reserved)
        del data
        try:
            self._keep_unreadable(item, packed.unreadable)
        except BaseException:
            self._budget.release(reserved)
            raise
        self._hand_hash(item, packed.content_sha256)
        reserved = self._budget.resize(reserved, _size(packed.fragments))
        self._tracker.set_total(progress, packed.records)
        self._report_oversized(item, packed.oversized)
        merge_counts(self.stats.records_filtered, packed.dropped)
        await self._hand_on(progress, packed.fragments, reserved)
        return packed.kind, packed.records

    async def _whole(
        self, item: WorkItem, data: bytes, limits: PackLimits, mode: Decoding
    ) -> PackedObject | None:
        """The object decoded whole (inline on the loop, or in a worker); None when it is to
        be decoded in steps, as `mode` says or as its text's size turned out."""
        try:
            if mode == "inline":
                return pack_held(data, limits)
            if mode == "whole":
                return await self._in_pool(item, pack_held, data, limits)
        except TooLargeForWhole:
            pass
        return None

    async def _in_pool(
        self, item: WorkItem, work: Callable[..., PackedObject], *args: object
    ) -> PackedObject:
        """A call in the worker pool, with its attempt recorded around it. When a worker
        dies, the calls that were in the pool with it are not at fault (WorkerLost): they
        go again at once, and count nothing."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                with self._attempt(item):
                    log.debug("object_decoding", ref=item.ref, **item.log_fields)
                    return await loop.run_in_executor(self._executor, work, *args)
            except WorkerLost as exc:
                log.warning("object_requeued", ref=item.ref, error=str(exc), **item.log_fields)

    @contextlib.contextmanager
    def _attempt(self, item: WorkItem) -> Iterator[None]:
        """One decoding call off the loop (in a worker, or a step in a thread), recorded by
        the item's source before it starts and after it ends (WorkItem.attempts). One that
        never ended (the daemon died in it), or whose worker died, counts as a death; at
        DECODE_DEATHS the object is quarantined (`decode_killed`) instead of decoded again,
        so that an object that kills whoever decodes it cannot do so forever."""
        attempts = item.attempts
        deaths = attempts.begin() if attempts is not None else 0
        died = False
        try:
            if deaths >= DECODE_DEATHS:
                raise _killed("decode_killed", deaths, "an earlier run died decoding it")
            yield
        except WorkerDied as exc:
            died = True
            deaths = attempts.end(died=True) if attempts is not None else deaths + 1
            reason: LimitReason = "decode_killed" if deaths >= DECODE_DEATHS else "worker_died"
            raise _killed(reason, deaths, str(exc)) from None
        finally:
            if attempts is not None and not died:
                attempts.end(died=False)

    async def _from_ranges(self, item: WorkItem, progress: ItemProgress) -> tuple[str, int]:
        """Records go on as they are decoded; the total is known, and the item can commit,
        only once the whole object was read."""
        limits = self._own_limits if item.own else self._limits
        chunks = item.reader.chunks(STREAM_RANGE)
        again = functools.partial(self._spooled, item)
        return await self._stream(item, progress, chunks, again, limits, reserve=True)

    async def _stream(
        self,
        item: WorkItem,
        progress: ItemProgress,
        chunks: AsyncIterator[bytes],
        again: Callable[[], AbstractAsyncContextManager[Iterator[bytes]]],
        limits: PackLimits,
        *,
        reserve: bool,
    ) -> tuple[str, int]:
        """An object decoded a step at a time as `chunks` of it come, each step's fragments
        handed on; refused for damage, salvaged from the start (`again` gives the object
        once more). The decoder keeps state between steps, so its steps run in a thread
        (its inflate and compress release the GIL), not in the pool. `reserve`: each step
        reserves its room in the budget (else the caller's reservation covers it)."""
        decoder = StreamDecoder(hash_content=limits.hash_content, max_inflated=limits.max_inflated)
        total = 0
        dropped: dict[str, int] = {}  # filled by the decoding thread, read after it
        step = functools.partial(pack_step, decoder, limits, dropped)
        try:
            async for chunk in chunks:
                decoder.feed(chunk)
                while not decoder.hungry:
                    total += await self._step(item, progress, step, reserve=reserve)
            summary = decoder.finish()
        except DecodeError as exc:
            if exc.reason not in SALVAGEABLE:
                raise
            async with again() as source:
                salvaging = Salvaging(source, limits, exc)
                return await self._salvage(item, progress, salvaging, reserve=reserve)
        self._hand_hash(item, summary.content_sha256)
        self._tracker.set_total(progress, total)
        self._report_oversized(item, summary.oversized)
        merge_counts(self.stats.records_filtered, dropped.items())
        return summary.kind, total

    async def _salvage(
        self, item: WorkItem, progress: ItemProgress, salvaging: Salvaging, *, reserve: bool
    ) -> tuple[str, int]:
        """An object the stream decoder refused, salvaged a step at a time from its start
        (packing.Salvaging). Records handed on before the refusal go again, as on any
        retry; de-duplication drops them when it is on. The content's SHA-256 is taken of
        the text salvaged, the whole of it (the stream decoder's, cut short by the refusal,
        is not used)."""
        total = 0
        while not salvaging.done:
            total += await self._step(item, progress, salvaging.step, reserve=reserve)
        self._keep_unreadable(item, salvaging.unreadable)
        self._hand_hash(item, salvaging.content_sha256)
        self._tracker.set_total(progress, total)
        self._report_oversized(item, tuple(salvaging.oversized))
        merge_counts(self.stats.records_filtered, salvaging.dropped.items())
        return "log", total

    @contextlib.asynccontextmanager
    async def _spooled(self, item: WorkItem) -> AsyncIterator[Iterator[bytes]]:
        """The object read again from its start into a file, compressed as it is read (its
        size, not its text's), for the salvage to read at its own pace."""
        with tempfile.TemporaryFile() as raw:
            async for chunk in item.reader.chunks(STREAM_RANGE):
                await asyncio.to_thread(raw.write, chunk)
            yield file_chunks(raw)

    async def _step(
        self,
        item: WorkItem,
        progress: ItemProgress,
        step: Callable[[], list[Fragment]],
        *,
        reserve: bool,
    ) -> int:
        reserved = await self._reserve(STEP_OUTPUT) if reserve else 0
        try:
            with self._attempt(item):
                fragments = await asyncio.to_thread(step)
        except BaseException:
            self._budget.release(reserved)
            raise
        reserved = self._budget.resize(reserved, _size(fragments))
        await self._hand_on(progress, fragments, reserved)
        return sum(f.records for f in fragments)

    @staticmethod
    def _hand_hash(item: WorkItem, sha256: str | None) -> None:
        """The content's SHA-256, taken while it was decoded, to whoever asked for it (the
        integrity check): whole, in steps, from ranges or salvaged alike."""
        if item.hashed is not None and sha256 is not None:
            item.hashed(sha256)

    def _keep_unreadable(self, item: WorkItem, parts: Sequence[Unreadable]) -> None:
        """A damaged object's unreadable parts go to the state database before the object
        can commit (its total is not known before), so its commit never forgets them."""
        if not parts:
            return
        if self._set_aside is not None:
            self._set_aside(item.ref, parts)
        for part in parts:
            reasons = self.stats.records_unreadable
            reasons[part.reason] = reasons.get(part.reason, 0) + 1
        log.warning(
            "records_unreadable",
            ref=item.ref,
            count=len(parts),
            reasons=sorted({p.reason for p in parts}),
            parts=[p.describe() for p in parts[:10]],
            **item.log_fields,
        )

    def _report_oversized(self, item: WorkItem, oversized: tuple[tuple[int, int], ...]) -> None:
        """Delivered all the same (an audit event is never dropped), but worth knowing."""
        if not oversized:
            return
        self.stats.records_oversized += len(oversized)
        log.warning(
            "records_oversized",
            ref=item.ref,
            count=len(oversized),
            largest=max(size for _, size in oversized),
            indexes=[index for index, _ in oversized[:10]],
            **item.log_fields,
        )

    async def _hand_on(
        self, progress: ItemProgress, fragments: Sequence[Fragment], reserved: int
    ) -> None:
        """To the batcher, once duplicates are screened out. Keys claimed here are given
        back if the fragments never reach the batcher."""
        flights: Sequence[Flight | None] = (None,) * len(fragments)
        try:
            if self.dedup is not None:
                fragments, flights = await self._screen(progress, fragments)
            if not fragments:
                self._budget.release(reserved)
                return
            entry = Decoded(progress, fragments, reserved, flights)
            if not self._decoded.full():
                self._decoded.put_nowait(entry)
                return
            with self._waiting_for("queue"):
                await self._decoded.put(entry)
        except BaseException:
            self._abandon([f for f in flights if f is not None])
            raise

    async def _screen(
        self, progress: ItemProgress, fragments: Sequence[Fragment]
    ) -> tuple[list[Fragment], list[Flight | None]]:
        """Drops the records whose eventID was delivered or is in flight (dedup.py); a
        fragment that loses some is recompressed in the executor, one that loses all is
        left out."""
        assert self.dedup is not None
        loop = asyncio.get_running_loop()
        kept: list[Fragment] = []
        flights: list[Flight | None] = []
        try:
            for part in fragments:
                flight, drop = self.dedup.screen(progress, part)
                if len(drop) == part.records:
                    continue  # claimed nothing, so nothing can wait on it
                flights.append(flight)
                if drop:
                    part = await self._recompress(loop, part, drop)
                kept.append(part)
        except BaseException:
            self._abandon([f for f in flights if f is not None])
            raise
        return kept, flights

    async def _recompress(
        self, loop: asyncio.AbstractEventLoop, part: Fragment, drop: Sequence[int]
    ) -> Fragment:
        """drop_lines in the pool: again at once if another worker's death cost the call."""
        while True:
            try:
                return await loop.run_in_executor(self._executor, drop_lines, part, drop)
            except WorkerLost:
                continue
            except WorkerDied as exc:
                raise DecodeError("worker_died", str(exc)) from None

    def _abandon(self, flights: Sequence[Flight]) -> None:
        assert self.dedup is not None
        for progress in self.dedup.abandon(flights):
            self._tracker.fail(
                progress,
                "duplicate_not_sent",
                "a record it shares with another object was not sent; read again",
            )

    async def _reserve(self, amount: int) -> int:
        if self._budget.fits(amount):
            return await self._budget.reserve(amount)
        with self._waiting_for("budget"):
            return await self._budget.reserve(amount)

    @contextlib.contextmanager
    def _waiting_for(self, what: str) -> Iterator[None]:
        """Downstream is full (LimaCharlie is the bottleneck); when every fetcher waits, the
        pipeline holds all the memory its bounds allow. The log line keeps the name it had
        when fetchers were called workers: test harnesses wait on it."""
        self._waiting += 1
        log.debug("worker_waiting", on=what, waiting_workers=self._waiting)
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
            ref=item.ref,
            reason=reason,
            error=detail,
            **item.log_fields,
        )

    async def _batcher(self) -> None:
        """Joins fragments into batches bounded by count, bytes and linger."""
        loop = asyncio.get_running_loop()
        forming = _Forming()
        deadline = 0.0
        while True:
            timeout = None if forming.empty else max(0.0, deadline - loop.time())
            try:
                async with asyncio.timeout(timeout):
                    entry = await self._decoded.get()
            except TimeoutError:
                await self._flush(forming.take())
                continue
            if entry is None:  # every fetcher is idle: lingering would only delay
                if not forming.empty:
                    await self._flush(forming.take())
                continue
            for part, flight in zip(entry.fragments, entry.flights, strict=True):
                if forming.full(self._limits, part):
                    await self._flush(forming.take())
                if forming.empty:
                    deadline = loop.time() + self._delivery.batch_linger
                forming.add(entry.progress, part, flight)
            self._budget.release(entry.size)  # the batch's own bound takes over

    async def _flush(self, forming: _Forming) -> None:
        payload, raw_bytes = gzip_batch(forming.fragments)  # concatenation: no compressing
        parts = forming.parts()
        if forming.flights:  # first: keys are stored before any item is credited
            assert self.dedup is not None
            parts = ((BatchFlights(self.dedup, forming.flights), 0), *parts)
        batch = Batch(payload, forming.records, raw_bytes, parts)
        await self._send(batch)
        self.stats.batches_sent += 1
        self.stats.records_sent += batch.records


def _size(fragments: Sequence[Fragment]) -> int:
    return sum(len(f.deflate) for f in fragments)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    """An object held in memory, as the chunks a ranged read would give."""
    for chunk in chunks_of(data):
        yield chunk


def _again(data: bytes) -> Callable[[], AbstractAsyncContextManager[Iterator[bytes]]]:
    """An object held in memory, from its start once more (for a salvage)."""
    return lambda: contextlib.nullcontext(chunks_of(data))


def _killed(reason: LimitReason, deaths: int, why: str) -> DecodeError:
    return DecodeError(
        reason, f"{why}; decoding it died {deaths} time(s) of {DECODE_DEATHS} allowed"
    )


class _Forming:
    """Fragments being joined into the next batch, and how many records came from each item
    (in order)."""

    def __init__(self) -> None:
        self.fragments: list[Fragment] = []
        self.flights: list[Flight] = []
        self.records = 0
        self.size = 0
        self._counts: list[tuple[ItemProgress, int]] = []

    @property
    def empty(self) -> bool:
        return not self.fragments

    def full(self, limits: PackLimits, part: Fragment) -> bool:
        if not self.fragments:
            return False
        return (
            self.records + part.records > limits.max_records
            or self.size + part.raw_bytes + 1 > limits.max_bytes
        )

    def add(self, progress: ItemProgress, part: Fragment, flight: Flight | None) -> None:
        self.fragments.append(part)
        if flight is not None and not flight.empty:
            self.flights.append(flight)
        self.records += part.records
        self.size += part.raw_bytes + 1
        if self._counts and self._counts[-1][0] is progress:
            self._counts[-1] = (progress, self._counts[-1][1] + part.records)
        else:
            self._counts.append((progress, part.records))

    def parts(self) -> tuple[tuple[AckToken, int], ...]:
        return tuple(self._counts)

    def take(self) -> _Forming:
        taken = _Forming()
        taken.fragments, taken.records, taken.size = self.fragments, self.records, self.size
        taken._counts, taken.flights = self._counts, self.flights
        self.fragments, self.records, self.size, self._counts = [], 0, 0, []
        self.flights = []
        return taken
