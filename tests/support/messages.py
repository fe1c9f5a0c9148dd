"""SQS message bodies as AWS writes them, for the tests and the benchmarks."""

from __future__ import annotations

import urllib.parse
import uuid
from typing import Any

import orjson

TIME = "2026-11-24T12:00:00.000Z"


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def s3_event(
    bucket: str, keys: list[str], *, region: str = "us-east-1", sizes: list[int] | None = None
) -> str:
    """S3 -> SQS event notification; keys are form-URL-encoded, as S3 sends them."""
    sizes = sizes or [1024] * len(keys)
    records = [
        {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": region,
            "eventTime": TIME,
            "eventName": "ObjectCreated:Put",
            "s3": {
                "s3SchemaVersion": "1.0",
                "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                "object": {"key": urllib.parse.quote_plus(key, safe="/"), "size": size},
            },
        }
        for key, size in zip(keys, sizes, strict=True)
    ]
    return _json({"Records": records})


def s3_test_event(bucket: str) -> str:
    return _json({"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": TIME, "Bucket": bucket})


def cloudtrail_sns(bucket: str, keys: list[str]) -> str:
    """CloudTrail's own notification (raw SNS delivery): keys as they are."""
    return _json({"s3Bucket": bucket, "s3ObjectKey": keys})


def sns_envelope(inner: str) -> str:
    return _json(
        {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": "arn:aws:sns:us-east-1:111122223333:cloudtrail",
            "Message": inner,
            "Timestamp": TIME,
        }
    )


def eventbridge_object_created(bucket: str, key: str, *, region: str = "us-east-1") -> str:
    return _json(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Object Created",
            "source": "aws.s3",
            "account": "111122223333",
            "time": TIME,
            "region": region,
            "resources": [f"arn:aws:s3:::{bucket}"],
            "detail": {"version": "0", "bucket": {"name": bucket}, "object": {"key": key}},
        }
    )


def eventbridge_cloudtrail(record: dict[str, Any]) -> str:
    return _json(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "AWS API Call via CloudTrail",
            "source": "aws." + str(record.get("eventSource", "ec2")).split(".")[0],
            "account": record.get("recipientAccountId", "111122223333"),
            "time": TIME,
            "region": record.get("awsRegion", "us-east-1"),
            "detail": record,
        }
    )


VALIDATION_MESSAGE = "CloudTrail validation message."
