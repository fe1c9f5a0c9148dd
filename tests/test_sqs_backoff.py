"""A failed receive is retried after the backoff's first step, with jitter: many replicas
share one queue in a scaled-out deployment, and a fault they all met at once must not
bring them back in step (nor wait twice as long as configured before the first retry)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import cloudtrail_record
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.sources.sqs import RECEIVE_BACKOFF
from tests.support.configs import sqs_config
from tests.support.stand_in import STAND_IN
from tests.support.watch import watch_logs


async def test_receive_retries_start_at_the_first_step_and_are_jittered(
    aws_options: AwsOptions, queue: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    rng = random.Random(5)
    when = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    records = [
        cloudtrail_record(rng, account="111122223333", region="us-east-1", when=when)
        for _ in range(3)
    ]
    async with aws.client("sqs", aws_options) as sqs:
        await sqs.send_message(
            QueueUrl=queue, MessageBody=orjson.dumps({"Records": records}).decode()
        )
    # One receive loop (room for one receive's worth), so the failures are one loop's.
    cfg = sqs_config(aws_options, queue, lc, max_messages_in_work=10)
    STAND_IN.receive_faults = 2
    try:
        with watch_logs() as logs:
            assert await serve([cfg], state_dir) == 0
    finally:
        STAND_IN.receive_faults = 0

    first, second = (e["retry_in"] for e in logs.named("sqs_receive_failed"))
    step = RECEIVE_BACKOFF.initial
    assert step < first <= step * 1.5, "the first retry waits one step, jittered"
    assert 2 * step < second <= 2 * step * 1.5, "then two steps, jittered"
    assert lc.store.event_ids() == Counter(str(r["eventID"]) for r in records)
