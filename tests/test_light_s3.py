"""The organisation row's light S3 (bench/light_s3.py) answers ListObjectsV2 as moto does
for every form the daemon sends, and the row itself runs, small and fast, and finds
every file it lands: the bench's figures are only worth what its stand-in is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.kill_harness import aws_options as options_for
from bench.org import OrgSetup, light_s3, org_row, render_org
from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions
from tests.support.stand_in import put_objects

pytestmark = pytest.mark.e2e  # servers and the daemon of their own

KEYS = [
    "AWSLogs/111111111111/CloudTrail/us-east-1/2026/11/19/a.json.gz",
    "AWSLogs/111111111111/CloudTrail/us-east-1/2026/11/20/b.json.gz",
    "AWSLogs/111111111111/CloudTrail/us-east-1/2026/11/20/c.json.gz",
    "AWSLogs/111111111111/CloudTrail/us-east-1/2026/11/21/d.json.gz",
    "AWSLogs/111111111111/CloudTrail/us-west-2/2026/11/20/e.json.gz",
    "AWSLogs/111111111111/CloudTrail-Insight/us-east-1/2026/11/20/f.json.gz",
    "AWSLogs/222222222222/CloudTrail/us-east-1/2026/11/20/g.json.gz",
    "AWSLogs/stray.txt",
    "top.txt",
]
ASKED: list[dict[str, Any]] = [
    {"Prefix": ""},
    {"Prefix": "", "Delimiter": "/"},
    {"Prefix": "AWSLogs/", "Delimiter": "/"},
    {"Prefix": "AWSLogs/111111111111/", "Delimiter": "/"},
    {"Prefix": "AWSLogs/111111111111/CloudTrail/", "Delimiter": "/"},
    {
        "Prefix": "AWSLogs/111111111111/CloudTrail/us-east-1/",
        "StartAfter": "AWSLogs/111111111111/CloudTrail/us-east-1/2026/11/20",
    },
    {"Prefix": "AWSLogs/111111111111/CloudTrail/us-east-1/2026/11/20/"},
    {"Prefix": "AWSLogs/", "MaxKeys": 2},
    {"Prefix": "AWSLogs/", "Delimiter": "/", "MaxKeys": 1},
    {"Prefix": "nothing/"},
]


async def every_page(
    s3: Any, bucket: str, asked: dict[str, Any]
) -> list[tuple[list[str], list[str]]]:
    pages = []
    async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, **asked):
        keys = [o["Key"] for o in page.get("Contents", ())]
        folders = [p["Prefix"] for p in page.get("CommonPrefixes", ())]
        pages.append((keys, folders))
    return pages


async def test_the_light_s3_lists_as_moto_does(aws_options: AwsOptions, bucket: str) -> None:
    await put_objects(aws_options, bucket, dict.fromkeys(KEYS, b"x"))
    async with light_s3() as light:
        await light.put(KEYS)
        light_options = options_for(light.url)
        async with aws.client("s3", aws_options) as moto, aws.client("s3", light_options) as ours:
            for asked in ASKED:
                expected = await every_page(moto, bucket, asked)
                assert await every_page(ours, light.bucket, asked) == expected, asked
            got = await ours.get_object(Bucket=light.bucket, Key=KEYS[0])
            async with got["Body"] as body:
                assert len(await body.read()) > 0
        (seen,) = (await light.objects([KEYS[0]])).values()
        assert seen[1] is not None and seen[2] == 1  # the first GET, and how many


async def test_the_organisation_row_runs_small_and_misses_nothing(tmp_path: Path) -> None:
    setup = OrgSetup(
        accounts=3,
        regions=4,
        active=0.25,
        tick=1.0,
        window=2.0,
        landing=4.0,
        woken=2,
        source={"poll_interval": 0.5, "quiet_interval": 1.0},
    )
    row = await org_row(tmp_path, setup)
    assert row.missed == 0 and row.fetched_twice == 0 and row.late is not None
    assert row.landed == 4 * 3 + 2 + 1 and len(row.woken) == 2
    assert row.first_calls > setup.streams  # discovery, then a walk of every stream
    assert "organisation, 3 accounts x 4 regions, 25% active" in render_org(row)
