"""aiobotocore clients for a source: credentials, endpoint, retries, the bucket's region."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import ClientError

from cloudtrail_adapter.config import AwsOptions

log = structlog.get_logger("cloudtrail_adapter.aws")

DEFAULT_REGION = "us-east-1"


def _session() -> AioSession:
    return get_session()


def _client_kwargs(aws: AwsOptions, region: str, pool: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "region_name": region,
        "config": AioConfig(
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=max(10, pool),
            connect_timeout=10,
            read_timeout=60,
        ),
    }
    if aws.endpoint_url:
        kwargs["endpoint_url"] = aws.endpoint_url
    if aws.access_key and aws.secret_key:
        kwargs["aws_access_key_id"] = aws.access_key
        kwargs["aws_secret_access_key"] = aws.secret_key.reveal()
    return kwargs


@contextlib.asynccontextmanager
async def client(
    service: str, aws: AwsOptions, *, region: str | None = None, pool: int = 10
) -> AsyncIterator[Any]:
    """A client with static keys when configured, else the standard AWS credential chain."""
    kwargs = _client_kwargs(aws, region or aws.region or DEFAULT_REGION, pool)
    async with _session().create_client(service, **kwargs) as made:
        yield made


async def bucket_region(aws: AwsOptions, bucket: str) -> str:
    """The configured region, else the one S3 reports for the bucket."""
    if aws.region:
        return aws.region
    async with client("s3", aws) as s3:
        return await _head_bucket_region(s3, bucket)


async def _head_bucket_region(s3: Any, bucket: str) -> str:
    """HeadBucket answers with the bucket's region in a header, even on a 301 or 403."""
    try:
        answer = await s3.head_bucket(Bucket=bucket)
        headers = answer["ResponseMetadata"]["HTTPHeaders"]
    except ClientError as exc:
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        if "x-amz-bucket-region" not in headers:
            raise
    region = str(headers.get("x-amz-bucket-region") or DEFAULT_REGION)
    log.debug("bucket_region_discovered", bucket=bucket, region=region)
    return region


class BucketClients:
    """S3 clients per region, for objects in buckets named by notifications.

    Each bucket's region is learnt once (from the notification when it says, else from
    HeadBucket) and cached, so an object is always fetched in its own bucket's region,
    whatever the queue's region is.
    """

    def __init__(self, aws: AwsOptions, stack: contextlib.AsyncExitStack, pool: int) -> None:
        self._aws = aws
        self._stack = stack
        self._pool = pool
        self._regions: dict[str, str] = {}
        self._clients: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def for_bucket(self, bucket: str, region_hint: str | None = None) -> Any:
        async with self._lock:
            region = self._regions.get(bucket) or region_hint
            if region is None:
                region = await _head_bucket_region(await self._client(DEFAULT_REGION), bucket)
            self._regions[bucket] = region
            return await self._client(region)

    async def _client(self, region: str) -> Any:
        if region not in self._clients:
            made = client("s3", self._aws, region=region, pool=self._pool)
            self._clients[region] = await self._stack.enter_async_context(made)
        return self._clients[region]
