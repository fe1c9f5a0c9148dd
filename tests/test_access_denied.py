"""AccessDenied on one object: named, counted and recorded; the objects next to it go on.

moto enforces IAM once its auth is switched on (over its own HTTP API), so the denial is a
real 403 from the server to a real IAM user, not a patched client.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.secret import Secret
from cloudtrail_adapter.state import StateStore
from tests.support import messages
from tests.support.configs import s3_config, sqs_config
from tests.support.corpus import PREFIX, records
from tests.support.stand_in import put_objects, set_auth
from tests.support.watch import watch_logs

GOOD = records(30, 601)
GOOD_KEY = f"{PREFIX}good.json.gz"
DENIED_KEY = f"{PREFIX}denied.json.gz"


def policy(bucket: str) -> str:
    """Everything, except reading the one object."""
    return orjson.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["s3:*", "sqs:*"], "Resource": "*"},
                {
                    "Effect": "Deny",
                    "Action": "s3:GetObject",
                    "Resource": f"arn:aws:s3:::{bucket}/{DENIED_KEY}",
                },
            ],
        }
    ).decode()


@pytest.fixture
async def restricted(aws_options: AwsOptions, bucket: str) -> AsyncIterator[AwsOptions]:
    """A user who may do anything but read DENIED_KEY, with moto's IAM checks switched on."""
    async with aws.client("iam", aws_options) as iam:
        name = f"reader-{bucket}"
        await iam.create_user(UserName=name)
        await iam.put_user_policy(UserName=name, PolicyName="trail", PolicyDocument=policy(bucket))
        key = (await iam.create_access_key(UserName=name))["AccessKey"]
    endpoint = aws_options.endpoint_url
    assert endpoint
    await set_auth(endpoint, "0")
    try:
        yield AwsOptions(
            key["AccessKeyId"], Secret(key["SecretAccessKey"]), aws_options.region, endpoint
        )
    finally:
        await set_auth(endpoint, "inf")


async def test_a_denied_object_is_named_and_recorded_and_the_bucket_goes_on(
    restricted: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    await put_objects(
        restricted, bucket, {DENIED_KEY: log_file(records(3, 602)), GOOD_KEY: log_file(GOOD)}
    )
    with watch_logs() as logs:
        assert await serve([s3_config(restricted, bucket, lc)], state_dir) == 1

    [failed] = logs.named("object_failed")
    assert (failed["bucket"], failed["key"]) == (bucket, DENIED_KEY)
    assert failed["reason"] == "AccessDenied"
    assert logs.named("source_finished")[0]["failures"] == {"AccessDenied": 1}
    assert lc.store.event_ids() == Counter(str(r["eventID"]) for r in GOOD)
    store = StateStore.in_dir(state_dir)
    try:
        assert [(f.key, f.reason) for f in store.failures()] == [(DENIED_KEY, "AccessDenied")]
    finally:
        store.close()


async def test_a_notification_naming_a_denied_object_stays_for_the_dead_letter_queue(
    queue: str, restricted: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    await put_objects(
        restricted, bucket, {DENIED_KEY: log_file(records(3, 603)), GOOD_KEY: log_file(GOOD)}
    )
    async with aws.client("sqs", restricted) as sqs:
        for key in (DENIED_KEY, GOOD_KEY):
            await sqs.send_message(QueueUrl=queue, MessageBody=messages.s3_event(bucket, [key]))
    with watch_logs() as logs:
        assert await serve([sqs_config(restricted, queue, lc)], state_dir) == 1

    [failed] = logs.named("object_failed")
    assert (failed["bucket"], failed["key"], failed["reason"]) == (
        bucket,
        DENIED_KEY,
        "AccessDenied",
    )
    assert failed["message_id"]
    assert [e["message_id"] for e in logs.named("sqs_message_left")] == [failed["message_id"]]
    assert len(logs.named("sqs_message_deleted")) == 1
    assert lc.store.event_ids() == Counter(str(r["eventID"]) for r in GOOD)
