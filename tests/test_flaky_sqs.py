"""SQS through a flaky network: the heartbeat keeps a message hidden however slowly the
receive was answered; a delete that fails, whole or for some entries, is retried, and one
that keeps failing is counted and left to come back."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.sources.sqs import DELETE_ATTEMPTS
from tests.support import messages
from tests.support.configs import sqs_config
from tests.support.corpus import PREFIX, ids, records
from tests.support.fault_proxy import FaultPlan, FaultProxy
from tests.support.stand_in import STAND_IN, depth, put_objects, send
from tests.support.watch import LogWatch, watch_logs

KEY = f"{PREFIX}111122223333_CloudTrail_us-east-1_20261124T1200Z_slow.json.gz"
VISIBILITY = 4


async def test_the_heartbeat_counts_the_visibility_timeout_from_when_the_receive_was_sent(
    aws_options: AwsOptions, bucket: str, queue: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    """A receive answered 2.5 s late, with a 4 s visibility timeout, and an object slow to
    read: the message is extended before 4 s have passed since the receive was sent (and
    then within every 4 s, until deleted), so no other consumer could take it meanwhile."""
    recs = records(30, 77)
    await put_objects(aws_options, bucket, {KEY: log_file(recs)})
    await send(aws_options, queue, [messages.s3_event(bucket, [KEY])])
    plan = FaultPlan(delays={"ReceiveMessage": 2.5, "GetObject": 6.0})
    with FaultProxy(str(aws_options.endpoint_url), plan) as proxy:
        through = dataclasses.replace(aws_options, endpoint_url=proxy.url)
        cfg = sqs_config(through, queue, lc, visibility_timeout=VISIBILITY)
        assert await serve([cfg], state_dir) == 0
    received = next(c.at for c in proxy.calls if c.action == "ReceiveMessage" and c.carried)
    extended = [c.at for c in proxy.calls if c.action == "ChangeMessageVisibility"]
    deleted = next(c.at for c in proxy.calls if c.action == "DeleteMessageBatch")
    hidden = [received, *extended, deleted]
    gaps = [round(later - earlier, 2) for earlier, later in itertools.pairwise(hidden)]
    assert extended and max(gaps) < VISIBILITY, f"visibility lapsed: {gaps}"
    assert lc.store.event_ids() == ids(recs)
    assert await depth(aws_options, queue) == (0, 0)


@pytest.fixture
def deletes_failing() -> Iterator[None]:
    yield
    STAND_IN.delete_faults = 0
    STAND_IN.delete_entry_faults = []


async def ship_messages(
    aws_options: AwsOptions,
    bucket: str,
    queue: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    count: int = 2,
) -> tuple[list[dict[str, Any]], LogWatch]:
    """`count` notifications, each naming its own object, loaded in one single-load run."""
    objects = {
        f"{PREFIX}111122223333_CloudTrail_us-east-1_20261124T12{n}0Z_d.json.gz": records(10, 80 + n)
        for n in range(count)
    }
    await put_objects(aws_options, bucket, {k: log_file(r) for k, r in objects.items()})
    await send(aws_options, queue, [messages.s3_event(bucket, [k]) for k in objects])
    with watch_logs() as logs:
        assert await serve([sqs_config(aws_options, queue, lc)], state_dir) == 0
    return [r for recs in objects.values() for r in recs], logs


async def test_a_delete_batch_failing_whole_is_retried_and_every_message_deleted(
    aws_options: AwsOptions,
    bucket: str,
    queue: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    deletes_failing: None,
) -> None:
    STAND_IN.delete_faults = DELETE_ATTEMPTS - 1
    recs, logs = await ship_messages(aws_options, bucket, queue, lc, state_dir)
    assert logs.named("sqs_delete_failed"), "the failed call was not said"
    assert not logs.named("sqs_message_not_deleted")
    assert lc.store.event_ids() == ids(recs)
    assert await depth(aws_options, queue) == (0, 0)


async def test_an_entry_failing_in_a_delete_batch_is_deleted_again_alone(
    aws_options: AwsOptions,
    bucket: str,
    queue: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    deletes_failing: None,
) -> None:
    STAND_IN.delete_entry_faults = ["InternalError"]
    recs, logs = await ship_messages(aws_options, bucket, queue, lc, state_dir)
    assert len(logs.named("sqs_message_deleted")) == 2
    assert not logs.named("sqs_message_not_deleted")
    assert lc.store.event_ids() == ids(recs)
    assert await depth(aws_options, queue) == (0, 0)


async def test_a_delete_that_keeps_failing_is_counted_and_the_message_left_to_come_back(
    aws_options: AwsOptions,
    bucket: str,
    queue: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    deletes_failing: None,
) -> None:
    """Past its attempts, or with a handle SQS no longer knows, the message is given up on
    (it comes back after its visibility timeout, and its records go again): counted and
    logged, never retried for ever."""
    STAND_IN.delete_entry_faults = ["InternalError"] * DELETE_ATTEMPTS
    recs, logs = await ship_messages(aws_options, bucket, queue, lc, state_dir, count=1)
    given_up = logs.named("sqs_message_not_deleted")
    assert [e["code"] for e in given_up] == ["delete_failed"]
    assert lc.store.event_ids() == ids(recs)
    assert await depth(aws_options, queue) == (0, 1), "the message not deleted is not in flight"


async def test_a_receipt_handle_gone_is_not_retried(
    aws_options: AwsOptions,
    bucket: str,
    queue: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    deletes_failing: None,
) -> None:
    STAND_IN.delete_entry_faults = ["ReceiptHandleIsInvalid"]
    _, logs = await ship_messages(aws_options, bucket, queue, lc, state_dir)
    given_up = logs.named("sqs_message_not_deleted")
    assert [e["code"] for e in given_up] == ["ReceiptHandleIsInvalid"]
    assert len(logs.named("sqs_message_deleted")) == 1


async def test_the_sqs_corpus_through_the_issues_faults_arrives_once_and_empties_the_queues(
    aws_options: AwsOptions, bucket: str, queue: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    """The S3 faults of the issue (each chosen object's first two tries: 503 SlowDown, 500,
    a body cut at half), and ReceiveMessage and DeleteMessageBatch answered 500 now and
    then: every record arrives once, and the queue and its dead-letter queue end empty."""
    async with aws.client("sqs", aws_options) as sqs:
        made = await sqs.create_queue(QueueName=f"{queue.rsplit('/', 1)[1]}-dlq")
        dlq = str(made["QueueUrl"])
        answer = await sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
        redrive = orjson.dumps(
            {"deadLetterTargetArn": answer["Attributes"]["QueueArn"], "maxReceiveCount": "3"}
        ).decode()
        await sqs.set_queue_attributes(QueueUrl=queue, Attributes={"RedrivePolicy": redrive})
    objects = {
        f"{PREFIX}111122223333_CloudTrail_us-east-1_20261124T12{n:02d}Z_q.json.gz": records(
            30 + n, 600 + n
        )
        for n in range(15)
    }
    await put_objects(aws_options, bucket, {k: log_file(r) for k, r in objects.items()})
    await send(aws_options, queue, [messages.s3_event(bucket, [k]) for k in objects])
    plan = FaultPlan(
        slow_down_every=3,
        internal_every=5,
        cut_every=4,
        tries=2,
        receive_internal_every=3,
        delete_internal_every=2,
    )
    with FaultProxy(str(aws_options.endpoint_url), plan) as proxy:
        through = dataclasses.replace(aws_options, endpoint_url=proxy.url)
        cfg = sqs_config(through, queue, lc, visibility_timeout=15, max_messages=3)
        assert await serve([cfg], state_dir) == 0
    kinds = proxy.kinds()
    assert kinds["cut"] and kinds["receive_internal"] and kinds["delete_internal"], kinds
    assert lc.store.event_ids() == ids([r for recs in objects.values() for r in recs])
    assert await depth(aws_options, queue) == (0, 0)
    assert await depth(aws_options, dlq) == (0, 0)
