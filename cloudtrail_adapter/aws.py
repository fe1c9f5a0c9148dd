"""aiobotocore clients for a source: credentials, endpoint, retries, the bucket's region.

Each source has one session (`source_session`), so its clients share credentials. With
`role_arn`, the session's credentials are the role's, assumed through STS with the
source's own credentials (static keys, else the standard chain) and refreshed before they
expire: early enough that a request never carries expired ones, late enough that a short
session is not re-assumed on every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.credentials import AioRefreshableCredentials
from aiobotocore.session import AioSession, get_session
from botocore.credentials import CredentialProvider
from botocore.exceptions import ClientError
from botocore.utils import parse_timestamp

from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.errors import aws_error_code

log = structlog.get_logger("cloudtrail_adapter.aws")

DEFAULT_REGION = "us-east-1"
#: Asked where a bucket is when the commercial partition refuses us other than with "no such
#: bucket" (GovCloud credentials mean nothing there), as LimaCharlie's adapter does.
GOVCLOUD_REGION = "us-gov-west-1"
_NOT_FOUND = frozenset({"404", "NoSuchBucket", "NotFound"})
#: Refresh role credentials this many seconds before they expire (botocore's own margins),
#: or a quarter (an eighth, when it must) of a shorter session, as long as STS gave it.
ADVISORY_REFRESH: Final = 15 * 60
MANDATORY_REFRESH: Final = 10 * 60


def source_session(aws: AwsOptions) -> AioSession:
    made = get_session()
    parsers = made.get_component("response_parser_factory")
    parsers.set_parser_defaults(timestamp_parser=parse_s3_timestamp)
    if aws.role_arn:
        resolver = made.get_component("credential_provider")
        resolver.insert_before("env", _RoleProvider(aws))
    return made


def parse_s3_timestamp(value: Any) -> datetime:
    """What botocore's `parse_timestamp` returns, for the two forms S3 writes, at a
    twentieth of its cost or less: dateutil takes 40-55 us a timestamp, and a
    ListObjectsV2 page carries a thousand (40 ms of CPU a page), every GetObject a
    `Last-Modified`. Any other form is botocore's to read."""
    if isinstance(value, str):
        parsed: datetime | None = None
        if len(value) in (20, 24) and value.endswith("Z") and value[10] == "T":
            with contextlib.suppress(ValueError):
                parsed = datetime.fromisoformat(value)  # 2026-12-01T10:00:00.000Z
        elif len(value) == 29 and value.endswith(" GMT"):
            with contextlib.suppress(ValueError, TypeError):
                parsed = email.utils.parsedate_to_datetime(value)  # Tue, 01 Dec 2026 ...
        if parsed is not None and parsed.utcoffset() is not None:
            return parsed
    result: datetime = parse_timestamp(value)
    return result


class _RoleProvider(CredentialProvider):  # type: ignore[misc]
    """Assumes `aws.role_arn`; botocore calls `load` once, then the credentials refresh."""

    METHOD = "assume-role"
    CANONICAL_NAME = "cloudtrail-adapter-role"

    def __init__(self, aws: AwsOptions) -> None:
        super().__init__()
        self._aws = aws

    async def load(self) -> AioRefreshableCredentials:
        first = await self._assume()
        lasts = (datetime.fromisoformat(first["expiry_time"]) - datetime.now(UTC)).total_seconds()
        return AioRefreshableCredentials.create_from_metadata(
            first,
            refresh_using=self._assume,
            method=self.METHOD,
            advisory_timeout=min(ADVISORY_REFRESH, lasts / 4),
            mandatory_timeout=min(MANDATORY_REFRESH, lasts / 8),
        )

    async def _assume(self) -> dict[str, str]:
        aws = self._aws
        params: dict[str, Any] = {
            "RoleArn": aws.role_arn,
            "RoleSessionName": aws.role_session_name,
            "DurationSeconds": aws.role_session_duration,
        }
        if aws.external_id is not None:
            params["ExternalId"] = aws.external_id.reveal()
        kwargs = _client_kwargs(dataclasses.replace(aws, role_arn=None), _region(aws), 10)
        async with get_session().create_client("sts", **kwargs) as sts:
            answer = (await sts.assume_role(**params))["Credentials"]
        expiry: datetime = answer["Expiration"]
        log.info("role_assumed", role_arn=aws.role_arn, expires=expiry.isoformat())
        return {
            "access_key": answer["AccessKeyId"],
            "secret_key": answer["SecretAccessKey"],
            "token": answer["SessionToken"],
            "expiry_time": expiry.isoformat(),
        }


def _region(aws: AwsOptions) -> str:
    return aws.region or DEFAULT_REGION


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
    if aws.access_key and aws.secret_key and not aws.role_arn:  # else the session's
        kwargs["aws_access_key_id"] = aws.access_key
        kwargs["aws_secret_access_key"] = aws.secret_key.reveal()
    return kwargs


@contextlib.asynccontextmanager
async def client(
    service: str,
    aws: AwsOptions,
    *,
    region: str | None = None,
    pool: int = 10,
    session: AioSession | None = None,
) -> AsyncIterator[Any]:
    """A client of `session` (by default a new one for `aws`): static keys when configured,
    else the standard AWS credential chain; the role's credentials with `role_arn`."""
    kwargs = _client_kwargs(aws, region or _region(aws), pool)
    async with (session or source_session(aws)).create_client(service, **kwargs) as made:
        yield made


async def bucket_region(aws: AwsOptions, bucket: str, session: AioSession | None = None) -> str:
    """The configured region, else the one S3 reports for the bucket."""
    if aws.region:
        return aws.region
    async with contextlib.AsyncExitStack() as stack:

        async def s3_in(region: str) -> Any:
            made = client("s3", aws, region=region, session=session)
            return await stack.enter_async_context(made)

        return await discover_region(s3_in, bucket)


async def discover_region(s3_in: Callable[[str], Awaitable[Any]], bucket: str) -> str:
    """Asks the commercial partition, then GovCloud unless the first said the bucket does
    not exist; a failure in both names both answers."""
    try:
        return await _head_bucket_region(await s3_in(DEFAULT_REGION), bucket)
    except ClientError as exc:
        first = aws_error_code(exc) or "error"
        if first in _NOT_FOUND:
            raise
        log.info("bucket_region_trying_govcloud", bucket=bucket, commercial_error=first)
    try:
        return await _head_bucket_region(await s3_in(GOVCLOUD_REGION), bucket)
    except ClientError as exc:
        log.warning(
            "bucket_region_unknown",
            bucket=bucket,
            commercial_error=first,
            govcloud_error=aws_error_code(exc) or "error",
        )
        raise


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

    def __init__(
        self,
        aws: AwsOptions,
        stack: contextlib.AsyncExitStack,
        pool: int,
        session: AioSession | None = None,
    ) -> None:
        self._aws = aws
        self._session = session or source_session(aws)
        self._stack = stack
        self._pool = pool
        self._regions: dict[str, str] = {}
        self._clients: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def for_bucket(self, bucket: str, region_hint: str | None = None) -> Any:
        async with self._lock:
            region = self._regions.get(bucket) or region_hint
            if region is None:
                region = await discover_region(self._client, bucket)
            self._regions[bucket] = region
            return await self._client(region)

    async def _client(self, region: str) -> Any:
        if region not in self._clients:
            made = client("s3", self._aws, region=region, pool=self._pool, session=self._session)
            self._clients[region] = await self._stack.enter_async_context(made)
        return self._clients[region]
