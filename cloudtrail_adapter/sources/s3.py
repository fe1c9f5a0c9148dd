"""The S3 polling source: listing, concurrent GETs, checkpoints.

Where the bucket has CloudTrail's layout under `prefix`, the streams are found
(trail_listing.discover) once every `discovery_interval`, and each pass lists only the
streams that are due (cadence.Schedule: every `poll_interval` while a stream delivers, up
to `quiet_interval` apart while it is quiet), and of each only day folders
(trail_listing.plan_stream): from the stream's cursor (the first day that still had an
object not committed when it was last listed), or from `lookback` before its last listing
if that is earlier, so that late files are found, up to today, in one listing sequence;
within `start_time`/`end_time` when set; from the stream's first existing day when it has
no cursor yet (or, for a stream another replica had, `lookback` before it came: shard.py).
Up to `parallel_list` streams are listed at once. Checkpoints of day folders before the
cursor and the lookback are never needed again and are pruned with each cursor move. What
does not fit the layout is listed whole every pass. Without the layout, the whole prefix is.
What the listing costs is counted and said (listing_cost.py).

With `integrity.verify`, digest folders are streams too (listed from where their log
streams are), every page goes past the integrity checker, each shipped object's hash is
handed to it on commit, and a settle follows each pass (integrity/checker.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog

from cloudtrail_adapter.aio import Stopped, gather_limited, merge_limited, unless_stopped
from cloudtrail_adapter.config import S3SourceOptions
from cloudtrail_adapter.errors import LayoutMissing
from cloudtrail_adapter.limiter import AimdLimiter, watch_throttles
from cloudtrail_adapter.model import SourceStats, ThrottlingStats, WorkItem
from cloudtrail_adapter.readers import Reader, S3Reader
from cloudtrail_adapter.sources.cadence import HOUR, Schedule
from cloudtrail_adapter.sources.listing_cost import ListingPlan, RequestCounter, report
from cloudtrail_adapter.sources.polling import Listed, PassStats, PollingSource
from cloudtrail_adapter.sources.shard import Handover, handover
from cloudtrail_adapter.sources.trail_layout import (
    DIGEST_FOLDER,
    Stream,
    day_in,
    day_prefix,
    file_time,
    is_digest_key,
    logs_of,
    place,
)
from cloudtrail_adapter.sources.trail_listing import (
    Layout,
    Level,
    OffLayout,
    StreamPlan,
    discover,
    plan_stream,
)
from cloudtrail_adapter.state import Checkpoints

if TYPE_CHECKING:
    from cloudtrail_adapter.integrity.checker import IntegrityChecker

log = structlog.get_logger("cloudtrail_adapter.sources")

Clock = Callable[[], datetime]
EXAMPLES = 10  # folders or keys named in one log line


def _now() -> datetime:
    return datetime.now(UTC)


class S3Source(PollingSource):
    """Never deletes an object unless `delete_after_ack` is set, and then only after commit."""

    def __init__(
        self,
        name: str,
        options: S3SourceOptions,
        *,
        s3: Any,
        checkpoints: Checkpoints,
        clock: Clock = _now,
        integrity: IntegrityChecker | None = None,
    ) -> None:
        super().__init__(
            name,
            checkpoints=checkpoints,
            poll_interval=options.poll_interval,
            single_load=options.single_load,
            quarantine_after=options.quarantine_after,
            retry_backoff=options.retry_backoff,
            max_object_size=options.max_object_size,
        )
        self._options = options
        self._s3 = s3
        self._clock = clock
        self._layout: Layout | None = None
        self._discovered_at: float | None = None  # monotonic; None: never
        self._reported: set[str] = set()  # folders and keys already named in a log line
        self._schedule = Schedule(options.poll_interval, options.quiet_interval)
        self._handover: Handover | None = None  # read from the state at the first pass
        self._discovery_calls = 0  # what the last discovery cost
        self._planned = -1  # streams in the last listing_plan line
        self._streams_listed = 0  # in the pass under way
        self._moved: dict[str, tuple[str, str]] = {}  # cursor and pruning last written
        self._waiting: set[str] = set()  # keys failed and waiting for their retry, this pass
        self._requests = RequestCounter()
        self._requests.attach(s3)
        self._requests_logged = self._requests.snapshot()
        self.integrity = integrity
        self._hashes: dict[str, str] = {}  # key -> SHA-256 of objects decoded, until commit
        # S3 throttles per prefix and bucket: our GETs and listings slow down when it does.
        self._fetches = AimdLimiter(options.bucket_name, "fetch", options.parallel_fetch)
        self._listings = AimdLimiter(options.bucket_name, "list", options.parallel_list)
        watch_throttles(s3)

    async def list_pages(self) -> AsyncIterator[list[Listed]]:
        layout = await self._current_layout() if self._options.layout == "auto" else None
        if layout is None:
            if self._options.by_layout:
                raise LayoutMissing(
                    f"no CloudTrail layout (AWSLogs/...) under "
                    f"s3://{self._options.bucket_name}/{self._options.prefix}: accounts, "
                    "regions, shard, start_time and end_time need it"
                )
            async for page in self._list(self._options.prefix):
                yield page
            return
        now = self._clock()  # one "now" for the days listed, the lookback and the pruning
        if self._handover is None:
            self._handover = handover(
                self._checkpoints, self._options.shard, now, self._options.lookback, self._chosen
            )
        streams = layout.streams + list(self._handover.leaving.values())
        # A single-load run's passes (the first, and those retrying what may mend) list every
        # stream: the cadence is for a long-running daemon's steady state.
        # Digest streams are listed every pass too: a digest ships no record, so by the
        # cadence's measure its stream is always quiet, and verdicts would wait for hours.
        cadenced = [s for s in streams if s.kind != DIGEST_FOLDER]
        digests = [s for s in streams if s.kind == DIGEST_FOLDER]
        due = (
            streams
            if self._options.single_load
            else self._schedule.due(cadenced, now.timestamp()) + digests
        )
        due.sort(key=lambda s: not self._schedule.is_active(s))  # the busy ones first
        self._streams_listed = len(due)
        self._waiting = self._checkpoints.blocked() - self._checkpoints.quarantined()
        limit = self._options.parallel_list
        plans = await gather_limited([partial(self._plan, s, now) for s in due], limit)
        self._announce(plans, layout)
        jobs: list[Callable[[], AsyncIterator[list[Listed] | _Listing]]]
        jobs = [partial(self._list_plan, p, now) for p in plans]
        jobs.append(partial(self._off_pages, layout.off))
        async for item in merge_limited(jobs, limit):
            if isinstance(item, _Listing):
                self._listed(item, now)
            else:
                yield item
        self._schedule.keep(layout.streams + list(self._handover.leaving.values()))
        self._report_plan(layout)

    def _chosen(self, stream: Stream) -> bool:
        """Whether the document's accounts and regions (its shard aside) take a stream."""
        return self._options.wants_account(stream.account) and self._options.wants_region(
            stream.region
        )

    async def _current_layout(self) -> Layout | None:
        """Discovery, again once `discovery_interval` has passed since the last."""
        at = time.monotonic()
        if self._discovered_at is None or at - self._discovered_at >= (
            self._options.discovery_interval
        ):
            calls = self.current_pass.list_calls
            self._layout = await discover(
                self._level,
                self._options.prefix,
                self._options.wants_account,
                self._options.wants_region,
                digests=self.integrity is not None,
                holds=self._options.holds,
            )
            self._discovered_at = at
            self._discovery_calls = self.current_pass.list_calls - calls
            if self._layout is not None:
                self._report_discovery(self._layout)
        return self._layout

    def _report_discovery(self, layout: Layout) -> None:
        log.info(
            "layout_discovered",
            bucket=self._options.bucket_name,
            streams=len(layout.streams),
            off_layout=len(layout.off.where()),
            passed_over={reason: len(f) for reason, f in layout.passed_over.items()},
        )
        digests = any(s.kind == DIGEST_FOLDER for s in layout.streams)
        if self.integrity is not None and layout.streams and not digests:
            log.warning(
                "integrity_no_digests",
                bucket=self._options.bucket_name,
                prefix=self._options.prefix,
                action="nothing to verify: is log file validation on for the trail?",
            )
        for reason, folders in layout.passed_over.items():
            new = self._unreported(folders)
            if new:
                log.info(
                    "folders_passed_over", reason=reason, count=len(new), examples=new[:EXAMPLES]
                )
        self._report_off_layout(layout.off, None)

    def _report_off_layout(self, off: OffLayout, stream: Stream | None) -> None:
        new = self._unreported(off.where())
        if new:
            log.warning(
                "off_layout_found",
                bucket=self._options.bucket_name,
                stream=stream.prefix if stream else None,
                count=len(new),
                examples=new[:EXAMPLES],
                action="listed whole and shipped every pass",
            )

    def _unreported(self, where: list[str]) -> list[str]:
        new = [w for w in where if w not in self._reported]
        self._reported.update(new)
        return new

    def listing_plan(self, layout: Layout | None = None) -> ListingPlan:
        """The listings an hour at each stream's present cadence, discovery's share, and
        the folders off the layout listed every pass."""
        found = layout or self._layout
        poll = self._options.poll_interval
        off = len(found.off.folders) if found is not None else 0
        discovery = self._discovery_calls * HOUR / max(self._options.discovery_interval, poll)
        return ListingPlan(
            streams=self._schedule.streams,
            active=self._schedule.active,
            list_calls_per_hour=self._schedule.calls_per_hour(),
            discovery_calls_per_hour=discovery + off * HOUR / poll,
            price=self._options.list_price,
        )

    def _report_plan(self, layout: Layout) -> None:
        """`listing_plan` once every stream was listed (the first pass), and again when
        discovery changes how many there are."""
        if self._single_load or self._schedule.streams == self._planned:
            return
        self._planned = self._schedule.streams
        shard = self._options.shard
        report(
            self.listing_plan(layout),
            bucket=self._options.bucket_name,
            shard=None if shard is None else str(shard),
            threshold=self._options.cost_warning,
        )

    def pass_fields(self) -> dict[str, object]:
        """The streams the pass listed, and the requests sent since the last pass line."""
        now = self._requests.snapshot()
        sent = {kind: now[kind] - self._requests_logged.get(kind, 0) for kind in now}
        self._requests_logged = now
        return {"streams_listed": self._streams_listed, "requests": sent}

    def _announce(self, plans: list[StreamPlan], layout: Layout) -> None:
        """A first start on a bucket says what it is about to list."""
        if not plans or any(p.resumed for p in plans):
            return
        found = [d for p in plans for d in p.days]
        log.info(
            "backfill_starting",
            bucket=self._options.bucket_name,
            streams=len(plans),
            day_folders=len(found),
            first_day=min(found).isoformat() if found else None,
            last_day=max(found).isoformat() if found else None,
            off_layout=len(layout.off.where()) + sum(len(p.off.where()) for p in plans),
            start_time=self._options.start_time.isoformat() if self._options.start_time else None,
        )

    async def _list(self, prefix: str, start_after: str = "") -> AsyncIterator[list[Listed]]:
        after = {"StartAfter": start_after} if start_after else {}
        async for page in self._pages(Prefix=prefix, **after):
            self.current_pass.list_calls += 1
            yield _listed(page)

    async def _pages(self, **params: str) -> AsyncIterator[dict[str, Any]]:
        """ListObjectsV2 pages, each request within the bucket's listing limit."""
        paginator = self._s3.get_paginator("list_objects_v2")
        pages = aiter(paginator.paginate(Bucket=self._options.bucket_name, **params))
        while True:
            async with self._listings.slot():
                try:
                    page: dict[str, Any] = await anext(pages)
                except StopAsyncIteration:
                    return
            yield page

    async def _level(self, prefix: str) -> Level:
        """The folders and keys right under `prefix` (a delimiter listing)."""
        found = Level([], [])
        async for page in self._pages(Prefix=prefix, Delimiter="/"):
            self.current_pass.list_calls += 1
            found.folders.extend(p["Prefix"] for p in page.get("CommonPrefixes", ()))
            found.keys.extend(_listed(page))
        return found

    async def _plan(self, stream: Stream, now: datetime) -> StreamPlan:
        saved = self._checkpoints.cursor(stream.prefix)
        if saved is None and stream.kind == DIGEST_FOLDER:
            # Digests are read from where their log files are (a digest names only files of
            # its own hour): verification switched on does not walk years of digests.
            logs = logs_of(stream.prefix)
            saved = self._checkpoints.cursor(logs)
        start = self._options.start_time.date() if self._options.start_time else None
        first: date | None = None
        if saved is not None:
            # from before the last listing's lookback: a file landing late since then
            last = self._schedule.listed_at(stream)
            since = now if last is None else min(now, datetime.fromtimestamp(last, UTC))
            first = min(date.fromisoformat(saved), self._lookback_day(since))
        elif self._handover is not None and self._handover.arrived(stream):
            first = self._handover.start(self._options.lookback)
        if start is not None:
            first = start if first is None else max(first, start)
        plan = await plan_stream(
            self._level, stream, first, self._last_day(now), resumed=saved is not None
        )
        self._report_off_layout(plan.off, stream)
        return plan

    def _last_day(self, now: datetime) -> date:
        end = self._options.end_time
        return now.date() if end is None else min(now.date(), end.date())

    async def _list_plan(
        self, plan: StreamPlan, now: datetime
    ) -> AsyncIterator[list[Listed] | _Listing]:
        """The plan's day folders, then what in the stream is off the layout; then what
        the listing found (`_Listing`: the cursor's move to the first day that had
        anything not committed, the newest file), which comes to list_pages after the
        stream's pages were taken, so that no checkpoint is pruned before the pass read
        it. Something off the layout not committed keeps the cursor where it was, so the
        next pass walks to it again."""
        seen = _Seen(plan.stream, self._in_work | self._waiting)
        pages = self._walked(plan) if plan.walked else self._span(plan)
        async for listed in pages:
            page = self._in_window(listed)
            seen.add(page, self._pending(page))
            if page:
                yield page
        async for page in self._off_pages(plan.off):
            pending = self._pending(page)
            seen.off_pending = seen.off_pending or bool(pending)
            seen.busy = seen.busy or any(k in seen.unfinished for k in pending)
            yield page
        cursor = seen.cursor(self._last_day(now))
        yield _Listing(plan.stream, cursor, seen.newest, seen.busy)

    async def _walked(self, plan: StreamPlan) -> AsyncIterator[list[Listed]]:
        """The day folders a walk found, one listing each."""
        for day in plan.days:
            async for listed in self._list(day_prefix(plan.stream, day)):
                yield listed

    async def _span(self, plan: StreamPlan) -> AsyncIterator[list[Listed]]:
        """The plan's days in one listing sequence: from the first day's folder on
        (StartAfter sorts before every key in it), until a key is past the last day's."""
        if plan.first is None:
            return
        stream = plan.stream
        end = day_prefix(stream, plan.days[-1] + timedelta(days=1))
        after = f"{stream.prefix}{plan.first:%Y/%m/%d}"
        async for listed in self._list(stream.prefix, start_after=after):
            inside = [item for item in listed if item.key < end]
            yield inside
            if len(inside) < len(listed):
                return

    def _listed(self, found: _Listing, now: datetime) -> None:
        """A stream's listing is done: its next one is scheduled, its cursor moved; a
        stream that left for another replica is forgotten once it has nothing left."""
        self._schedule.listed(found.stream, now.timestamp(), found.newest, found.busy)
        if found.cursor is None:
            return
        handing = self._handover
        prefix, lookback = found.stream.prefix, self._options.lookback
        if handing is not None and handing.finished(prefix, found.cursor, lookback):
            self._checkpoints.forget_stream(prefix)
            self._moved.pop(prefix, None)
            del handing.leaving[prefix]
            log.info("stream_handed_over", bucket=self._options.bucket_name, stream=prefix)
            return
        self._move_cursor(found.stream, found.cursor, now)

    async def _off_pages(self, off: OffLayout) -> AsyncIterator[list[Listed]]:
        """Folders off the layout listed whole, and keys off it as found."""
        if off.keys:
            self.current_pass.off_layout += len(off.keys)
            yield self._in_window(off.keys)
        for folder in off.folders:
            async for listed in self._list(folder):
                self.current_pass.off_layout += len(listed)
                yield self._in_window(listed)

    def _lookback_day(self, now: datetime) -> date:
        return (now - timedelta(seconds=self._options.lookback)).date()

    def _in_window(self, page: list[Listed]) -> list[Listed]:
        """The page's objects within start_time/end_time (all of them without a window);
        the others are counted as passed over."""
        start, end = self._options.start_time, self._options.end_time
        if start is None and end is None:
            return page
        kept = [item for item in page if _within(file_time(item.key), start, end)]
        self.current_pass.outside_window += len(page) - len(kept)
        return kept

    def _pending(self, page: list[Listed]) -> list[str]:
        """The keys of a page not committed (digests never are, nor need be)."""
        keys = [item.key for item in page if not is_digest_key(item.key)]
        done = self._checkpoints.committed(keys)
        return [key for key in keys if key not in done]

    def _move_cursor(self, stream: Stream, cursor: date, now: datetime) -> None:
        """Days before both the cursor and the lookback are never listed again. Written
        only when it changes: a quiet stream's listing mostly leaves both where they were."""
        below = day_prefix(stream, min(cursor, self._lookback_day(now)))
        moved = (cursor.isoformat(), below)
        if self._moved.get(stream.prefix) != moved:
            self._checkpoints.move_cursor(stream.prefix, *moved)
            self._moved[stream.prefix] = moved

    # ---------------------------------------------------------------------------------
    # The integrity check (none of this runs without integrity.verify)

    async def run(self, out: asyncio.Queue[WorkItem]) -> None:
        """Passes as always; a single-load run settles the integrity check once more when
        everything it offered is done, so its verdicts go out before it ends."""
        try:
            await super().run(out)
            if self.integrity is not None and self._single_load and not self._stop.is_set():
                await unless_stopped(self._stop, self._last_settle(out))
        except Stopped:
            pass
        finally:
            if self.integrity is not None:
                await self.integrity.close()

    async def one_pass(self, out: asyncio.Queue[WorkItem]) -> PassStats:
        stats = await super().one_pass(out)
        if self.integrity is not None:
            await self.integrity.settle(_Presence(self))
            for item in self.integrity.outgoing():
                await out.put(item)
        return stats

    async def _last_settle(self, out: asyncio.Queue[WorkItem]) -> None:
        assert self.integrity is not None
        await self.idle()
        await self.integrity.settle(_Presence(self))
        for item in self.integrity.outgoing():
            await out.put(item)

    def stats(self) -> SourceStats:
        """The listing's counts, its requests and plan, its throttling, and the digest
        check's when on."""
        throttling = ThrottlingStats(
            fetch_concurrency=self._fetches.limit,
            list_concurrency=self._listings.limit,
            throttled=self._fetches.throttled + self._listings.throttled,
        )
        stats = replace(super().stats(), throttling=throttling)
        if stats.listing is not None:
            plan = self.listing_plan()
            listing = replace(
                stats.listing,
                requests=self._requests.snapshot(),
                streams=plan.streams,
                streams_active=plan.active,
                monthly_cost=plan.monthly_cost,
            )
            stats = replace(stats, listing=listing)
        if self.integrity is None:
            return stats
        return replace(stats, integrity=self.integrity.stats.snapshot())

    def on_page(self, page: list[Listed]) -> None:
        if self.integrity is not None:
            self.integrity.listed(page)

    def content_hook(self, listed: Listed) -> Callable[[str], None] | None:
        if self.integrity is None:
            return None
        return partial(self._hashes.__setitem__, listed.key)

    def committed(self, listed: Listed) -> None:
        sha256 = self._hashes.pop(listed.key, None)
        if self.integrity is not None and sha256 is not None:
            self.integrity.shipped(listed.key, sha256)

    def released(self, listed: Listed, reason: str) -> None:
        self._hashes.pop(listed.key, None)
        if self.integrity is not None:
            self.integrity.failed(listed.key, reason)

    def will_list(self, key: str, now: datetime) -> bool:
        """Whether a later pass lists the folder of `key` (and would ship it)."""
        where = place(key)
        if self._options.layout == "flat" or self._layout is None or where is None:
            return True  # listed whole every pass
        if not self._options.selects(where.account, where.region):
            return False
        if not _within(file_time(key), self._options.start_time, self._options.end_time):
            return False
        year, month, day = (int(p) for p in where.folder.rstrip("/").rsplit("/", 3)[-3:])
        return date(year, month, day) >= self._lookback_day(now)

    def reader(self, listed: Listed) -> Reader:
        return S3Reader(
            self._client,
            self._options.bucket_name,
            listed.key,
            size=listed.size,
            etag=listed.etag,
            owner=self._options.bucket_owner,
            limiter=self._fetches,
        )

    async def _client(self) -> Any:
        return self._s3

    def describe(self, listed: Listed) -> tuple[str, dict[str, str]]:
        bucket = self._options.bucket_name
        return f"s3://{bucket}/{listed.key}", {"bucket": bucket, "key": listed.key}

    async def after_commit(self, listed: Listed) -> None:
        if self._options.delete_after_ack:
            await self._s3.delete_object(Bucket=self._options.bucket_name, Key=listed.key)


class _Presence:
    """What the source knows of files the integrity checker asks about."""

    def __init__(self, source: S3Source) -> None:
        self._source = source
        self._now = source._clock()

    def in_work(self, key: str) -> bool:
        return key in self._source._in_work

    def committed(self, keys: list[str]) -> set[str]:
        return self._source._checkpoints.committed(keys)

    def failing(self) -> tuple[set[str], set[str]]:
        checkpoints = self._source._checkpoints
        quarantined = checkpoints.quarantined()
        return checkpoints.blocked() - quarantined, quarantined

    def will_list(self, key: str) -> bool:
        return self._source.will_list(key, self._now)

    def oldest_in_work(self) -> float | None:
        times = [t for t in map(file_time, self._source._in_work) if t is not None]
        return min(times).timestamp() if times else None


@dataclass(frozen=True, slots=True)
class _Listing:
    """What a stream's listing found: where its cursor goes (None: stays), its newest
    file, whether it has work in hand."""

    stream: Stream
    cursor: date | None
    newest: float | None
    busy: bool  # objects in work, or failed and waiting for their retry


@dataclass
class _Seen:
    """A stream's listing as it goes: the days with keys not committed, whether a key off
    the layout is not committed, whether one is still in work or waiting for a retry (a
    key offered for the first time is neither: it is the cadence's newest file), and the
    newest time a file name holds."""

    stream: Stream
    unfinished: set[str]  # keys in work or waiting for a retry as the pass began
    incomplete: set[date] = field(default_factory=set)
    off_pending: bool = False
    newest: float | None = None
    busy: bool = False

    def add(self, page: list[Listed], pending: list[str]) -> None:
        self.busy = self.busy or any(key in self.unfinished for key in pending)
        for key in pending:
            day = day_in(self.stream, key)
            if day is None:
                self.off_pending = True
            else:
                self.incomplete.add(day)
        times = [t.timestamp() for t in map(file_time, (i.key for i in page)) if t is not None]
        if times:
            self.newest = max(times) if self.newest is None else max(self.newest, *times)

    def cursor(self, last: date) -> date | None:
        if self.off_pending:
            return None
        return min(self.incomplete) if self.incomplete else last + timedelta(days=1)


def _listed(page: dict[str, Any]) -> list[Listed]:
    return [
        Listed(obj["Key"], int(obj.get("Size", 0)), str(obj.get("ETag", "")).strip('"'))
        for obj in page.get("Contents", ())
    ]


def _within(when: datetime | None, start: datetime | None, end: datetime | None) -> bool:
    if when is None:
        return True  # not named by CloudTrail: its folder is in the window
    return (start is None or when >= start) and (end is None or when < end)
