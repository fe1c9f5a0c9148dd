"""SQS notifications -> objects or inline records -> LimaCharlie emulator -> delete.

Everything runs through the real daemon entry point against moto in server mode."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from tests.support import messages
from tests.support.configs import sqs_config
from tests.support.corpus import PREFIX, ids, records
from tests.support.process import stop_daemon

# Also imported from here by test_dashboard.py and test_monitoring.py (not this change's to
# edit) until they import tests.support; the lint ban on test modules exempts them till then.
from tests.support.stand_in import depth, put_objects, send
from tests.support.watch import eventually, watch_logs

KEY_A = f"{PREFIX}111122223333_CloudTrail_us-east-1_20261124T1200Z_a b:c.json.gz"
KEY_B = f"{PREFIX}111122223333_CloudTrail_us-east-1_20261124T1205Z_second.json.gz"


OBJECT_SHAPES: dict[str, Callable[[str], str]] = {
    "s3_event": lambda b: messages.s3_event(b, [KEY_A, KEY_B]),
    "s3_event_in_sns": lambda b: messages.sns_envelope(messages.s3_event(b, [KEY_A, KEY_B])),
    "cloudtrail_sns": lambda b: messages.cloudtrail_sns(b, [KEY_A, KEY_B]),
    "cloudtrail_sns_in_sns": lambda b: messages.sns_envelope(
        messages.cloudtrail_sns(b, [KEY_A, KEY_B])
    ),
    "eventbridge_object_created": lambda b: messages.eventbridge_object_created(b, KEY_A),
}


@pytest.mark.parametrize("shape", sorted(OBJECT_SHAPES))
async def test_notification_naming_objects_delivers_them_and_deletes_the_message(
    shape: str,
    aws_options: AwsOptions,
    bucket: str,
    queue: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
) -> None:
    first, second = records(20, 50), records(30, 51)
    await put_objects(aws_options, bucket, {KEY_A: log_file(first), KEY_B: log_file(second)})
    await send(aws_options, queue, [OBJECT_SHAPES[shape](bucket)])

    assert await serve([sqs_config(aws_options, queue, lc)], state_dir) == 0

    named_both = shape != "eventbridge_object_created"
    assert lc.store.event_ids() == ids(first + second if named_both else first)
    assert await depth(aws_options, queue) == (0, 0)


INLINE_SHAPES: dict[str, Callable[[list[dict[str, Any]]], str]] = {
    "eventbridge_cloudtrail": lambda recs: messages.eventbridge_cloudtrail(recs[0]),
    "bare_record": lambda recs: orjson.dumps(recs[0]).decode(),
    "records_batch": lambda recs: orjson.dumps({"Records": recs}).decode(),
    "records_batch_in_sns": lambda recs: messages.sns_envelope(
        orjson.dumps({"Records": recs}).decode()
    ),
}


@pytest.mark.parametrize("shape", sorted(INLINE_SHAPES))
async def test_notification_carrying_records_delivers_them_and_deletes_the_message(
    shape: str, aws_options: AwsOptions, queue: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    recs = records(4, 60)
    await send(aws_options, queue, [INLINE_SHAPES[shape](recs)])

    assert await serve([sqs_config(aws_options, queue, lc)], state_dir) == 0

    one = shape in ("eventbridge_cloudtrail", "bare_record")
    assert lc.store.event_ids() == ids(recs[:1] if one else recs)
    assert await depth(aws_options, queue) == (0, 0)


@pytest.mark.parametrize(
    "body",
    [
        messages.s3_test_event("some-bucket"),
        messages.VALIDATION_MESSAGE,
        messages.sns_envelope(messages.VALIDATION_MESSAGE),
    ],
    ids=["s3_test_event", "validation_message", "validation_message_in_sns"],
)
async def test_messages_with_nothing_to_ingest_are_deleted_and_nothing_is_sent(
    body: str, aws_options: AwsOptions, queue: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    await send(aws_options, queue, [body])

    assert await serve([sqs_config(aws_options, queue, lc)], state_dir) == 0

    assert len(lc.store.events) == 0
    assert await depth(aws_options, queue) == (0, 0)


async def test_digest_keys_in_a_notification_are_skipped(
    aws_options: AwsOptions, bucket: str, queue: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    recs = records(3, 61)
    digest = (
        "AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2026/11/24/x_CloudTrail-Digest_y.json.gz"
    )
    await put_objects(aws_options, bucket, {KEY_A: log_file(recs)})
    await send(aws_options, queue, [messages.cloudtrail_sns(bucket, [digest, KEY_A])])

    assert await serve([sqs_config(aws_options, queue, lc)], state_dir) == 0

    assert lc.store.event_ids() == ids(recs)
    assert await depth(aws_options, queue) == (0, 0)


async def test_unknown_body_stays_on_the_queue_and_comes_back(
    aws_options: AwsOptions, queue: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    good = records(5, 62)
    await send(aws_options, queue, ['{"hello": "world"}', orjson.dumps({"Records": good}).decode()])
    cfg = sqs_config(
        aws_options, queue, lc, single_load=False, wait_time_seconds=1, visibility_timeout=1
    )

    with watch_logs() as logs:
        daemon = asyncio.create_task(serve([cfg], state_dir))
        await logs.wait_for("sqs_message_poison", count=3, timeout=30)
        await lc.store.wait_for(5)
        stop_daemon()
        assert await asyncio.wait_for(daemon, 30) == 0

    poison = logs.named("sqs_message_poison")
    assert [int(p["receive_count"]) for p in poison[:3]] == [1, 2, 3]
    assert poison[0]["reason"] == "unknown_shape" and poison[0]["message_id"]
    assert lc.store.event_ids() == ids(good)
    visible, in_flight = await depth(aws_options, queue)
    assert visible + in_flight == 1, "the poison message must stay for the dead-letter queue"


async def test_unknown_body_makes_a_single_load_run_fail(
    aws_options: AwsOptions, queue: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    await send(aws_options, queue, ["not json at all"])
    assert await serve([sqs_config(aws_options, queue, lc)], state_dir) == 1
    visible, in_flight = await depth(aws_options, queue)
    assert visible + in_flight == 1


async def test_missing_object_leaves_the_message_and_names_it(
    aws_options: AwsOptions, bucket: str, queue: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    recs = records(6, 63)
    await put_objects(aws_options, bucket, {KEY_B: log_file(recs)})
    await send(
        aws_options,
        queue,
        [messages.s3_event(bucket, [KEY_A]), messages.s3_event(bucket, [KEY_B])],
    )

    with watch_logs() as logs:
        assert await serve([sqs_config(aws_options, queue, lc)], state_dir) == 1

    failed = logs.named("object_failed")
    assert len(failed) == 1
    assert failed[0]["reason"] == "NoSuchKey"
    assert failed[0]["key"] == KEY_A and failed[0]["bucket"] == bucket
    assert failed[0]["message_id"] == logs.named("sqs_message_left")[0]["message_id"]
    assert lc.store.event_ids() == ids(recs), "the good message next to it was delivered"
    visible, in_flight = await depth(aws_options, queue)
    assert visible + in_flight == 1, "only the message with the missing object stays"


async def test_acks_withheld_past_the_visibility_timeout_cause_no_redelivery(
    aws_options: AwsOptions, bucket: str, queue: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    objects = {f"{PREFIX}held-{i}.json.gz": records(10, 70 + i) for i in range(3)}
    await put_objects(aws_options, bucket, {k: log_file(v) for k, v in objects.items()})
    await send(aws_options, queue, [messages.s3_event(bucket, [k]) for k in objects])
    cfg = sqs_config(
        aws_options, queue, lc, single_load=False, wait_time_seconds=1, visibility_timeout=2
    )
    lc.usp_faults.hold_acks()

    with watch_logs() as logs:
        daemon = asyncio.create_task(serve([cfg], state_dir))
        # Three messages, extended every second: 12 extensions is twice the timeout held.
        await logs.wait_for("sqs_visibility_extended", count=12, timeout=30)
        assert await depth(aws_options, queue) == (0, 3), "nothing may be deleted before acks"
        lc.usp_faults.release_acks()
        await lc.store.wait_for(30)

        async def drained() -> bool:
            return await depth(aws_options, queue) == (0, 0)

        await eventually(drained)
        stop_daemon()
        assert await asyncio.wait_for(daemon, 30) == 0

    assert len(logs.named("sqs_message_received")) == 3, "a message was redelivered"
    assert lc.store.event_ids() == ids([r for recs in objects.values() for r in recs])


async def test_no_message_is_deleted_before_acks_after_a_dropped_connection(
    aws_options: AwsOptions, bucket: str, queue: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    objects = {f"{PREFIX}drop-{i}.json.gz": records(10, 80 + i) for i in range(4)}
    await put_objects(aws_options, bucket, {k: log_file(v) for k, v in objects.items()})
    await send(aws_options, queue, [messages.s3_event(bucket, [k]) for k in objects])
    cfg = sqs_config(aws_options, queue, lc, single_load=False, wait_time_seconds=1)
    lc.usp_faults.hold_acks()
    lc.usp_faults.drop_after_messages = 1

    daemon = asyncio.create_task(serve([cfg], state_dir))

    async def reconnected() -> bool:
        return lc.usp.connections >= 2

    await eventually(reconnected)
    assert await depth(aws_options, queue) == (0, 4), "deleted before LimaCharlie acknowledged"
    lc.usp_faults.release_acks()
    await lc.store.wait_for(40)

    async def drained() -> bool:
        return await depth(aws_options, queue) == (0, 0)

    await eventually(drained)
    stop_daemon()
    assert await asyncio.wait_for(daemon, 30) == 0
    assert set(lc.store.event_ids()) == set(ids([r for v in objects.values() for r in v]))


@pytest.mark.parametrize(
    ("in_work", "per_receive"), [(5, 10), (12, 3)], ids=["one-receiver", "four-receivers"]
)
async def test_a_stalled_limacharlie_bounds_the_messages_in_work(
    aws_options: AwsOptions,
    bucket: str,
    queue: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    in_work: int,
    per_receive: int,
) -> None:
    """Several receive loops share the bound: none takes room another asked for."""
    objects = {f"{PREFIX}stall-{i:02}.json.gz": records(2, 90 + i) for i in range(30)}
    await put_objects(aws_options, bucket, {k: log_file(v) for k, v in objects.items()})
    await send(aws_options, queue, [messages.s3_event(bucket, [k]) for k in objects])
    cfg = sqs_config(
        aws_options,
        queue,
        lc,
        single_load=False,
        wait_time_seconds=1,
        visibility_timeout=2,
        max_messages_in_work=in_work,
        max_messages=per_receive,
    )
    lc.usp_faults.hold_acks()

    with watch_logs() as logs:
        daemon = asyncio.create_task(serve([cfg], state_dir))
        await logs.wait_for("sqs_message_received", count=in_work, timeout=30)
        # Four extensions of each message: two full visibility timeouts of stalling.
        await logs.wait_for("sqs_visibility_extended", count=4 * in_work, timeout=30)
        assert len(logs.named("sqs_message_received")) == in_work
        assert await depth(aws_options, queue) == (30 - in_work, in_work)
        lc.usp_faults.release_acks()
        await lc.store.wait_for(60)

        async def drained() -> bool:
            return await depth(aws_options, queue) == (0, 0)

        await eventually(drained)
        stop_daemon()
        assert await asyncio.wait_for(daemon, 30) == 0

    assert lc.store.event_ids() == ids([r for v in objects.values() for r in v])


async def test_objects_are_fetched_in_their_own_buckets_region(
    aws_options: AwsOptions, queue: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    """The queue is in us-east-1; the bucket in eu-west-1, named by a notification that does
    not say so (CloudTrail's SNS format): the region is asked of S3 and used."""
    far = f"trail-eu-{uuid.uuid4().hex[:8]}"
    async with aws.client("s3", aws_options, region="eu-west-1") as s3:
        await s3.create_bucket(
            Bucket=far, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
    recs = records(7, 95)
    await put_objects(aws_options, far, {KEY_A: log_file(recs)})
    await send(aws_options, queue, [messages.cloudtrail_sns(far, [KEY_A])])

    assert await serve([sqs_config(aws_options, queue, lc)], state_dir) == 0
    assert lc.store.event_ids() == ids(recs)

    async with contextlib.AsyncExitStack() as stack:
        buckets = aws.BucketClients(aws_options, stack, pool=2)
        client = await buckets.for_bucket(far)
        assert client.meta.region_name == "eu-west-1"
        hinted = await buckets.for_bucket("another", region_hint="ap-south-1")
        assert hinted.meta.region_name == "ap-south-1"
