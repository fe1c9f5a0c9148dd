"""How an item's bytes are read: whole for ordinary objects, in ranges for large ones.

The pipeline asks a reader for its size and then either reads it whole or streams it in
ranges (packing.decoding decides which), so an object of any size is decoded with bounded
memory. S3 ranges are separate
short GETs pinned to the object's ETag: a stalled LimaCharlie never holds an idle S3
connection open, and an object replaced mid-stream fails cleanly instead of being mixed.
Every S3 read names the account expected to own the bucket, when there is one.

A read cut short (a reset, a body shorter than its Content-Length, a read timeout) is asked
again at once, a few times with jittered backoff, before the object counts a failed attempt:
botocore retries a request that failed, never a body that broke off halfway. A range is asked
again from its own first byte, which is the first byte not yet decoded, still pinned to the
ETag (an object replaced meanwhile fails with 412 and starts over on its next attempt); a
whole read is asked again from the start, and nothing of the broken read was decoded. The
same holds for a HeadObject.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import structlog

from cloudtrail_adapter.errors import AdapterError, Backoff, is_cut_short
from cloudtrail_adapter.limiter import AimdLimiter

log = structlog.get_logger("cloudtrail_adapter.readers")

#: A read cut short is asked this many times in all before it fails the object's attempt,
#: waiting a fifth of a second, then doubling, jittered, in between.
READ_TRIES: Final = 4
READ_BACKOFF: Final = Backoff(0.2, 2.0, jitter=0.5)

_T = TypeVar("_T")


class Reader(Protocol):
    async def size(self) -> int: ...

    async def read(self) -> bytes: ...

    def chunks(self, chunk_size: int) -> AsyncIterator[bytes]: ...


class BytesReader:
    """Records that arrived inline (an SQS message body)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def size(self) -> int:
        return len(self._data)

    async def read(self) -> bytes:
        return self._data

    async def chunks(self, chunk_size: int) -> AsyncIterator[bytes]:
        for start in range(0, len(self._data), chunk_size):
            yield self._data[start : start + chunk_size]


class FileReader:
    """`size`: the listing's, when known (as for S3): enough to choose how to read, and one
    thread hop fewer per file; what is read has the last word."""

    def __init__(self, path: Path, *, size: int | None = None) -> None:
        self._path = path
        self._size = size

    async def size(self) -> int:
        if self._size is None:
            self._size = (await asyncio.to_thread(self._path.stat)).st_size
        return self._size

    async def read(self) -> bytes:
        return await asyncio.to_thread(self._path.read_bytes)

    async def chunks(self, chunk_size: int) -> AsyncIterator[bytes]:
        with self._path.open("rb") as handle:
            while chunk := await asyncio.to_thread(handle.read, chunk_size):
                yield chunk


class S3Reader:
    """`client` gives the S3 client to use (the bucket's region may need discovering first);
    `owner`, when given, is the account every request expects to own the bucket; `limiter`,
    when given, how many requests the bucket gets at once (lowered when it throttles)."""

    def __init__(
        self,
        client: Callable[[], Awaitable[Any]],
        bucket: str,
        key: str,
        *,
        size: int | None = None,
        etag: str = "",
        owner: str | None = None,
        limiter: AimdLimiter | None = None,
    ) -> None:
        self._client = client
        self._limiter = limiter
        self._bucket = bucket
        self._key = key
        self._size = size
        self._etag = etag
        self._owner = owner
        self._object = {"Bucket": bucket, "Key": key} | owner_header(owner)

    def _owner_checked(self, s3: Any) -> AbstractAsyncContextManager[None]:
        return owner_checked(s3, self._bucket, self._key, self._owner)

    async def size(self) -> int:
        """The listing's or notification's size when known: enough to choose how to read."""
        if self._size is None:
            await self._head()
        assert self._size is not None
        return self._size

    async def _head(self) -> None:
        head = await self._again(self._head_once, "head")
        self._size = int(head["ContentLength"])
        self._etag = str(head.get("ETag", "")).strip('"')

    async def _head_once(self) -> Any:
        s3 = await self._client()
        async with self._slot(), self._owner_checked(s3):
            return await s3.head_object(**self._object)

    def _slot(self) -> AbstractAsyncContextManager[None]:
        return self._limiter.slot() if self._limiter is not None else nullcontext()

    async def read(self) -> bytes:
        return await self._again(lambda: self._get(), "whole")

    async def _get(self, **extra: str) -> bytes:
        s3 = await self._client()
        async with self._slot():
            async with self._owner_checked(s3):
                answer = await s3.get_object(**self._object, **extra)
            async with answer["Body"] as body:
                data: bytes = await body.read()
        return data

    async def _again(self, attempt: Callable[[], Coroutine[Any, Any, _T]], part: str) -> _T:
        """`attempt` once more, at once and then backing off, while it is cut short."""
        for tried in range(1, READ_TRIES + 1):
            try:
                return await attempt()
            except Exception as exc:
                if tried == READ_TRIES or not is_cut_short(exc):
                    raise
                delay = READ_BACKOFF.delay(tried) if tried > 1 else 0.0
                log.info(
                    "s3_read_retried",
                    bucket=self._bucket,
                    key=self._key,
                    part=part,
                    attempt=tried,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=round(delay, 2),
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def chunks(self, chunk_size: int) -> AsyncIterator[bytes]:
        """Ranges pinned to one ETag; without a listed ETag (a notification) the object's
        size and ETag are asked first, so a size in a notification is never trusted for
        where the object ends."""
        if not self._etag:
            await self._head()
        total = await self.size()
        pinned = {"IfMatch": f'"{self._etag}"'} if self._etag else {}
        for start in range(0, total, chunk_size):
            span = f"bytes={start}-{min(total, start + chunk_size) - 1}"
            yield await self._again(partial(self._get, Range=span, **pinned), span)


class WrongBucketOwner(AdapterError):
    """S3 refused to read an object because another account than `owner` owns its bucket:
    not ours to ship (a notification naming someone else's bucket, or a bucket name taken
    over), and asking again will not change who owns it."""

    reason = "wrong_bucket_owner"
    retriable = False

    def __init__(self, bucket: str, owner: str) -> None:
        super().__init__(
            f"bucket {bucket} is not owned by account {owner}, the expected bucket owner "
            "(expected_bucket_owner; an SQS source's default is the queue's account): "
            "its objects are not read"
        )
        self.bucket = bucket
        self.owner = owner


def owner_header(owner: str | None) -> dict[str, str]:
    """GetObject's and HeadObject's parameter for `x-amz-expected-bucket-owner`."""
    return {"ExpectedBucketOwner": owner} if owner else {}


@asynccontextmanager
async def owner_checked(s3: Any, bucket: str, key: str, owner: str | None) -> AsyncIterator[None]:
    """Names a refusal caused by the bucket's owner: S3 answers a wrong expected owner with
    the same bare 403 AccessDenied as a missing permission, so a 403 to a request that named
    `owner` is asked once more without it, as a HeadObject (metadata, never the content).
    If that one is allowed, the owner was the cause: WrongBucketOwner."""
    try:
        yield
    except Exception as exc:
        if owner is None or _http_status(exc) != 403:
            raise
        if not await _readable(s3, bucket, key):
            raise  # refused either way: a plain AccessDenied
        raise WrongBucketOwner(bucket, owner) from exc


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status of a botocore ClientError (read without importing botocore)."""
    response: Any = getattr(exc, "response", None)
    status = (
        response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(response, dict)
        else None
    )
    return status if isinstance(status, int) else None


async def _readable(s3: Any, bucket: str, key: str) -> bool:
    try:
        await s3.head_object(Bucket=bucket, Key=key)
    except Exception:  # refused, or no answer: the first error stands
        return False
    return True
