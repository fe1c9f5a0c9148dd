"""The listing rows of `make bench`: what finding the files of a bucket costs, in
ListObjectsV2 calls and seconds, for a first pass (nothing checkpointed yet) and a
steady-state pass (every stream's cursor past its files), next to `layout: flat` on the
same bucket. Two buckets:

- sparse: ten years, 40 streams (4 accounts x 2 kinds x 5 regions), ~100 day folders;
- organisation: 300 accounts x 17 regions, 3 days each, ending today.

Only the listing is measured: the S3 source's passes run in this process against moto
(its own process), and every object offered is checkpointed at once, as if LimaCharlie had
acknowledged it; nothing is fetched. Calls are the source's own count (`list_calls`, the
number a test holds to the stand-in's request log); they are what AWS bills and what its
latency multiplies. Seconds are moto's, whose ListObjectsV2 scans the whole bucket per call
unless the stand-in's index is on (it is: `tests/support/stand_in.py`).
"""

from __future__ import annotations

import asyncio
import gzip
import random
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

from bench.aws_rows import upload_objects
from bench.kill_harness import aws_options
from cloudtrail_adapter import aws
from cloudtrail_adapter.config import S3SourceOptions
from cloudtrail_adapter.model import WorkItem
from cloudtrail_adapter.sources.s3 import S3Source
from cloudtrail_adapter.state import StateStore

__all__ = ["ORG_ACCOUNTS", "ListingRow", "listing_rows", "render_listing"]

BODY = gzip.compress(b'{"Records":[]}')
KINDS = ("CloudTrail", "CloudTrail-Insight")
ORG = "o-a1b2c3d4e5"
ORG_ACCOUNTS = 300
ORG_REGIONS = 17


@dataclass(frozen=True)
class ListingRow:
    bucket: str
    layout: Literal["auto", "flat"]
    first_calls: int
    first_seconds: float
    steady_calls: int
    steady_seconds: float


def sparse_keys(rng: random.Random) -> tuple[list[str], str]:
    """About 100 day folders among 40 streams over ten years."""
    keys = []
    start, span = date(2016, 1, 1), 3650
    for a in range(4):
        for kind in KINDS:
            for r in range(5):
                for _ in range(rng.choice((2, 3))):
                    day = start + timedelta(days=rng.randrange(span))
                    keys.append(_key(f"AWSLogs/11111111111{a}/", kind, f"region-{r}", day))
    return keys, f"sparse: 10 years, 40 streams, {len({k.rsplit('/', 1)[0] for k in keys})} days"


def org_keys(accounts: int, regions: int, today: date) -> tuple[list[str], str]:
    keys = [
        _key(f"AWSLogs/{ORG}/{100000000000 + a}/", "CloudTrail", f"region-{r:02d}", day)
        for a in range(accounts)
        for r in range(regions)
        for day in (today - timedelta(days=2), today - timedelta(days=1), today)
    ]
    return keys, f"organisation: {accounts} accounts x {regions} regions x 3 days"


def _key(account_folder: str, kind: str, region: str, day: date) -> str:
    account = account_folder.rstrip("/").rsplit("/", 1)[-1]
    name = f"{account}_{kind}_{region}_{day:%Y%m%d}T1205Z_{uuid.uuid4().hex[:16]}.json.gz"
    return f"{account_folder}{kind}/{region}/{day:%Y/%m/%d}/{name}"


async def passes(
    endpoint: str, bucket: str, layout: Literal["auto", "flat"], state: Path, count: int
) -> list[tuple[int, float]]:
    """`count` passes of a fresh source: (calls, seconds) each; every object offered is
    checkpointed at once. The source's clock moves on by `quiet_interval` between passes,
    so that every stream is due in each: a steady pass is every stream's listing."""
    options = S3SourceOptions(bucket_name=bucket, layout=layout)
    store = StateStore(state)
    found: list[tuple[int, float]] = []
    moments = iter(
        datetime.now(UTC) + timedelta(seconds=n * options.quiet_interval) for n in range(count)
    )
    now = next(moments)
    async with aws.client("s3", aws_options(endpoint), pool=16) as s3:
        checkpoints = store.scoped("bench").checkpoints(bucket)
        source = S3Source("bench", options, s3=s3, checkpoints=checkpoints, clock=lambda: now)
        for _ in range(count):
            out: asyncio.Queue[WorkItem] = asyncio.Queue()
            committer = asyncio.create_task(_commit_all(out))
            started = time.perf_counter()
            stats = await source.one_pass(out)
            seconds = time.perf_counter() - started
            await out.join()
            committer.cancel()
            found.append((stats.list_calls, seconds))
            now = next(moments, now)
    store.close()
    return found


async def _commit_all(items: asyncio.Queue[WorkItem]) -> None:
    while True:
        item = await items.get()
        await item.commit()
        items.task_done()


async def listing_rows(
    endpoint: str, org_accounts: int = ORG_ACCOUNTS, regions: int = ORG_REGIONS
) -> list[ListingRow]:
    """Each bucket with `layout: auto` (first pass, then the third: the second still
    starts at the cursor the first one left) and with `layout: flat`."""
    rng = random.Random(42)
    today = datetime.now(UTC).date()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ct-listing-") as tmp:
        for keys, label in (sparse_keys(rng), org_keys(org_accounts, regions, today)):
            bucket = await upload_objects([(k, BODY) for k in keys], aws_options(endpoint))
            auto = await passes(endpoint, bucket, "auto", Path(tmp) / f"{bucket}-auto.db", 3)
            flat = await passes(endpoint, bucket, "flat", Path(tmp) / f"{bucket}-flat.db", 2)
            rows.append(ListingRow(label, "auto", *auto[0], *auto[2]))
            rows.append(ListingRow(label, "flat", *flat[0], *flat[1]))
    return rows


def render_listing(rows: list[ListingRow]) -> str:
    head = f"{'listing: bucket':<58}{'layout':>7}{'first pass':>20}{'steady pass':>20}"
    lines = [head, f"{'':<65}{'calls':>10}{'seconds':>10}{'calls':>10}{'seconds':>10}"]
    for r in rows:
        lines.append(
            f"{r.bucket:<58}{r.layout:>7}{r.first_calls:>10,}{r.first_seconds:>10.2f}"
            f"{r.steady_calls:>10,}{r.steady_seconds:>10.2f}"
        )
    return "\n".join(lines)
