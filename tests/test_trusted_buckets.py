"""Whoever can send to the queue can name any bucket: a message is trusted no further than
its buckets. One naming a bucket outside `buckets:` is never fetched and never deleted;
every read expects the bucket's owner (by default the queue's account), and a bucket that
another account owns is refused by S3 (the stand-in checks the header as S3 does), named
as such, and its message left for the dead-letter queue."""

from __future__ import annotations

import random
import textwrap
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions, ConfigError, SqsSourceOptions, parse_documents
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import cloudtrail_record, log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from tests.support import messages
from tests.support.configs import s3_config, sqs_config
from tests.support.stand_in import STAND_IN, put_objects
from tests.support.watch import watch_logs

#: moto's one account: the queue's (in its URL) and every bucket's creator.
OUR_ACCOUNT = "123456789012"
OTHER_ACCOUNT = "999999999999"
KEY = "AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/24/111122223333_CloudTrail_x.json.gz"


def records(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    when = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    return [
        cloudtrail_record(rng, account="111122223333", region="us-east-1", when=when)
        for _ in range(n)
    ]


def ids(recs: list[dict[str, Any]]) -> Counter[str]:
    return Counter(str(r["eventID"]) for r in recs)


async def new_bucket(aws_options: AwsOptions, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    async with aws.client("s3", aws_options) as s3:
        await s3.create_bucket(Bucket=name)
    return name


async def send(aws_options: AwsOptions, queue_url: str, bodies: list[str]) -> None:
    async with aws.client("sqs", aws_options) as sqs:
        for body in bodies:
            await sqs.send_message(QueueUrl=queue_url, MessageBody=body)


async def left_on_queue(aws_options: AwsOptions, queue_url: str) -> int:
    """Messages still on the queue, visible or not."""
    async with aws.client("sqs", aws_options) as sqs:
        answer = await sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
    return sum(int(v) for v in answer["Attributes"].values())


@pytest.fixture
def owners() -> Any:
    """`STAND_IN.bucket_owners`, emptied after the test."""
    try:
        yield STAND_IN.bucket_owners
    finally:
        STAND_IN.bucket_owners.clear()


async def test_a_bucket_outside_buckets_is_never_fetched_and_its_message_stays(
    aws_options: AwsOptions,
    bucket: str,
    queue: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    requests: list[tuple[str, str]],
) -> None:
    forged = await new_bucket(aws_options, "forged")
    good, planted = records(8, 1), records(5, 2)
    await put_objects(aws_options, bucket, {KEY: log_file(good)})
    await put_objects(aws_options, forged, {KEY: log_file(planted)})
    await send(
        aws_options,
        queue,
        [messages.s3_event(forged, [KEY]), messages.cloudtrail_sns(bucket, [KEY])],
    )
    requests.clear()  # from here on, only what the daemon asks
    cfg = sqs_config(aws_options, queue, lc, buckets=("trail-*",))

    with watch_logs() as logs:
        assert await serve([cfg], state_dir) == 1, "a poison message fails a single-load run"

    assert lc.store.event_ids() == ids(good)
    assert not [url for _, url in requests if forged in url], "the forged bucket was asked"
    [poison] = logs.named("sqs_message_poison")
    assert (poison["reason"], poison["bucket"]) == ("bucket_not_trusted", forged)
    assert await left_on_queue(aws_options, queue) == 1, "left for the dead-letter queue"


async def test_a_bucket_another_account_owns_is_refused_named_and_left_on_the_queue(
    aws_options: AwsOptions,
    bucket: str,
    queue: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    owners: dict[str, str],
) -> None:
    """The default expected owner is the queue's account (from its URL); the stand-in
    answers a read of a bucket another account owns with S3's bare 403."""
    sniped = await new_bucket(aws_options, "trail-sniped")
    owners[sniped] = OTHER_ACCOUNT
    good, planted = records(8, 3), records(5, 4)
    await put_objects(aws_options, bucket, {KEY: log_file(good)})
    await put_objects(aws_options, sniped, {KEY: log_file(planted)})
    await send(
        aws_options,
        queue,
        [messages.s3_event(sniped, [KEY]), messages.s3_event(bucket, [KEY])],
    )

    with watch_logs() as logs:
        assert await serve([sqs_config(aws_options, queue, lc)], state_dir) == 1

    assert lc.store.event_ids() == ids(good), "our own bucket's reads carry our account"
    [failed] = logs.named("object_failed")
    assert failed["reason"] == "wrong_bucket_owner" and failed["bucket"] == sniped
    [poison] = logs.named("sqs_message_poison")
    assert poison["reason"] == "wrong_bucket_owner"
    assert (poison["bucket"], poison["expected_owner"]) == (sniped, OUR_ACCOUNT)
    assert OUR_ACCOUNT in poison["error"] and sniped in poison["error"]
    assert not logs.named("sqs_message_left"), "poison, not an object to retry"
    assert await left_on_queue(aws_options, queue) == 1


async def test_expected_bucket_owner_none_sends_no_header(
    aws_options: AwsOptions,
    queue: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    owners: dict[str, str],
) -> None:
    elsewhere = await new_bucket(aws_options, "trail-partner")
    owners[elsewhere] = OTHER_ACCOUNT
    recs = records(6, 5)
    await put_objects(aws_options, elsewhere, {KEY: log_file(recs)})
    await send(aws_options, queue, [messages.s3_event(elsewhere, [KEY])])
    cfg = sqs_config(aws_options, queue, lc, expected_bucket_owner="none")

    assert await serve([cfg], state_dir) == 0
    assert lc.store.event_ids() == ids(recs)
    assert await left_on_queue(aws_options, queue) == 0


async def test_an_s3_source_names_a_bucket_owner_mismatch(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    await put_objects(aws_options, bucket, {KEY: log_file(records(4, 6))})
    cfg = s3_config(aws_options, bucket, lc, expected_bucket_owner=OTHER_ACCOUNT)

    with watch_logs() as logs:
        assert await serve([cfg], state_dir) == 1

    assert not lc.store.event_ids()
    [failed] = logs.named("object_failed")
    assert failed["reason"] == "wrong_bucket_owner"
    assert OTHER_ACCOUNT in failed["error"] and bucket in failed["error"]


async def test_an_s3_source_with_the_right_owner_ships(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    recs = records(4, 7)
    await put_objects(aws_options, bucket, {KEY: log_file(recs)})
    cfg = s3_config(aws_options, bucket, lc, expected_bucket_owner=OUR_ACCOUNT)
    assert await serve([cfg], state_dir) == 0
    assert lc.store.event_ids() == ids(recs)


# ---- the keys ------------------------------------------------------------------------------


SQS = """\
sqs:
  client_options:
    hostname: h
    identity: {installation_key: 0f4e7a52-1b2c-4d3e-9f8a-7b6c5d4e3f2a,
               oid: 6c3f1d2a-9d55-4e1e-8f0a-3b2c1d0e9f8a}
    platform: aws
    sensor_seed_key: s
  queue_url: https://sqs.eu-west-1.amazonaws.com/210987654321/cloudtrail
"""


def sqs_options(extra: str = "") -> SqsSourceOptions:
    [config] = parse_documents(SQS + textwrap.indent(extra, "  "), {}, "test.yaml")
    assert isinstance(config.source, SqsSourceOptions)
    return config.source


def test_the_expected_owner_defaults_to_the_queues_account() -> None:
    assert sqs_options().bucket_owner == "210987654321"
    assert sqs_options("expected_bucket_owner: 012345678901\n").bucket_owner == "012345678901"
    assert sqs_options("expected_bucket_owner: none\n").bucket_owner is None


def test_buckets_are_globs() -> None:
    options = sqs_options("buckets: [org-trail-*, audit-logs]\n")
    assert options.bucket_trusted("org-trail-eu") and options.bucket_trusted("audit-logs")
    assert not options.bucket_trusted("audit-logs-2") and not options.bucket_trusted("x")
    assert sqs_options().bucket_trusted("anything"), "no buckets: any bucket"


@pytest.mark.parametrize("value", ["12345", "arn:aws:iam::123456789012:root", "off"])
def test_an_expected_owner_is_an_account_id_or_none(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        sqs_options(f"expected_bucket_owner: {value}\n")
    [problem] = caught.value.errors
    assert problem.key == "sqs.expected_bucket_owner" and "12-digit" in problem.message


def test_an_sqs_files_bucket_must_be_one_of_buckets() -> None:
    text = SQS.replace("sqs:", "sqs-files:", 1) + "  bucket: other-logs\n  buckets: [org-trail-*]\n"
    with pytest.raises(ConfigError) as caught:
        parse_documents(text, {}, "test.yaml")
    [problem] = caught.value.errors
    assert problem.key == "sqs-files.bucket" and "buckets" in problem.message
