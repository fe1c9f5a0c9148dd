"""S3's timestamps are read by the standard library, not dateutil (aws.parse_s3_timestamp):
the same datetimes botocore's own parser gives, for S3's two forms, and botocore's parser
for anything else. Through a real listing and HEAD, the client never calls dateutil."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import dateutil.parser  # type: ignore[import-untyped]
import pytest
from botocore.utils import parse_timestamp
from hypothesis import given
from hypothesis import strategies as st

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions
from tests.support.stand_in import put_objects

moments = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2199, 12, 31), timezones=st.just(UTC)
)


@given(moments)
def test_the_listing_form_reads_as_botocore_reads_it(moment: datetime) -> None:
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    for text in (
        moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
        moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
    ):
        parsed = aws.parse_s3_timestamp(text)
        assert parsed == parse_timestamp(text)
        assert parsed.utcoffset() == timedelta(0)


@given(moments)
def test_the_header_form_reads_as_botocore_reads_it(moment: datetime) -> None:
    text = moment.strftime("%a, %d %b %Y %H:%M:%S GMT")
    parsed = aws.parse_s3_timestamp(text)
    assert parsed == parse_timestamp(text) == moment.replace(microsecond=0)
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text",
    [
        1764583200,  # epoch seconds, as JSON protocols send them
        "1764583200",
        "2026-12-01T10:00:00+05:30",
        "2026-12-01T10:00:00",  # no zone: botocore's rule decides
        "2026-12-01",
        "Tue, 01 Dec 2026 10:00:00 +0000",
        "2026-13-01T10:00:00.000Z",  # the fast path refuses it; botocore says what is wrong
    ],
)
def test_every_other_form_is_botocores_to_read(text: Any) -> None:
    try:
        expected: Any = parse_timestamp(text)
    except ValueError as exc:
        with pytest.raises(type(exc)):
            aws.parse_s3_timestamp(text)
        return
    assert aws.parse_s3_timestamp(text) == expected


async def test_listing_and_head_never_call_dateutil(
    aws_options: AwsOptions, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await put_objects(aws_options, bucket, {"a/1.json.gz": b"x", "a/2.json.gz": b"y"})
    slow: list[Any] = []
    parse, client = dateutil.parser.parse, threading.get_ident()

    def counted(value: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == client:  # not moto's, which serves on threads of its own
            slow.append(value)
        return parse(value, *args, **kwargs)

    monkeypatch.setattr(dateutil.parser, "parse", counted)  # whoever calls it, by any name
    async with aws.client("s3", aws_options) as s3:
        listed = await s3.list_objects_v2(Bucket=bucket)
        head = await s3.head_object(Bucket=bucket, Key="a/1.json.gz")
    modified = [item["LastModified"] for item in listed["Contents"]]
    assert len(modified) == 2 and all(m.utcoffset() == timedelta(0) for m in modified)
    assert head["LastModified"] == modified[0].replace(microsecond=0)
    assert slow == []
