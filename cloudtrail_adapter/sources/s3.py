"""The S3 polling source: paginated listing under a prefix, concurrent GETs, checkpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from cloudtrail_adapter.config import S3SourceOptions
from cloudtrail_adapter.readers import Reader, S3Reader
from cloudtrail_adapter.sources.polling import Listed, PollingSource
from cloudtrail_adapter.state import StateStore


class S3Source(PollingSource):
    """Never deletes an object unless `delete_after_ack` is set, and then only after commit."""

    def __init__(
        self, name: str, options: S3SourceOptions, *, s3: Any, state: StateStore, scope: str
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

    async def list_pages(self) -> AsyncIterator[list[Listed]]:
        paginator = self._s3.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self._options.bucket_name, Prefix=self._options.prefix)
        async for page in pages:
            yield [
                Listed(obj["Key"], int(obj.get("Size", 0)), str(obj.get("ETag", "")).strip('"'))
                for obj in page.get("Contents", ())
            ]

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
