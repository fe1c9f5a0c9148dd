"""The SQS body parser on its own: every shape, every poison reason, and properties."""

from __future__ import annotations

import contextlib
import random
import urllib.parse
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudtrail_adapter.emulator.corpus import cloudtrail_record
from cloudtrail_adapter.sources.notifications import (
    FetchObjects,
    InlineRecords,
    NothingToDo,
    NotificationError,
    ObjectRef,
    parse_body,
)
from tests.support import messages

KEY = "AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail/us-east-1/2026/11/24/a b:c+d.json.gz"


def record(seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    when = datetime(2026, 11, 24, tzinfo=UTC)
    return cloudtrail_record(rng, account="111122223333", region="eu-west-1", when=when)


def error_of(body: str | bytes) -> NotificationError:
    with pytest.raises(NotificationError) as caught:
        parse_body(body)
    return caught.value


def test_s3_event_names_every_created_object_with_decoded_keys() -> None:
    body = messages.s3_event("trail", [KEY, "k2"], region="eu-west-1")
    assert "a+b%3Ac%2Bd" in body, "the builder must encode like S3 does"
    assert parse_body(body) == FetchObjects(
        (ObjectRef("trail", KEY, "eu-west-1", 1024), ObjectRef("trail", "k2", "eu-west-1", 1024))
    )


def test_s3_event_without_created_objects_is_nothing_to_do() -> None:
    doc = orjson.loads(messages.s3_event("trail", [KEY]))
    doc["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    assert parse_body(orjson.dumps(doc)) == NothingToDo("no_object_created")


def test_s3_test_event() -> None:
    assert parse_body(messages.s3_test_event("trail")) == NothingToDo("s3_test_event")


@pytest.mark.parametrize("keys", [[KEY, "k2"], KEY])
def test_cloudtrail_sns_notification_keys_are_taken_as_they_are(keys: list[str] | str) -> None:
    body = orjson.dumps({"s3Bucket": "trail", "s3ObjectKey": keys})
    expected = [KEY, "k2"] if isinstance(keys, list) else [KEY]
    assert parse_body(body) == FetchObjects(tuple(ObjectRef("trail", k) for k in expected))


@pytest.mark.parametrize(
    "inner",
    [
        messages.s3_event("trail", [KEY]),
        messages.cloudtrail_sns("trail", [KEY]),
        messages.s3_test_event("trail"),
        messages.VALIDATION_MESSAGE,
    ],
)
def test_sns_envelope_is_unwrapped(inner: str) -> None:
    assert parse_body(messages.sns_envelope(inner)) == parse_body(inner)


def test_eventbridge_object_created() -> None:
    body = messages.eventbridge_object_created("trail", KEY, region="ap-south-1")
    assert parse_body(body) == FetchObjects((ObjectRef("trail", KEY, "ap-south-1"),))


def test_eventbridge_other_s3_events_are_nothing_to_do() -> None:
    doc = orjson.loads(messages.eventbridge_object_created("trail", KEY))
    doc["detail-type"] = "Object Deleted"
    assert parse_body(orjson.dumps(doc)) == NothingToDo("no_object_created")


@pytest.mark.parametrize(
    "kind",
    [
        "AWS API Call via CloudTrail",
        "AWS Console Sign In via CloudTrail",
        "AWS Service Event via CloudTrail",
    ],
)
def test_eventbridge_cloudtrail_event_ships_its_detail(kind: str) -> None:
    rec = record()
    doc = orjson.loads(messages.eventbridge_cloudtrail(rec))
    doc["detail-type"] = kind
    note = parse_body(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    assert isinstance(note, InlineRecords)
    assert [orjson.loads(r) for r in note.records] == [rec]
    assert b"\n" not in note.records[0]


def test_bare_record_and_records_batch_are_shipped_as_they_are() -> None:
    recs = [record(1), record(2)]
    assert parse_body(orjson.dumps(recs[0])) == InlineRecords((orjson.dumps(recs[0]),))
    batch = parse_body(orjson.dumps({"Records": recs}, option=orjson.OPT_INDENT_2))
    assert batch == InlineRecords(tuple(orjson.dumps(r) for r in recs))


@pytest.mark.parametrize(
    "body", [messages.VALIDATION_MESSAGE, f"  {messages.VALIDATION_MESSAGE}\n"]
)
def test_cloudtrail_validation_message(body: str) -> None:
    assert parse_body(body) == NothingToDo("cloudtrail_validation_message")


@pytest.mark.parametrize(
    ("body", "reason", "says"),
    [
        ("", "empty_body", "empty"),
        ("hello there", "not_json", "'hello there'"),
        ("[1, 2]", "unknown_shape", "not an object"),
        ('{"foo": 1, "bar": 2}', "unknown_shape", "bar, foo"),
        ('{"Records": 5}', "unknown_shape", "Records is not a list"),
        (
            '{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {}}]}',
            "bad_s3_record",
            "Records[0] has no s3.bucket.name",
        ),
        (
            '{"Records": [{"eventSource": "aws:s3"}, {"eventVersion": "1.08", "eventID": "x"}]}',
            "unknown_shape",
            "mixes",
        ),
        (
            '{"Type": "SubscriptionConfirmation", "TopicArn": "t"}',
            "sns_subscription_confirmation",
            "confirm",
        ),
        ('{"Type": "Notification", "TopicArn": "t", "Message": 5}', "bad_sns_envelope", "Message"),
        (messages.sns_envelope(messages.sns_envelope("{}")), "bad_sns_envelope", "inside"),
        ('{"s3Bucket": "b", "s3ObjectKey": 5}', "bad_cloudtrail_notification", "s3ObjectKey"),
        (
            '{"detail-type": "Object Created", "source": "aws.s3", "detail": {}}',
            "bad_eventbridge_event",
            "detail.bucket.name",
        ),
        (
            '{"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}',
            "unknown_shape",
            "aws.events",
        ),
    ],
)
def test_poison_bodies_name_what_is_wrong(body: str, reason: str, says: str) -> None:
    error = error_of(body)
    assert error.reason == reason
    assert says in str(error)


def test_an_error_quotes_at_most_a_short_excerpt() -> None:
    error = error_of("x" * 10_000)
    assert len(str(error)) < 200


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_arbitrary_bytes_only_ever_raise_our_error(body: bytes) -> None:
    with contextlib.suppress(NotificationError):
        parse_body(body)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_including_lone_surrogates_only_ever_raises_our_error(body: str) -> None:
    with contextlib.suppress(NotificationError):
        parse_body(body)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=60), min_size=1, max_size=5, unique=True))
def test_s3_event_keys_round_trip(keys: list[str]) -> None:
    body = messages.s3_event("trail", keys)
    note = parse_body(body)
    assert isinstance(note, FetchObjects)
    assert [o.key for o in note.objects] == keys
    encoded = [orjson.loads(body)["Records"][i]["s3"]["object"]["key"] for i in range(len(keys))]
    assert encoded == [urllib.parse.quote_plus(k, safe="/") for k in keys]


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=1, max_value=5))
def test_cloudtrail_records_round_trip(seed: int, n: int) -> None:
    recs = [record(seed + i) for i in range(n)]
    note = parse_body(orjson.dumps({"Records": recs}))
    assert isinstance(note, InlineRecords)
    assert [orjson.loads(r) for r in note.records] == recs
