"""The steps of an `s3:` document: the bucket's region, the listing with the layout it finds,
a read of the newest log file (which proves `kms:Decrypt` where the trail is SSE-KMS), and
with `integrity.verify` CloudTrail's `ListPublicKeys`.

Everything here reads: HeadBucket, ListObjectsV2, HeadObject, one ranged GetObject of the
object's first bytes (pinned to its ETag, as the daemon reads ranges), ListPublicKeys. The
layout is found as the daemon finds it (`trail_listing.discover`); the first and last day
are walked in a few streams only, so that a check of an organisation's bucket stays a few
hundred calls.
"""

from __future__ import annotations

import contextlib
import fnmatch
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, cast

from botocore.exceptions import ClientError

from cloudtrail_adapter import aws
from cloudtrail_adapter.aio import gather_limited
from cloudtrail_adapter.check.denials import (
    AWS_ERRORS,
    aws_failure,
    bucket_arn,
    is_refusal,
    object_arn,
)
from cloudtrail_adapter.check.identity import AwsAccess
from cloudtrail_adapter.check.steps import Step, skipped
from cloudtrail_adapter.config import S3SourceOptions
from cloudtrail_adapter.decoding.decode import GZIP_MAGIC
from cloudtrail_adapter.errors import aws_error_code
from cloudtrail_adapter.integrity.keys import PublicKeys
from cloudtrail_adapter.readers import S3Reader, owner_checked, owner_header
from cloudtrail_adapter.sources.polling import Listed
from cloudtrail_adapter.sources.trail_layout import (
    DIGEST_FOLDER,
    Stream,
    day_of,
    day_prefix,
    file_time,
    is_digest_key,
)
from cloudtrail_adapter.sources.trail_listing import Layout, Level, discover

__all__ = ["s3_step_names", "s3_steps"]

#: Streams whose first and last day are walked (six calls each), and at once.
DAY_STREAMS = 16
PARALLEL = 8
SHOWN = 5  # accounts or regions named in the line
_NOT_FOUND = frozenset({"404", "NoSuchBucket", "NotFound"})
Edges = tuple[date | None, date | None]  # a stream's first and last day
Dated = tuple[Stream, date | None, date]  # a stream with files, its first day and its last


def s3_step_names(src: S3SourceOptions) -> tuple[str, ...]:
    return ("region", "list", "get_object", *(("public_keys",) if src.integrity.verify else ()))


async def s3_steps(access: AwsAccess, src: S3SourceOptions) -> AsyncIterator[Step]:
    region_step, region = await _region(access, src)
    yield region_step
    found = _Found()
    if region is None:
        for step in skipped(
            access.source, ("list", "get_object"), "the bucket's region is unknown"
        ):
            yield step
    else:
        async with access.client("s3", region) as s3:
            found = await _list(access, src, s3, region)
            assert found.step is not None
            yield found.step
            if found.step.failed:
                yield skipped(access.source, ("get_object",), "the listing failed")[0]
            else:
                yield await _read(access, src, s3, region, found.newest)
    if src.integrity.verify:
        yield await _public_keys(access, found, region)


# -- the bucket's region ---------------------------------------------------------------------


class _Answers:
    """An S3 client for `aws.discover_region` that keeps every error it answered: discovery
    raises the last (GovCloud's), and the one a person needs is often the first."""

    def __init__(self, s3: Any, errors: list[ClientError]) -> None:
        self._s3 = s3
        self._errors = errors

    async def head_bucket(self, **params: Any) -> Any:
        try:
            return await self._s3.head_bucket(**params)
        except ClientError as exc:
            self._errors.append(exc)
            raise


async def _region(access: AwsAccess, src: S3SourceOptions) -> tuple[Step, str | None]:
    """Where the bucket is, asked as the daemon asks when no region is set; a configured
    region that differs is a warning (S3 redirects, at a cost on every request)."""
    bucket, configured = src.bucket_name, access.cfg.aws.region
    tried = f"HeadBucket {bucket}"
    errors: list[ClientError] = []
    try:
        async with contextlib.AsyncExitStack() as stack:

            async def s3_in(region: str) -> Any:
                made = await stack.enter_async_context(access.client("s3", region))
                return _Answers(made, errors)

            found = await aws.discover_region(s3_in, bucket)
    except AWS_ERRORS as exc:
        return _region_failed(access, src, tried, _telling(errors) or exc)
    if configured and configured != found:
        said = f"the bucket is in {found}, but region: {configured} is set"
        fix = f"set region: {found}, or leave it out (it is discovered)"
        return Step(access.source, "region", "warning", tried, said, fix=fix), configured
    how = "as configured" if configured else "discovered; set region: to skip this call"
    return Step(access.source, "region", "passed", tried, f"{found} ({how})"), found


def _telling(errors: list[ClientError]) -> ClientError | None:
    """A refusal or "no such bucket" says more than GovCloud not knowing our keys."""
    for exc in errors:
        if is_refusal(exc) or aws_error_code(exc) in _NOT_FOUND:
            return exc
    return errors[0] if errors else None


def _region_failed(
    access: AwsAccess, src: S3SourceOptions, tried: str, exc: BaseException
) -> tuple[Step, str | None]:
    bucket, configured = src.bucket_name, access.cfg.aws.region
    if aws_error_code(exc) in _NOT_FOUND:
        said = f"no bucket named {bucket} ({aws_error_code(exc)})"
        return Step(access.source, "region", "failed", tried, said, fix="check bucket_name"), None
    failed = aws_failure(
        access.source,
        "region",
        tried,
        exc,
        action="s3:ListBucket",
        resource=bucket_arn(bucket, configured),
        grantee=access.grantee,
    )
    if configured and is_refusal(exc):  # the listing will say the same; go on in that region
        return replace(
            failed, status="warning", result=f"{failed.result}; using {configured}"
        ), configured
    return failed, None


# -- the listing -----------------------------------------------------------------------------


@dataclass
class _Found:
    """The listing's step, the file to read, and the regions whose digests it saw."""

    step: Step | None = None
    newest: Listed | None = None
    digest_regions: list[str] = field(default_factory=list)


class _Levels:
    """Delimiter listings of the bucket, as the S3 source makes them, counted."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket
        self.calls = 0

    async def __call__(self, prefix: str) -> Level:
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=prefix, Delimiter="/"
        )
        found = Level([], [])
        async for page in pages:
            self.calls += 1
            found.folders.extend(p["Prefix"] for p in page.get("CommonPrefixes", ()))
            found.keys.extend(_listed(page))
        return found


async def _list(access: AwsAccess, src: S3SourceOptions, s3: Any, region: str) -> _Found:
    levels = _Levels(s3, src.bucket_name)
    where = f"s3://{src.bucket_name}/{src.prefix}"
    try:
        if src.layout == "flat":
            return await _flat(access, src, s3, where, "layout: flat")
        layout = await discover(
            levels,
            src.prefix,
            lambda account: not src.accounts or account in src.accounts,
            lambda name: not src.regions or any(fnmatch.fnmatchcase(name, g) for g in src.regions),
            digests=src.integrity.verify,
        )
        if layout is None:
            if src.by_layout:
                said = f"no CloudTrail layout (AWSLogs/...) under {where}"
                fix = "accounts, regions, start_time and end_time need it: check prefix"
                tried = f"ListObjectsV2 {where} by folder"
                return _Found(Step(access.source, "list", "failed", tried, said, fix=fix))
            return await _flat(access, src, s3, where, "no CloudTrail layout under the prefix")
        return await _layout(access, src, levels, layout, where)
    except AWS_ERRORS as exc:
        failed = aws_failure(
            access.source,
            "list",
            f"ListObjectsV2 {where}",
            exc,
            action="s3:ListBucket",
            resource=bucket_arn(src.bucket_name, region),
            grantee=access.grantee,
        )
        return _Found(failed)


async def _flat(access: AwsAccess, src: S3SourceOptions, s3: Any, where: str, why: str) -> _Found:
    """One page of the prefix: enough to prove the listing and find a file to read."""
    page = await s3.list_objects_v2(Bucket=src.bucket_name, Prefix=src.prefix)
    contents = [c for c in page.get("Contents", ()) if not is_digest_key(str(c["Key"]))]
    tried = f"ListObjectsV2 {where} (one page; {why})"
    if not contents:
        return _Found(
            Step(access.source, "list", "warning", tried, "no log files under the prefix yet")
        )
    newest = max(contents, key=lambda c: c["LastModified"])
    more = " or more" if page.get("IsTruncated") else ""
    said = f"{len(contents)}{more} files, the newest {newest['Key']}"
    return _Found(
        Step(access.source, "list", "passed", tried, said), _listed({"Contents": [newest]})[0]
    )


async def _layout(
    access: AwsAccess, src: S3SourceOptions, levels: _Levels, layout: Layout, where: str
) -> _Found:
    logs = sorted(s for s in layout.streams if s.kind != DIGEST_FOLDER)
    digests = sorted({s.region for s in layout.streams if s.kind == DIGEST_FOLDER})
    walked = logs[:DAY_STREAMS]
    edges = await gather_limited([_edges_of(levels, s) for s in walked], PARALLEL)
    dated: list[Dated] = [
        (s, first, last) for s, (first, last) in zip(walked, edges, strict=True) if last
    ]
    newest = await _newest(levels, max(dated, key=lambda d: d[2])) if dated else None
    said = _layout_said(logs, dated, len(walked), layout)
    tried = f"ListObjectsV2 {where} by folder ({levels.calls} calls)"
    if newest is None:
        step = Step(access.source, "list", "warning", tried, f"{said}; no log file found yet")
        return _Found(step, None, digests)
    return _Found(Step(access.source, "list", "passed", tried, said), newest, digests)


def _edges_of(levels: _Levels, stream: Stream) -> Callable[[], Awaitable[Edges]]:
    async def edges() -> Edges:
        first = await _edge_day(levels, stream, newest=False)
        return first, await _edge_day(levels, stream, newest=True)

    return edges


async def _edge_day(levels: _Levels, stream: Stream, *, newest: bool) -> date | None:
    """A stream's first (or last) day folder, down its YYYY/, MM/ and DD/ folders."""
    folder, parts = stream.prefix, tuple[str, ...]()
    for _ in range(3):
        found = await levels(folder)
        dated = [(f, (*parts, f[len(folder) : -1])) for f in found.folders]
        dated = [(f, p) for f, p in dated if day_of(p) is not None]
        if not dated:
            return None
        folder, parts = (max if newest else min)(dated, key=lambda d: d[1])
    return day_of(parts)


async def _newest(levels: _Levels, dated: Dated) -> Listed | None:
    stream, _, last = dated
    keys = [k for k in (await levels(day_prefix(stream, last))).keys if not is_digest_key(k.key)]
    return max(keys, key=lambda k: (file_time(k.key) or 0, k.key), default=None) if keys else None


def _layout_said(
    logs: list[Stream],
    dated: list[Dated],
    walked: int,
    layout: Layout,
) -> str:
    accounts = sorted({s.account for s in logs})
    regions = sorted({s.region for s in logs})
    said = (
        f"{_some(accounts, 'account')}, {_some(regions, 'region')}, {_count(len(logs), 'stream')}"
    )
    firsts = [f for _, f, _ in dated if f]
    lasts = [last for _, _, last in dated if last]
    if firsts and lasts:
        said += f", days {min(firsts).isoformat()} to {max(lasts).isoformat()}"
        if walked < len(logs):
            said += f" (of the first {walked} streams)"
    off = layout.off.where()
    if off:
        said += f"; {len(off)} off the layout, shipped as found"
    passed_over = {reason: len(folders) for reason, folders in layout.passed_over.items()}
    if passed_over:
        said += "; passed over: " + ", ".join(
            f"{n} {reason}" for reason, n in sorted(passed_over.items())
        )
    return said


def _some(names: list[str], what: str) -> str:
    shown = ", ".join(names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")
    return f"{_count(len(names), what)} ({shown})"


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _listed(page: dict[str, Any]) -> list[Listed]:
    return [
        Listed(c["Key"], int(c.get("Size", 0)), str(c.get("ETag", "")).strip('"'))
        for c in page.get("Contents", ())
    ]


# -- reading the newest file -----------------------------------------------------------------


async def _read(
    access: AwsAccess, src: S3SourceOptions, s3: Any, region: str, newest: Listed | None
) -> Step:
    if newest is None:
        said = "no log file to read: s3:GetObject (and kms:Decrypt) are proven by the first one"
        return Step(access.source, "get_object", "unproven", "GetObject", said)
    bucket, key = src.bucket_name, newest.key
    tried = f"GetObject s3://{bucket}/{key}"
    refused = {"action": "s3:GetObject", "resource": object_arn(bucket, key, region)}
    try:
        async with owner_checked(s3, bucket, key, src.bucket_owner):
            head = await s3.head_object(Bucket=bucket, Key=key, **owner_header(src.bucket_owner))
    except AWS_ERRORS as exc:
        return aws_failure(
            access.source, "get_object", tried, exc, grantee=access.grantee, **refused
        )
    kms_key = head.get("SSEKMSKeyId") if head.get("ServerSideEncryption") == "aws:kms" else None
    try:
        size = int(head.get("ContentLength", 0))
        first = await _first_bytes(s3, bucket, newest, size, src.bucket_owner)
    except AWS_ERRORS as exc:
        if kms_key and is_refusal(exc):
            refused = {"action": "kms:Decrypt", "resource": str(kms_key)}
            fix = f"allow it for {access.grantee} in the key's policy (and its IAM policy)"
            return aws_failure(
                access.source, "get_object", tried, exc, grantee=access.grantee, fix=fix, **refused
            )
        return aws_failure(
            access.source, "get_object", tried, exc, grantee=access.grantee, **refused
        )
    return Step(access.source, "get_object", "passed", tried, _read_said(head, first, kms_key))


async def _first_bytes(s3: Any, bucket: str, listed: Listed, size: int, owner: str | None) -> bytes:
    """The object's first bytes, read as the daemon reads a range (S3Reader)."""
    if size == 0:
        return b""

    async def client() -> Any:
        return s3

    reader = S3Reader(client, bucket, listed.key, size=size, etag=listed.etag, owner=owner)
    chunks = cast(AsyncGenerator[bytes, None], reader.chunks(len(GZIP_MAGIC)))
    async with contextlib.aclosing(chunks):
        return await anext(chunks, b"")


def _read_said(head: dict[str, Any], first: bytes, kms_key: Any) -> str:
    size = int(head.get("ContentLength", 0))
    form = "gzip" if first.startswith(GZIP_MAGIC) else "not gzip"
    said = f"read ({size} bytes, {form})"
    sse = head.get("ServerSideEncryption")
    if kms_key:
        return f"{said}, SSE-KMS with {kms_key}: kms:Decrypt proven"
    if sse:
        return f"{said}, encrypted by S3 ({sse}): no KMS key involved"
    return f"{said}, not encrypted"


# -- CloudTrail's public keys ----------------------------------------------------------------


async def _public_keys(access: AwsAccess, found: _Found, region: str | None) -> Step:
    """ListPublicKeys in each region whose digests the layout shows (the bucket's region
    when it shows none): the integrity check asks each digest's own region."""
    regions = found.digest_regions or [region or aws.DEFAULT_REGION]
    tried = f"cloudtrail:ListPublicKeys in {', '.join(regions)}"
    async with contextlib.AsyncExitStack() as stack:

        async def cloudtrail_in(name: str) -> Any:
            return await stack.enter_async_context(access.client("cloudtrail", name))

        keys = PublicKeys(cloudtrail_in)
        now = time.time()
        try:
            counts = [len(await keys.listed(name, now - 86400, now)) for name in regions]
        except AWS_ERRORS as exc:
            fix = f"allow it for {access.grantee} (it takes no resource: *)"
            return aws_failure(
                access.source,
                "public_keys",
                tried,
                exc,
                action="cloudtrail:ListPublicKeys",
                resource="*",
                grantee=access.grantee,
                fix=fix,
            )
    said = f"{sum(counts)} keys valid in the last day"
    if not found.digest_regions:
        fix = f"turn on the trail's log file validation, or let prefix reach {DIGEST_FOLDER}/"
        return Step(
            access.source,
            "public_keys",
            "warning",
            tried,
            f"{said}; but no digest folders found",
            fix=fix,
        )
    return Step(access.source, "public_keys", "passed", tried, said)
