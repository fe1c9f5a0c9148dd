"""stream_decode.py: a large object decoded piece by piece gives what decode.py gives whole,
under any chunking, with a bounded buffer."""

from __future__ import annotations

import contextlib
import gzip
import zlib

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudtrail_adapter.decoding.decode import decode_object
from cloudtrail_adapter.decoding.stream_decode import (
    DEFAULT_MAX_VALUE,
    STEP_OUTPUT,
    StreamDecoder,
    StreamSummary,
)
from cloudtrail_adapter.decoding.values import OVERSIZED_RECORD, DecodeError
from cloudtrail_adapter.emulator.corpus import log_file
from tests.support.corpus import BAD_BODIES, records

CHUNKS = (1, 2, 3, 7, 64, 4096, 1 << 30)

TRICKY = [
    {"eventID": 'braces } { ] [ and "quotes" \\" inside', "n": [1, [2, {"x": "}"}]]},
    {"eventID": "unicode \u00e9\u4e2d\U0001f600 and escapes \\u0041 \t", "empty": {}},
    {"eventID": "nested", "a": {"b": {"c": [[], {}, "", 0, -1.5e3, True, False, None]}}},
]

GOOD_INPUTS: dict[str, bytes] = {
    "gzip": log_file(records(40, 1)),
    "plain": log_file(records(40, 2), gzipped=False),
    "tricky": log_file(TRICKY),  # type: ignore[arg-type]
    "members": log_file(records(5, 3)) + b"\0\0" + gzip.compress(b" ") + b"\0",
    "pretty": orjson.dumps({"Records": TRICKY}, option=orjson.OPT_INDENT_2),
    "bom": b"\xef\xbb\xbf" + log_file(records(3, 4), gzipped=False),
    "keys_around": b'{"a": [1, {"}": "]"}], "Records": [{"x": 1}] , "z": "\\"" }',
    "empty_records": b'{"Records":[]}',
    "empty_records_spaced": b'{ "Records" : [ \n ] }',
    "zero_bytes": b"",
    "whitespace": b" \n\t ",
    "digest": b'{"awsAccountId":"1","digestStartTime":"2024","digestS3Object":"k"}',
}


def stream(
    data: bytes, chunk: int, max_value_bytes: int = DEFAULT_MAX_VALUE
) -> tuple[StreamSummary, list[bytes]]:
    decoder = StreamDecoder(max_value_bytes)
    lines: list[bytes] = []
    for start in range(0, len(data), chunk):
        decoder.feed(data[start : start + chunk])
        while not decoder.hungry:
            lines += decoder.step()
    return decoder.finish(), lines


def stream_reason(data: bytes, chunk: int, **options: int) -> str:
    with pytest.raises(DecodeError) as caught:
        stream(data, chunk, **options)
    return caught.value.reason


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("name", sorted(GOOD_INPUTS))
def test_any_chunking_gives_what_the_whole_decoder_gives(name: str, chunk: int) -> None:
    data = GOOD_INPUTS[name]
    whole = decode_object(data)
    summary, lines = stream(data, chunk)
    assert lines == whole.records
    assert (summary.kind, summary.records, summary.raw_bytes) == (
        whole.kind,
        len(whole.records),
        whole.raw_bytes,
    )


@pytest.mark.parametrize("chunk", (1, 5, 4096, 1 << 30))
@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_every_bad_object_fails_with_the_whole_decoders_reason(case: str, chunk: int) -> None:
    body, reason = BAD_BODIES[case]
    assert stream_reason(body, chunk) == reason


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"[1, 2]", "not_object"),
        (b"5", "not_object"),
        (b'"text"', "not_object"),
        (b'{"Records": [', "not_json"),
        (b'{"Records": [{"a": 1}', "not_json"),
        (b'{"Records": [{"a": 1}] } extra', "not_json"),
        (b'{"Records": [{"a": 1},]}', "not_json"),
        (b'{"Records": [{"a": "unterminated}]}', "not_json"),
        (b'{"a": 1,}', "not_json"),
        (b"{}", "no_records"),
        (b'{"Records": "no"}', "records_not_list"),
        (b"\x1f", "not_json"),
        (b"\x1f\x8b", "truncated_gzip"),
        (gzip.compress(b'{"Records":[]}') + b"\x1f", "corrupt_gzip"),
    ],
)
def test_edge_documents_fail_like_the_whole_decoder(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as whole:
        decode_object(data)
    assert whole.value.reason == reason
    for chunk in (1, 3, 1 << 30):
        assert stream_reason(data, chunk) == reason, chunk


def test_a_value_larger_than_the_limit_is_record_too_large_not_unbounded_buffering() -> None:
    data = log_file([{"eventID": "big", "blob": "x" * 50_000}, {"eventID": "small"}])
    assert stream_reason(data, 1024, max_value_bytes=10_000) == "record_too_large"
    summary, lines = stream(data, 1024, max_value_bytes=100_000)
    assert summary.records == 2 and len(lines[0]) > 50_000


def test_records_over_256kb_are_delivered_and_reported_by_both_decoders() -> None:
    recs = [{"eventID": "a"}, {"eventID": "huge", "blob": "y" * OVERSIZED_RECORD}, {"b": 1}]
    data = log_file(recs)  # type: ignore[arg-type]
    whole = decode_object(data)
    summary, lines = stream(data, 8192)
    assert lines == whole.records and len(lines) == 3
    size = len(whole.records[1])
    assert whole.oversized == summary.oversized == ((1, size),)


def test_the_buffer_stays_bounded_however_large_the_object() -> None:
    """A 100 MB object (and a gzip bomb of whitespace) never buffers more than one step."""
    record = orjson.dumps({"eventID": "e", "pad": "p" * 2000})
    body = b'{"Records":[' + b",".join([record] * 50_000) + b"]" + b" " * (60 << 20) + b"}"
    data = zlib.compress(body, 1, wbits=31)
    decoder = StreamDecoder()
    held = count = 0
    for start in range(0, len(data), 1 << 20):
        decoder.feed(data[start : start + (1 << 20)])
        while not decoder.hungry:
            count += len(decoder.step())
            held = max(held, decoder.buffered)
    assert decoder.finish().records == count == 50_000
    assert held <= STEP_OUTPUT + (1 << 20) + len(record), held


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300), chunk=st.integers(1, 40), gz=st.booleans())
def test_arbitrary_bytes_raise_only_the_typed_error(data: bytes, chunk: int, gz: bool) -> None:
    body = gzip.compress(data) if gz else data
    with contextlib.suppress(DecodeError):
        stream(body, chunk)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    recs=st.lists(st.dictionaries(st.text(max_size=6), json_values, max_size=4), max_size=6),
    chunk=st.integers(1, 50),
    indent=st.booleans(),
)
def test_valid_records_round_trip_under_any_chunking(
    recs: list[dict[str, object]], chunk: int, indent: bool
) -> None:
    plain = orjson.dumps({"Records": recs}, option=orjson.OPT_INDENT_2 if indent else 0)
    summary, lines = stream(gzip.compress(plain), chunk)
    assert [orjson.loads(line) for line in lines] == recs
    assert lines == decode_object(plain).records and summary.records == len(recs)


def test_nesting_deeper_than_msgspec_reads_is_not_json_not_a_crash() -> None:
    """A RecursionError out of msgspec would have failed the object as an unknown error."""
    deep = b'{"Records":[{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}]}"
    with pytest.raises(DecodeError) as caught:
        stream(gzip.compress(deep), 1 << 20)
    assert caught.value.reason == "not_json" and "nested deeper" in str(caught.value)


def test_past_max_inflated_the_text_is_refused_whatever_the_ratio() -> None:
    body = gzip.compress(b'{"Records":[' + b" " * (8 << 20) + b"]}")
    decoder = StreamDecoder(max_inflated=4 << 20)
    decoder.feed(body)
    with pytest.raises(DecodeError) as caught:
        while not decoder.hungry:
            decoder.step()
    assert caught.value.reason == "inflated_too_large"
    assert str(4 << 20) in str(caught.value) and "max_inflated_size" in str(caught.value)
    roomy = StreamDecoder(max_inflated=9 << 20)
    roomy.feed(body)
    while not roomy.hungry:
        roomy.step()
    assert roomy.finish().records == 0
