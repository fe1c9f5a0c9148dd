"""Objects over `stream_threshold` are read in ranges and decoded as a stream: every record
is delivered from every source, and an object replaced mid-read is never mixed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cloudtrail_adapter import aws, pipeline
from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from tests.support import messages
from tests.support.configs import file_config, s3_config, sqs_config
from tests.support.corpus import PREFIX, blob_records, ids, records
from tests.support.stand_in import put_objects
from tests.support.streaming import RANGE, STREAMING, stalled_mid_object
from tests.support.watch import watch_logs


@pytest.fixture(autouse=True)
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "STREAM_RANGE", RANGE)


async def test_a_large_s3_object_streams_in_ranges_next_to_whole_ones(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    big, small = blob_records(300, 1), records(40, 2)
    big_body = log_file(big)
    assert len(big_body) > 10 * RANGE
    delivery = dataclasses.replace(STREAMING, stream_threshold=len(big_body) - 1)
    await put_objects(
        aws_options,
        bucket,
        {f"{PREFIX}big.json.gz": big_body, f"{PREFIX}small.json.gz": log_file(small)},
    )
    with watch_logs() as logs:
        assert await serve([s3_config(aws_options, bucket, lc, delivery=delivery)], state_dir) == 0

    assert lc.store.event_ids() == ids(big) + ids(small)
    streamed = {e["key"]: e["streamed"] for e in logs.named("object_decoded")}
    assert streamed == {f"{PREFIX}big.json.gz": True, f"{PREFIX}small.json.gz": False}


async def test_an_object_named_by_a_notification_streams_pinned_by_a_head(
    aws_options: AwsOptions, bucket: str, queue: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    big = blob_records(200, 3)
    key = f"{PREFIX}notified-big.json.gz"
    body = log_file(big)
    await put_objects(aws_options, bucket, {key: body})
    notification = messages.s3_event(bucket, [key], sizes=[len(body)])
    async with aws.client("sqs", aws_options) as sqs:
        await sqs.send_message(QueueUrl=queue, MessageBody=notification)
    cfg = dataclasses.replace(sqs_config(aws_options, queue, lc), delivery=STREAMING)
    with watch_logs() as logs:
        assert await serve([cfg], state_dir) == 0
    assert lc.store.event_ids() == ids(big)
    assert [e["streamed"] for e in logs.named("object_decoded")] == [True]
    assert len(logs.named("sqs_message_deleted")) == 1


async def test_a_large_local_file_streams(lc: LimaCharlieEmulator, tmp_path: Path) -> None:
    big = blob_records(200, 4)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "big.json.gz").write_bytes(log_file(big))
    assert await serve([file_config(tmp_path / "logs", lc, STREAMING)], tmp_path / "state") == 0
    assert lc.store.event_ids() == ids(big)


async def test_an_object_replaced_mid_read_fails_cleanly_and_the_new_version_is_delivered(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    """LimaCharlie holds its acks, so the stream stops early in the object (bounded queues);
    the object is replaced; the next ranged read must refuse the new version, and the
    single-load run starts the object over (seconds later, in the same run)."""
    key = f"{PREFIX}replaced.json.gz"
    old, new = blob_records(300, 5), blob_records(300, 6)
    await put_objects(aws_options, bucket, {key: log_file(old)})
    cfg = s3_config(aws_options, bucket, lc, delivery=STREAMING, retry_backoff=0.0)
    with watch_logs() as logs:
        async with stalled_mid_object(lc, cfg, state_dir) as run:
            await put_objects(aws_options, bucket, {key: log_file(new)})
        assert await run == 0

    [failed] = logs.named("object_failed")
    assert (failed["key"], failed["reason"]) == (key, "PreconditionFailed")
    shipped = set(lc.store.event_ids())
    assert shipped - set(ids(new)) < set(ids(old)), "only a prefix of the old version"
    assert set(ids(new)) <= shipped
