"""What the S3 and file sources share: list, skip what is done or in work, offer the rest.

A listed object is offered once per pass unless it is already checkpointed or still in
work from an earlier pass; a failed object is released and offered again on the next pass,
after its backoff, until `quarantine_after` attempts; one failed for a reason retrying
cannot help (values.SET_ASIDE_AT_ONCE: too much text, too much damage, decoding it killed
its worker twice) is quarantined at once.

A single-load run is a job that should end with everything done: an object that failed in
a way that may mend (a fault of S3 or the network, not a decode error or a refusal) is
offered again within the run, in another pass once everything is settled, after seconds
rather than the long-running daemon's minutes, until it is done or quarantined. It ignores
the backoff other runs recorded: only quarantine makes it skip an object.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Final, get_args

import structlog

from cloudtrail_adapter.aio import Stopped, unless_stopped
from cloudtrail_adapter.decoding.values import SET_ASIDE_AT_ONCE, DecodeReason
from cloudtrail_adapter.errors import Backoff
from cloudtrail_adapter.model import ListingStats, SourceStats, WorkItem
from cloudtrail_adapter.readers import Reader
from cloudtrail_adapter.sources.trail_layout import is_digest_key
from cloudtrail_adapter.state import Checkpoints

log = structlog.get_logger("cloudtrail_adapter.sources")

#: The reason an object over `max_object_size` is quarantined with, before any fetch (the
#: others are the pipeline's: a decode reason or AWS's error code).
TOO_LARGE: Final = "too_large"


@dataclass(frozen=True, slots=True)
class Listed:
    key: str
    size: int
    etag: str = ""


@dataclass
class PassStats:
    listed: int = 0
    offered: int = 0
    skipped_done: int = 0
    skipped_digest: int = 0
    skipped_in_work: int = 0
    skipped_failing: int = 0
    too_large: int = 0
    outside_window: int = 0  # listed, but outside start_time/end_time
    off_layout: int = 0  # listed from places off the CloudTrail layout (and offered)
    list_calls: int = 0  # ListObjectsV2 requests
    listing_done: bool = False  # `offered` is final


#: A single-load run's passes again after failures wait this long (1 s, doubling, to 30 s);
#: what it records as "retry later" is as short, so that the next run never waits long.
SINGLE_LOAD_BACKOFF: Final = Backoff(1.0, 30.0, jitter=0.25)
#: Failures another try does not mend: the content, the size, or who may read it.
LASTING: Final = frozenset(
    {*get_args(DecodeReason), "too_large", "wrong_bucket_owner", "AccessDenied", "NoSuchKey"}
)

#: What `stats` sums over passes.
_SUMMED = ("list_calls", "off_layout", "outside_window", "skipped_digest")


class PollingSource(ABC):
    """Subclasses list and load; this class decides what to offer and commits checkpoints."""

    def __init__(
        self,
        name: str,
        *,
        checkpoints: Checkpoints,
        poll_interval: float,
        single_load: bool,
        quarantine_after: int,
        retry_backoff: float,
        max_object_size: int,
    ) -> None:
        self.name = name
        self._checkpoints = checkpoints
        self._poll_interval = poll_interval
        self._single_load = single_load
        self._quarantine_after = quarantine_after
        self._retry_backoff = retry_backoff
        self._max_object_size = max_object_size
        self._in_work: set[str] = set()
        self._idle = asyncio.Event()  # set while nothing is in work
        self._idle.set()
        self._stop = asyncio.Event()
        self._too_large = 0
        self.current_pass = PassStats()  # what the pass under way listed and offered so far
        self._earlier = PassStats()  # the sums of the passes before it
        self._quarantined: Counter[str] = Counter()  # objects quarantined since start, by reason
        self._failed_attempts: Counter[str] = Counter()  # key -> attempts failed, until commit
        self._recovered = 0  # failed attempts of objects committed later in the run
        self._mendable: set[str] = set()  # keys failed in a way that may mend, this round
        self._round = 0  # single-load passes again after failures

    @abstractmethod
    def list_pages(self) -> AsyncIterator[list[Listed]]:
        """Everything currently there, a page at a time, digests included."""

    @abstractmethod
    def reader(self, listed: Listed) -> Reader: ...

    @abstractmethod
    def describe(self, listed: Listed) -> tuple[str, dict[str, str]]:
        """A reference for logs (`s3://bucket/key`) and the log fields naming it."""

    def problems(self) -> int:
        """Objects refused before fetching; the pipeline counts the ones that failed later."""
        return self._too_large

    def recovered(self) -> int:
        """Failed attempts (which the pipeline counted) of objects committed later."""
        return self._recovered

    def stop_intake(self) -> None:
        self._stop.set()

    async def hand_back(self) -> None:  # noqa: B027 (nothing to do, by design)
        """Nothing to give back: an uncommitted object is simply offered again next time."""

    async def after_commit(self, listed: Listed) -> None:  # noqa: B027 (optional hook)
        """Runs after the checkpoint is written (the S3 source may delete the object)."""

    def on_page(self, page: list[Listed]) -> None:  # noqa: B027 (optional hook)
        """Sees every page listed, digests included, before anything is offered."""

    def content_hook(self, listed: Listed) -> Callable[[str], None] | None:
        """What is given the SHA-256 of the object's uncompressed content (None: not taken)."""
        return None

    def pass_fields(self) -> dict[str, object]:
        """More for the `source_pass_done` line (the S3 source: streams and requests)."""
        return {}

    def committed(self, listed: Listed) -> None:  # noqa: B027 (optional hook)
        """The checkpoint is written; runs before the object leaves the work in hand."""

    def released(self, listed: Listed, reason: str) -> None:  # noqa: B027 (optional hook)
        """The object failed this time (`reason`: a decode reason or AWS's error code)."""

    async def run(self, out: asyncio.Queue[WorkItem]) -> None:
        """One pass in single-load mode; otherwise a pass every poll interval, until stopped."""
        try:
            while True:
                stats = await unless_stopped(self._stop, self.one_pass(out))
                log.info(
                    "source_pass_done",
                    listed=stats.listed,
                    offered=stats.offered,
                    already_done=stats.skipped_done,
                    digests=stats.skipped_digest,
                    in_work=stats.skipped_in_work,
                    failing=stats.skipped_failing,
                    too_large=stats.too_large,
                    outside_window=stats.outside_window,
                    off_layout=stats.off_layout,
                    list_calls=stats.list_calls,
                    **self.pass_fields(),
                )
                if self._single_load:
                    if not await unless_stopped(self._stop, self._again_soon()):
                        return
                    continue
                await unless_stopped(self._stop, asyncio.sleep(self._poll_interval))
        except Stopped:
            return

    async def _again_soon(self) -> bool:
        """Once everything offered is settled: whether anything failed in a way that may
        mend, and then after a pause of seconds (more each round) another pass is due."""
        await self.idle()
        if not self._mendable:
            return False
        count = len(self._mendable)
        self._mendable.clear()
        self._round += 1
        delay = SINGLE_LOAD_BACKOFF.delay(self._round)
        log.warning("single_load_retrying", objects=count, round=self._round, retry_in=delay)
        await asyncio.sleep(delay)
        return True

    def stats(self) -> SourceStats:
        """Since start (the passes done and the one under way), and the pass under way."""
        now = self.current_pass
        total = {name: getattr(self._earlier, name) + getattr(now, name) for name in _SUMMED}
        listing = ListingStats(
            list_calls=total["list_calls"],
            off_layout=total["off_layout"],
            digests=total["skipped_digest"],
            outside_window=total["outside_window"],
            quarantined=dict(self._quarantined),
            offered=now.offered,
            listing_done=now.listing_done,
        )
        return SourceStats(listing=listing)

    async def one_pass(self, out: asyncio.Queue[WorkItem]) -> PassStats:
        finished = self.current_pass
        for name in _SUMMED:
            setattr(self._earlier, name, getattr(self._earlier, name) + getattr(finished, name))
        stats = self.current_pass = PassStats()
        blocked = (
            self._checkpoints.quarantined() if self._single_load else self._checkpoints.blocked()
        )
        async for page in self.list_pages():
            stats.listed += len(page)
            self.on_page(page)
            candidates = [item for item in page if self._wanted(item, stats, blocked)]
            done = self._checkpoints.committed(c.key for c in candidates)
            for listed in candidates:
                if listed.key in done:
                    stats.skipped_done += 1
                    continue
                self._start_work(listed.key)
                stats.offered += 1
                await out.put(self._work_item(listed))
        stats.listing_done = True
        return stats

    def _wanted(self, listed: Listed, stats: PassStats, blocked: set[str]) -> bool:
        if is_digest_key(listed.key):
            stats.skipped_digest += 1
            return False
        if listed.key in self._in_work:
            stats.skipped_in_work += 1
            return False
        if listed.key in blocked:
            stats.skipped_failing += 1
            return False
        if listed.size > self._max_object_size:
            stats.too_large += 1
            self._refuse_too_large(listed)
            return False
        return not listed.key.endswith("/")

    def _refuse_too_large(self, listed: Listed) -> None:
        """Fetching it would not fit the memory bound; retrying cannot help: quarantine now."""
        self._too_large += 1
        error = f"{listed.size} bytes is over max_object_size ({self._max_object_size})"
        self._failed(listed, TOO_LARGE, error, quarantine_after=1)

    def _failed(
        self, listed: Listed, reason: str, error: str, *, quarantine_after: int | None = None
    ) -> None:
        failure = self._checkpoints.record_failure(
            listed.key,
            reason=reason,
            error=error,
            quarantine_after=quarantine_after or self._quarantine_after,
            backoff=SINGLE_LOAD_BACKOFF.initial if self._single_load else self._retry_backoff,
        )
        if self._single_load and not failure.quarantined and reason not in LASTING:
            self._mendable.add(listed.key)
        _, fields = self.describe(listed)
        if failure.quarantined:
            self._quarantined[reason] += 1
            log.error(
                "object_quarantined",
                reason=reason,
                error=error,
                attempts=failure.attempts,
                **fields,
            )
        else:
            log.warning(
                "object_retry_scheduled",
                reason=reason,
                attempts=failure.attempts,
                retry_in=round(failure.retry_at - failure.last_failed),
                **fields,
            )

    def _start_work(self, key: str) -> None:
        self._in_work.add(key)
        self._idle.clear()

    def _end_work(self, key: str) -> None:
        self._in_work.discard(key)
        if not self._in_work:
            self._idle.set()

    async def idle(self) -> None:
        """Returns once nothing offered is still in work (committed or failed)."""
        await self._idle.wait()

    def _work_item(self, listed: Listed) -> WorkItem:
        ref, fields = self.describe(listed)

        async def commit() -> None:
            self._checkpoints.commit(listed.key, etag=listed.etag, size=listed.size)
            self._recovered += self._failed_attempts.pop(listed.key, 0)
            self.committed(listed)
            self._end_work(listed.key)
            await self.after_commit(listed)

        def release(reason: str, error: str) -> None:
            self._failed_attempts[listed.key] += 1
            self._end_work(listed.key)
            self.released(listed, reason)
            at_once = 1 if reason in SET_ASIDE_AT_ONCE else None
            self._failed(listed, reason, error, quarantine_after=at_once)

        return WorkItem(
            source=self.name,
            ref=ref,
            reader=self.reader(listed),
            commit=commit,
            release=release,
            log_fields=fields,
            hashed=self.content_hook(listed),
            attempts=_Attempts(self._checkpoints, listed.key),
        )


@dataclass(frozen=True, slots=True)
class _Attempts:
    """An object's decoding calls, kept with its checkpoints (model.DecodeAttempts)."""

    checkpoints: Checkpoints
    key: str

    def begin(self) -> int:
        return self.checkpoints.begin_decode(self.key)

    def end(self, *, died: bool) -> int:
        return self.checkpoints.end_decode(self.key, died=died)
