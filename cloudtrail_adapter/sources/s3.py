"""The S3 polling source: listing, concurrent GETs, checkpoints.

Where the bucket has CloudTrail's layout (trail_layout.py) under `prefix`, a pass finds the
accounts, kinds and regions with delimiter listings and lists only day prefixes: from the
stream's cursor (the first day that still had an object not committed when it was last
listed), or from `lookback` ago if that is earlier, so that late files are found, up to
today; within `start_time`/`end_time` when set. Checkpoints of days before that are never
needed again and are pruned with each cursor move. Without the layout, the whole prefix is
listed every pass.
"""

from __future__ import annotations

import fnmatch
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import structlog

from cloudtrail_adapter.config import S3SourceOptions
from cloudtrail_adapter.decode import is_digest_key
from cloudtrail_adapter.readers import Reader, S3Reader
from cloudtrail_adapter.sources.polling import Listed, PollingSource
from cloudtrail_adapter.sources.trail_layout import (
    DIGEST_KIND,
    Stream,
    day_prefix,
    days,
    file_time,
    is_account,
    is_org,
    logs_root,
)
from cloudtrail_adapter.state import StateStore

log = structlog.get_logger("cloudtrail_adapter.sources")

Clock = Callable[[], datetime]


class LayoutMissing(Exception):
    """accounts/regions/start_time/end_time were set, but the bucket has no CloudTrail layout."""


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
        state: StateStore,
        scope: str,
        clock: Clock = _now,
    ) -> None:
        super().__init__(
            name,
            state=state,
            scope=scope,
            container=options.bucket_name,
            poll_interval=options.poll_interval,
            single_load=options.single_load,
            quarantine_after=options.quarantine_after,
            retry_backoff=options.retry_backoff,
            max_object_size=options.max_object_size,
        )
        self._options = options
        self._s3 = s3
        self._clock = clock

    async def list_pages(self) -> AsyncIterator[list[Listed]]:
        streams = await self._streams() if self._options.layout == "auto" else None
        if streams is None:
            if self._options.by_layout:
                raise LayoutMissing(
                    f"no CloudTrail layout (AWSLogs/...) under "
                    f"s3://{self._options.bucket_name}/{self._options.prefix}: accounts, "
                    "regions, start_time and end_time need it"
                )
            async for page in self._list(self._options.prefix):
                yield page
            return
        for stream in streams:
            async for page in self._list_stream(stream):
                yield page

    async def _list(self, prefix: str) -> AsyncIterator[list[Listed]]:
        paginator = self._s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self._options.bucket_name, Prefix=prefix):
            yield [
                Listed(obj["Key"], int(obj.get("Size", 0)), str(obj.get("ETag", "")).strip('"'))
                for obj in page.get("Contents", ())
            ]

    async def _dirs(self, prefix: str) -> list[str]:
        """The names of the "folders" right under `prefix` (a delimiter listing)."""
        paginator = self._s3.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self._options.bucket_name, Prefix=prefix, Delimiter="/")
        names: list[str] = []
        async for page in pages:
            names += [p["Prefix"][len(prefix) : -1] for p in page.get("CommonPrefixes", ())]
        return names

    async def _streams(self) -> list[Stream] | None:
        """Every account/kind/region under the logs root that the prefix and the filters
        want; None when there is no CloudTrail layout, or the prefix is inside one stream
        (`.../us-east-1/2026/`), which is then listed flat."""
        root, inside = logs_root(self._options.prefix)

        def fits(folder: str) -> bool:  # on the way to the prefix, or under it
            return folder.startswith(inside) or inside.startswith(folder)

        top = await self._dirs(root)
        if not top:
            return None
        accounts: list[tuple[str, str]] = []  # (folder, account)
        for name in top:
            if is_org(name) and fits(f"{root}{name}/"):
                accounts += [(f"{root}{name}/{a}/", a) for a in await self._dirs(f"{root}{name}/")]
            elif is_account(name):
                accounts.append((f"{root}{name}/", name))
        wanted = self._options.accounts
        streams: list[Stream] = []
        for folder, account in accounts:
            if not is_account(account) or (wanted and account not in wanted) or not fits(folder):
                continue
            for kind in await self._dirs(folder):
                if not kind.startswith("CloudTrail") or kind == DIGEST_KIND:
                    continue
                for region in await self._dirs(f"{folder}{kind}/"):
                    stream = Stream(f"{folder}{kind}/{region}/", account, kind, region)
                    if self._region_wanted(region) and fits(stream.prefix):
                        streams.append(stream)
        if any(len(inside) > len(s.prefix) for s in streams):
            return None
        return streams

    def _region_wanted(self, region: str) -> bool:
        globs = self._options.regions
        return not globs or any(fnmatch.fnmatchcase(region, g) for g in globs)

    async def _list_stream(self, stream: Stream) -> AsyncIterator[list[Listed]]:
        """The stream's day prefixes from its first wanted day to today; then its cursor
        moves to the first day that had anything not committed."""
        now = self._clock()  # one "now" for the days listed, the lookback and the pruning
        first = await self._first_day(stream, now)
        if first is None:
            return
        last = (
            now.date()
            if self._options.end_time is None
            else min(now.date(), self._options.end_time.date())
        )
        cursor: date | None = None
        for day in days(first, last):
            page: list[Listed] = []
            async for listed in self._list(day_prefix(stream, day)):
                page += [item for item in listed if self._in_window(item.key)]
            if cursor is None and not self._complete(page):
                cursor = day
            if page:
                yield page
        self._move_cursor(stream, cursor or last + timedelta(days=1), now)

    async def _first_day(self, stream: Stream, now: datetime) -> date | None:
        start = self._options.start_time
        saved = self._state.cursor(self._scope, self._options.bucket_name, stream.prefix)
        if saved is None:
            return start.date() if start else await self._earliest_day(stream)
        first = min(date.fromisoformat(saved), self._lookback_day(now))
        return max(first, start.date()) if start else first

    async def _earliest_day(self, stream: Stream) -> date | None:
        """The stream's first day folder (three delimiter listings)."""
        found = stream.prefix
        for width in (4, 2, 2):
            names = sorted(n for n in await self._dirs(found) if len(n) == width and n.isdigit())
            if not names:
                return None
            found += names[0] + "/"
        try:
            return date(*map(int, found[len(stream.prefix) : -1].split("/")))
        except ValueError:
            return None

    def _lookback_day(self, now: datetime) -> date:
        return (now - timedelta(seconds=self._options.lookback)).date()

    def _in_window(self, key: str) -> bool:
        start, end = self._options.start_time, self._options.end_time
        if start is None and end is None:
            return True
        when = file_time(key)
        if when is None:
            return True  # not named by CloudTrail: its day folder is in the window
        return (start is None or when >= start) and (end is None or when < end)

    def _complete(self, page: list[Listed]) -> bool:
        """Whether every object of a day was committed (digests never are, nor need be)."""
        keys = [item.key for item in page if not is_digest_key(item.key)]
        done = self._state.committed_keys(self._scope, self._options.bucket_name, keys)
        return len(done) == len(keys)

    def _move_cursor(self, stream: Stream, cursor: date, now: datetime) -> None:
        """Days before both the cursor and the lookback are never listed again."""
        below = day_prefix(stream, min(cursor, self._lookback_day(now)))
        self._state.move_cursor(
            self._scope, self._options.bucket_name, stream.prefix, cursor.isoformat(), below
        )

    def reader(self, listed: Listed) -> Reader:
        return S3Reader(
            self._client, self._options.bucket_name, listed.key, size=listed.size, etag=listed.etag
        )

    async def _client(self) -> Any:
        return self._s3

    def describe(self, listed: Listed) -> tuple[str, dict[str, str]]:
        bucket = self._options.bucket_name
        return f"s3://{bucket}/{listed.key}", {"bucket": bucket, "key": listed.key}

    async def after_commit(self, listed: Listed) -> None:
        if self._options.delete_after_ack:
            await self._s3.delete_object(Bucket=self._options.bucket_name, Key=listed.key)
