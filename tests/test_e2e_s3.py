"""S3 bucket -> decode -> LimaCharlie emulator, through the real daemon entry point."""

from __future__ import annotations

import dataclasses
import gzip
import uuid
from collections import Counter
from pathlib import Path

import orjson

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions, DeliveryOptions
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from tests.support.configs import INSTALLATION_KEY, WEBHOOK_SECRET, s3_config

# Also imported from here by test_dashboard.py and test_monitoring.py (not this change's to
# edit) until they import tests.support; the lint ban on test modules exempts them till then.
from tests.support.corpus import PREFIX, records
from tests.support.stand_in import put_objects
from tests.support.watch import watch_logs


def mixed_bucket() -> tuple[dict[str, bytes], Counter[str]]:
    """Every shape the spine must take: sizes 0/1/1000/20000, plain JSON, gzip without .gz,
    a zero-byte object, `{"Records":[]}` and a digest file that must be skipped."""
    sets = {
        "empty_records": [],
        "one": records(1, 1),
        "thousand": records(1000, 2),
        "twenty_thousand": records(20_000, 3),
        "plain": records(7, 4),
        "no_suffix": records(5, 5),
    }
    objects = {
        f"{PREFIX}111122223333_CloudTrail_us-east-1_20261124T1200Z_empty.json.gz": log_file([]),
        f"{PREFIX}111122223333_CloudTrail_us-east-1_20261124T1205Z_one.json.gz": log_file(
            sets["one"]
        ),
        f"{PREFIX}111122223333_CloudTrail_us-east-1_20261124T1210Z_1k.json.gz": log_file(
            sets["thousand"]
        ),
        f"{PREFIX}111122223333_CloudTrail_us-east-1_20261124T1215Z_20k.json.gz": log_file(
            sets["twenty_thousand"]
        ),
        f"{PREFIX}plain.json": log_file(sets["plain"], gzipped=False),
        f"{PREFIX}gzip-without-suffix": log_file(sets["no_suffix"]),
        f"{PREFIX}zero-bytes.json.gz": b"",
        "AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail-Digest/us-east-1/2026/11/24/"
        "111122223333_CloudTrail-Digest_us-east-1_trail_us-east-1_20261124T120000Z.json.gz": (
            gzip.compress(b'{"digestStartTime":"2026-11-24T11:00:00Z","logFiles":[]}')
        ),
    }
    expected = Counter(str(r["eventID"]) for rs in sets.values() for r in rs)
    return objects, expected


async def test_every_record_arrives_once_and_a_second_run_sends_nothing(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    objects, expected = mixed_bucket()
    await put_objects(aws_options, bucket, objects)
    cfg = s3_config(aws_options, bucket, lc)

    assert await serve([cfg], state_dir) == 0
    assert lc.store.event_ids() == expected
    assert sum(expected.values()) == 21_013

    assert await serve([cfg], state_dir) == 0
    assert len(lc.store.events) == sum(expected.values()), "the second run re-sent records"


async def test_each_line_is_one_compact_cloudtrail_record(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    recs = records(3, 9)
    pretty = orjson.dumps({"Records": recs}, option=orjson.OPT_INDENT_2)
    await put_objects(aws_options, bucket, {f"{PREFIX}pretty.json": pretty})

    assert await serve([s3_config(aws_options, bucket, lc)], state_dir) == 0

    assert sorted((e.json() for e in lc.store.events), key=lambda r: r["eventID"]) == sorted(
        recs, key=lambda r: r["eventID"]
    )
    assert all(b"\n" not in e.raw and b"  " not in e.raw[:40] for e in lc.store.events)


async def test_connection_dropped_mid_stream_loses_nothing(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    objects, expected = mixed_bucket()
    await put_objects(aws_options, bucket, objects)
    lc.usp_faults.drop_after_messages = 5

    assert await serve([s3_config(aws_options, bucket, lc)], state_dir) == 0

    accepted = lc.store.event_ids()
    assert set(accepted) == set(expected), "records were lost across the reconnect"
    assert lc.usp.connections >= 2, "the fault never fired"


async def test_usp_window_is_never_exceeded(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    objects, expected = mixed_bucket()
    await put_objects(aws_options, bucket, objects)
    lc.usp_faults.window = 2
    delivery = DeliveryOptions(batch_max_records=100, batch_linger=0.01)

    assert await serve([s3_config(aws_options, bucket, lc, delivery=delivery)], state_dir) == 0

    assert lc.store.event_ids() == expected
    assert 1 <= lc.usp.max_unacked_seen <= 2


async def test_webhook_sink_delivers_the_same_corpus(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    objects, expected = mixed_bucket()
    await put_objects(aws_options, bucket, objects)
    lc.webhook_faults.statuses = [503, 429]

    assert await serve([s3_config(aws_options, bucket, lc, webhook=True)], state_dir) == 0

    assert lc.store.event_ids() == expected
    assert {e.transport for e in lc.store.events} == {"webhook"}


async def test_refused_handshake_is_a_clear_failure_without_secrets(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    await put_objects(aws_options, bucket, {f"{PREFIX}one.json.gz": log_file(records(2, 11))})
    lc.usp_faults.handshake_error = "invalid installation key"

    with watch_logs() as logs:
        assert await serve([s3_config(aws_options, bucket, lc)], state_dir) == 1

    failed = logs.named("source_failed")
    assert failed and "invalid installation key" in failed[0]["error"]
    assert INSTALLATION_KEY not in repr(logs.entries)
    assert WEBHOOK_SECRET not in repr(logs.entries)
    assert len(lc.store.events) == 0


async def test_objects_are_never_deleted_by_default(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    from cloudtrail_adapter import aws

    objects, _ = mixed_bucket()
    await put_objects(aws_options, bucket, objects)
    assert await serve([s3_config(aws_options, bucket, lc)], state_dir) == 0
    async with aws.client("s3", aws_options) as s3:
        listed = await s3.list_objects_v2(Bucket=bucket)
    assert len(listed["Contents"]) == len(objects)


async def test_a_bucket_in_another_region_is_found_and_read_there(
    aws_options: AwsOptions, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    """No region configured: the bucket's region is asked of S3 (as LimaCharlie's adapter
    does) and every request goes there."""
    far = f"trail-ap-{uuid.uuid4().hex[:8]}"
    async with aws.client("s3", aws_options, region="ap-southeast-2") as s3:
        await s3.create_bucket(
            Bucket=far, CreateBucketConfiguration={"LocationConstraint": "ap-southeast-2"}
        )
    recs = records(9, 96)
    await put_objects(aws_options, far, {f"{PREFIX}far.json.gz": log_file(recs)})
    unset = dataclasses.replace(aws_options, region=None)

    with watch_logs() as logs:
        assert await serve([s3_config(unset, far, lc)], state_dir) == 0

    assert lc.store.event_ids() == Counter(str(r["eventID"]) for r in recs)
    [found] = logs.named("bucket_region_discovered")
    assert (found["bucket"], found["region"]) == (far, "ap-southeast-2")
