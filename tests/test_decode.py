"""decode.py: bytes of a CloudTrail object -> compact one-line records, or a typed error."""

from __future__ import annotations

import gzip
import pickle
import random
from datetime import UTC, datetime
from typing import Any, get_args

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudtrail_adapter.decoding.batches import fragment, gzip_batch
from cloudtrail_adapter.decoding.decode import decode_object
from cloudtrail_adapter.decoding.values import DecodedObject, DecodeError, DecodeReason
from cloudtrail_adapter.emulator.corpus import digest_file, digest_key, log_file
from cloudtrail_adapter.sources.trail_layout import is_digest_key
from tests.support.corpus import records

REGION = "eu-west-1"
WHEN = datetime(2024, 5, 6, 12, 30, tzinfo=UTC)
DIGEST_KEY = digest_key(
    prefix="", org_id="o-a1b2c3d4e5", account="111122223333", region="eu-west-1", when=WHEN
)
LOG_KEY = (
    "AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail/eu-west-1/2024/05/06/"
    "111122223333_CloudTrail_eu-west-1_20240506T1230Z_AbCdEfGhIjKlMnOp.json.gz"
)


def parsed(decoded: DecodedObject) -> list[Any]:
    return [orjson.loads(line) for line in decoded.records]


def reason_of(data: bytes) -> str:
    with pytest.raises(DecodeError) as caught:
        decode_object(data)
    return caught.value.reason


# --- what decodes ----------------------------------------------------------------------


def test_gzip_and_plain_inputs_give_the_same_compact_lines() -> None:
    recs = records(50, 1, region=REGION, when=WHEN)
    plain = log_file(recs, gzipped=False)

    from_gzip = decode_object(log_file(recs))
    from_plain = decode_object(plain)

    assert from_gzip == from_plain
    assert from_gzip.kind == "log"
    assert from_gzip.raw_bytes == len(plain)
    # orjson's compact output is already what compaction produces, byte for byte.
    assert from_gzip.records == [orjson.dumps(r) for r in recs]
    assert parsed(from_gzip) == recs


def test_gzip_is_detected_by_magic_bytes_not_by_name() -> None:
    recs = records(3, 2, region=REGION, when=WHEN)
    as_gzip = decode_object(log_file(recs), key="no-suffix/object.json")
    as_plain = decode_object(log_file(recs, gzipped=False), key=LOG_KEY)  # says .json.gz

    assert parsed(as_gzip) == parsed(as_plain) == recs


@pytest.mark.parametrize("body", [b'{"Records":[]}', b'{ "Records" : [ ] }\n'])
def test_empty_records_array_is_a_log_with_no_records(body: bytes) -> None:
    for data in (body, gzip.compress(body)):
        decoded = decode_object(data)
        assert decoded == DecodedObject("log", [], len(body))


@pytest.mark.parametrize(
    "data",
    [b"", b" \n\t\r\n ", gzip.compress(b""), gzip.compress(b"\n")],
    ids=["zero-bytes", "whitespace", "gzip-of-nothing", "gzip-of-newline"],
)
def test_zero_byte_and_whitespace_objects_are_empty(data: bytes) -> None:
    decoded = decode_object(data)
    assert decoded.kind == "empty"
    assert decoded.records == []


def test_a_digest_file_is_recognised_by_its_content() -> None:
    body = digest_file(
        bucket="trail-bucket",
        key=DIGEST_KEY,
        account="111122223333",
        start=WHEN.replace(hour=11),
        end=WHEN,
        rng=random.Random(3),
        logs=[(LOG_KEY, records(4, 3, region=REGION, when=WHEN))],
    )

    decoded = decode_object(body)

    assert decoded.kind == "digest"
    assert decoded.records == []
    assert decoded.raw_bytes == len(gzip.decompress(body))


def test_the_key_hint_classifies_a_records_less_object_as_digest() -> None:
    body = b'{"awsAccountId":"111122223333","logFiles":[]}'
    assert decode_object(body, key=DIGEST_KEY).kind == "digest"
    with pytest.raises(DecodeError) as caught:
        decode_object(body, key=LOG_KEY)
    assert caught.value.reason == "no_records"


def test_records_win_over_a_digest_key() -> None:
    recs = records(2, 4, region=REGION, when=WHEN)
    decoded = decode_object(log_file(recs), key=DIGEST_KEY)
    assert decoded.kind == "log"
    assert parsed(decoded) == recs


def test_pretty_printed_input_compacts_to_one_line_per_record() -> None:
    recs = records(20, 5, region=REGION, when=WHEN)
    document = {"Version": "ignored", "Records": recs, "Trailer": {"nested": [1, 2]}}
    pretty = orjson.dumps(document, option=orjson.OPT_INDENT_2)
    assert pretty.count(b"\n") > 100

    decoded = decode_object(pretty)

    assert len(decoded.records) == len(recs)
    for line, record in zip(decoded.records, recs, strict=True):
        assert b"\n" not in line and b"\r" not in line
        assert line.startswith(b"{") and line.endswith(b"}")
        assert orjson.loads(line) == record
        assert line == orjson.dumps(record)


def test_escapes_and_utf8_are_preserved_byte_for_byte() -> None:
    record = (
        b'{ "s" : "caf\\u00e9 \\ud83d\\ude00 tab\\there \\"q\\" back\\\\slash line\\nbreak",\n'
        b'  "raw" : "caf\xc3\xa9 \xe3\x83\xad\xe3\x82\xb0",  "n" : [ 1.50, -0, 1e3 ] }'
    )
    decoded = decode_object(b'{"Records": [\n  ' + record + b"\n]}")

    (line,) = decoded.records
    assert line == (
        b'{"s":"caf\\u00e9 \\ud83d\\ude00 tab\\there \\"q\\" back\\\\slash line\\nbreak",'
        b'"raw":"caf\xc3\xa9 \xe3\x83\xad\xe3\x82\xb0","n":[1.50,-0,1e3]}'
    )
    assert orjson.loads(line) == orjson.loads(record)


def test_concatenated_gzip_members_are_all_read_and_nul_padding_is_ignored() -> None:
    recs = records(10, 6, region=REGION, when=WHEN)
    plain = log_file(recs, gzipped=False)
    half = len(plain) // 2

    data = gzip.compress(plain[:half]) + gzip.compress(plain[half:]) + b"\0" * 512

    decoded = decode_object(data)
    assert parsed(decoded) == recs
    assert decoded.raw_bytes == len(plain)


def test_a_utf8_byte_order_mark_is_tolerated() -> None:
    recs = records(2, 7, region=REGION, when=WHEN)
    decoded = decode_object(b"\xef\xbb\xbf" + log_file(recs, gzipped=False))
    assert parsed(decoded) == recs


def test_results_and_errors_survive_pickling_for_a_process_pool() -> None:
    decoded = decode_object(log_file(records(3, 8, region=REGION, when=WHEN)))
    assert pickle.loads(pickle.dumps(decoded)) == decoded  # noqa: S301

    with pytest.raises(DecodeError) as caught:
        decode_object(b'{"Records":[1]}')
    copy = pickle.loads(pickle.dumps(caught.value))  # noqa: S301
    assert isinstance(copy, DecodeError)
    assert (copy.reason, str(copy)) == (caught.value.reason, str(caught.value))


# --- what does not decode ----------------------------------------------------------------

GOOD_GZIP = gzip.compress(b'{"Records":[{"eventID":"a"},{"eventID":"b"}]}', mtime=0)

ERROR_CASES: list[tuple[str, bytes, str]] = [
    (
        "corrupt_gzip",
        GOOD_GZIP[:10] + b"\xff" * 6 + GOOD_GZIP[16:],
        "corrupt gzip member at byte 0",
    ),
    ("corrupt_gzip", GOOD_GZIP[:-8] + b"\0\0\0\0" + GOOD_GZIP[-4:], "checksum"),
    ("corrupt_gzip", GOOD_GZIP[:2] + b"\x07" + GOOD_GZIP[3:], "compress method"),
    ("corrupt_gzip", GOOD_GZIP + b"garbage", "7 bytes that are not gzip"),
    (
        "corrupt_gzip",
        GOOD_GZIP + GOOD_GZIP[:-8] + bytes([GOOD_GZIP[-8] ^ 1]) + GOOD_GZIP[-7:],
        f"member at byte {len(GOOD_GZIP)}",
    ),
    ("truncated_gzip", GOOD_GZIP[:-4], "ends before the end of the member at byte 0"),
    ("truncated_gzip", GOOD_GZIP[:15], "ends before the end"),
    ("truncated_gzip", b"\x1f\x8b", "ends before the end"),
    ("truncated_gzip", GOOD_GZIP + GOOD_GZIP[:20], f"member at byte {len(GOOD_GZIP)}"),
    ("not_json", b"hello", "not JSON"),
    ("not_json", b'{"Records":[{"a":1}', "truncated"),
    ("not_json", b'{"Records":[]} {"Records":[]}', "trailing characters"),
    ("not_json", b'{"Records":[{"a":"raw\nnewline"}]}', "invalid character"),
    ("not_json", b'{"Records":[' + b"[" * 100_000 + b"]" * 100_000 + b"]}", "nested deeper"),
    ("not_object", b'[{"eventID":"a"}]', "document is an array"),
    ("not_object", b'"Records"', "document is a string"),
    ("no_records", b'{"Type":"Notification","Message":"{}"}', "keys: 'Type', 'Message'"),
    ("no_records", b"{}", "keys: none"),
    ("records_not_list", b'{"Records":{"eventID":"a"}}', "Records is an object, not an array"),
    ("records_not_list", b'{"Records":null}', "Records is null"),
    ("records_not_list", b'{"Records":"[]"}', "Records is a string"),
    ("record_not_object", b'{"Records":[{"a":1},2]}', "Records[1] is a number"),
    ("record_not_object", b'{"Records":[[{"a":1}]]}', "Records[0] is an array"),
    ("record_not_object", b'{"Records":[null]}', "Records[0] is null"),
    ("invalid_utf8", b'{"Records":[{"a":"\xff\xfe"}]}', "invalid UTF-8 at byte 18"),
    ("invalid_utf8", b'{"Records":[{"a":"\xed\xa0\x80"}]}', "invalid UTF-8"),  # a surrogate
]


@pytest.mark.parametrize(
    ("reason", "data", "says"),
    ERROR_CASES,
    ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(ERROR_CASES)],
)
def test_each_failure_has_a_stable_reason_and_a_message_naming_it(
    reason: str, data: bytes, says: str
) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_object(data)
    assert caught.value.reason == reason
    assert says in str(caught.value)


def test_every_reason_code_is_exercised_above() -> None:
    """record_too_large exists only when streaming (test_stream_decode.py)."""
    whole_reasons = set(get_args(DecodeReason)) - {"record_too_large"}
    assert {reason for reason, _, _ in ERROR_CASES} == whole_reasons


def test_records_not_object_inside_gzip_is_reported_the_same() -> None:
    assert reason_of(gzip.compress(b'{"Records":["x"]}')) == "record_not_object"


# --- properties ------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=16,
)
json_records = st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=6), max_size=8)


def decodes_or_raises_decode_error(data: bytes) -> None:
    try:
        result = decode_object(data)
    except DecodeError as exc:
        assert exc.reason in get_args(DecodeReason)
        return
    assert all(line[:1] == b"{" and b"\n" not in line for line in result.records)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_only_ever_raise_decode_error(data: bytes) -> None:
    decodes_or_raises_decode_error(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=256))
def test_arbitrary_bytes_after_gzip_magic_only_ever_raise_decode_error(tail: bytes) -> None:
    decodes_or_raises_decode_error(b"\x1f\x8b" + tail)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_damaged_gzip_only_ever_raises_decode_error(data: st.DataObject) -> None:
    body = bytearray(GOOD_GZIP)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(body) - 1))
        body[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(2, len(body)))
    decodes_or_raises_decode_error(bytes(body[:cut]))


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_json_document_only_ever_raises_decode_error(value: Any) -> None:
    decodes_or_raises_decode_error(orjson.dumps(value))
    decodes_or_raises_decode_error(orjson.dumps({"Records": value}))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_records, st.booleans(), st.booleans())
def test_valid_files_round_trip(recs: list[dict[str, Any]], pretty: bool, gzipped: bool) -> None:
    data = orjson.dumps({"Records": recs}, option=orjson.OPT_INDENT_2 if pretty else 0)
    if gzipped:
        data = gzip.compress(data)

    decoded = decode_object(data)

    assert decoded.kind == "log"
    assert all(b"\n" not in line for line in decoded.records)
    assert parsed(decoded) == recs


# --- gzip_batch and is_digest_key -------------------------------------------------


def test_a_batch_is_gzip_of_newline_joined_lines() -> None:
    lines = decode_object(log_file(records(30, 9, region=REGION, when=WHEN))).records

    payload, raw_length = gzip_batch([fragment(lines)])

    assert gzip.decompress(payload) == b"\n".join(lines)
    assert raw_length == len(b"\n".join(lines))
    assert len(payload) < raw_length / 3
    assert gzip_batch([fragment(lines)]) == (payload, raw_length)  # no timestamp in the header


def test_a_batch_of_nothing_is_valid_gzip() -> None:
    payload, raw_length = gzip_batch([])
    assert (gzip.decompress(payload), raw_length) == (b"", 0)


@pytest.mark.parametrize(
    ("key", "digest"),
    [
        (DIGEST_KEY, True),
        ("AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2024/05/06/x.json.gz", True),
        ("111122223333_CloudTrail-Digest_us-east-1_trail_us-east-1_20240506T120000Z.json.gz", True),
        (LOG_KEY, False),
        ("AWSLogs/111122223333/CloudTrail-Insight/us-east-1/2024/05/06/x.json.gz", False),
        ("AWSLogs/111122223333/CloudTrail-DigestArchive/us-east-1/x.json.gz", False),
        ("", False),
    ],
)
def test_is_digest_key(key: str, digest: bool) -> None:
    assert is_digest_key(key) is digest
