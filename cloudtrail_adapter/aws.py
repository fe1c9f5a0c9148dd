"""aiobotocore clients for a source: credentials, endpoint, retries, the bucket's region."""

from __future__ import annotations

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
    """The configured region, else the one S3 reports for the bucket (HeadBucket's header)."""
    if aws.region:
        return aws.region
    async with client("s3", aws) as s3:
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
