"""LimaCharlie's `sqs-files` adapter, run unchanged: messages name files by paths into their
bodies. Unlike the reference (which deletes a message before its files are read), a message
is deleted only after LimaCharlie acknowledged every record of every file it named."""

from __future__ import annotations

import random
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions, parse_documents
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import cloudtrail_record, log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.sources.notifications import (
    FetchObjects,
    FilePaths,
    NotificationError,
    ObjectRef,
    parse_body,
)
from tests.support.configs import INSTALLATION_KEY, OID
from tests.support.stand_in import put_objects

DEFAULTS = FilePaths("files/path")  # the reference's own defaults: bucket, files/path


def test_the_reference_default_shape() -> None:
    body = orjson.dumps({"bucket": "b", "files": [{"path": "a/1.json.gz"}, {"path": "a/2.json"}]})
    assert parse_body(body, DEFAULTS) == FetchObjects(
        (ObjectRef("b", "a/1.json.gz"), ObjectRef("b", "a/2.json"))
    )


def test_paths_through_an_s3_notification_with_encoded_keys() -> None:
    key = "AWSLogs/1/CloudTrail/us-east-1/2026/11/30/x y+z=.json.gz"
    body = orjson.dumps(
        {
            "Records": [
                {
                    "s3": {
                        "bucket": {"name": "trail"},
                        "object": {"key": urllib.parse.quote_plus(key)},
                    }
                },
                {"s3": {"bucket": {"name": "trail"}, "object": {"key": "plain.json.gz"}}},
            ]
        }
    )
    paths = FilePaths("Records/s3/object/key", "Records/s3/bucket/name", decode_keys=True)
    assert parse_body(body, paths) == FetchObjects(
        (ObjectRef("trail", key), ObjectRef("trail", "plain.json.gz"))
    )


def test_a_fixed_bucket_and_a_single_string_path() -> None:
    body = orjson.dumps({"detail": {"object": "k.json.gz"}})
    got = parse_body(body, FilePaths("detail/object", bucket="fixed"))
    assert got == FetchObjects((ObjectRef("fixed", "k.json.gz"),))


def test_files_without_a_bucket_are_poison_with_the_reason() -> None:
    with pytest.raises(NotificationError) as caught:
        parse_body(b'{"files": [{"path": "k"}]}', DEFAULTS)
    assert caught.value.reason == "missing_bucket" and "bucket_path" in str(caught.value)


def test_where_the_paths_find_nothing_the_body_is_read_as_any_notification() -> None:
    s3_event = orjson.dumps(
        {
            "Records": [
                {
                    "eventSource": "aws:s3",
                    "s3": {"bucket": {"name": "t"}, "object": {"key": "k.json.gz"}},
                }
            ]
        }
    )
    assert parse_body(s3_event, DEFAULTS) == parse_body(s3_event)
    with pytest.raises(NotificationError):
        parse_body(b'{"unrelated": 1}', DEFAULTS)


# ---- end to end ------------------------------------------------------------------------------


def sqs_files_document(
    aws_options: AwsOptions, queue_url: str, lc: LimaCharlieEmulator, **keys: Any
) -> str:
    return yaml.safe_dump(
        {
            "sqs-files": {
                "client_options": {
                    "identity": {"oid": OID, "installation_key": INSTALLATION_KEY},
                    "hostname": "sqs-files-test",
                    "platform": "aws",
                    "sensor_seed_key": "sqs-files",
                    "dest_url": lc.usp_url,
                },
                "access_key": aws_options.access_key,
                "secret_key": aws_options.secret_key.reveal() if aws_options.secret_key else "",
                "region": aws_options.region,
                "endpoint_url": aws_options.endpoint_url,
                "queue_url": queue_url,
                "single_load": True,
                "wait_time_seconds": 0,
                **keys,
            }
        }
    )


async def test_an_sqs_files_config_runs_end_to_end(
    aws_options: AwsOptions, bucket: str, queue: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    rng = random.Random(11)
    when = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    prefix = "AWSLogs/111122223333/CloudTrail/eu-west-1/2026/11/30/"
    objects: dict[str, bytes] = {}
    expected: set[str] = set()
    for n in range(4):
        recs = [
            cloudtrail_record(rng, account="111122223333", region="eu-west-1", when=when)
            for _ in range(25)
        ]
        expected |= {str(r["eventID"]) for r in recs}
        objects[f"{prefix}111122223333_CloudTrail_eu-west-1_20261130T10{n}0Z_{n} copy.json.gz"] = (
            log_file(recs)
        )
    await put_objects(aws_options, bucket, objects)
    keys = list(objects)
    bodies = [
        # an S3 event notification, keys URL-encoded, read through the configured paths
        {
            "Records": [
                {"s3": {"bucket": {"name": bucket}, "object": {"key": urllib.parse.quote_plus(k)}}}
                for k in keys[:3]
            ]
        },
        {
            "Records": [
                {
                    "s3": {
                        "bucket": {"name": bucket},
                        "object": {"key": urllib.parse.quote_plus(keys[3])},
                    }
                }
            ]
        },
    ]
    async with aws.client("sqs", aws_options) as sqs:
        for body in bodies:
            await sqs.send_message(QueueUrl=queue, MessageBody=orjson.dumps(body).decode())

    text = sqs_files_document(
        aws_options,
        queue,
        lc,
        bucket_path="Records/s3/bucket/name",
        file_path="Records/s3/object/key",
        is_decode_object_key=True,
    )
    [cfg] = parse_documents(text, {}, "sqs-files.yaml")
    assert cfg.kind == "sqs-files"
    assert await serve([cfg], state_dir) == 0

    assert set(lc.store.event_ids()) == expected
    assert sum(lc.store.event_ids().values()) == 100  # each once
    async with aws.client("sqs", aws_options) as sqs:
        attrs = await sqs.get_queue_attributes(
            QueueUrl=queue,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
    assert attrs["Attributes"] == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "0",
    }
