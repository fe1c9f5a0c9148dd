"""One bad record never costs its neighbours: the salvage scanner on its own (pure)."""

from __future__ import annotations

import gzip
import io
import json
import tempfile
import tracemalloc
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudtrail_adapter.decoding.decode import decode_object
from cloudtrail_adapter.decoding.packing import pack_spooled, pack_steps, pack_whole
from cloudtrail_adapter.decoding.salvage import (
    MAX_UNREADABLE,
    RAW_CAP,
    Salvaged,
    Salvager,
    record_at,
    salvage,
)
from cloudtrail_adapter.decoding.values import DecodeError, PackLimits, Unreadable
from tests.support.bombs import long_string_bomb
from tests.support.corpus import records

MAX_RECORD = 1 << 20
WHEN = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def lines(data: bytes, got: Salvaged) -> list[bytes]:
    return [record_at(data, span) for span in got.records]


def compact_file(recs: list[dict[str, Any]]) -> tuple[bytes, list[tuple[int, int]]]:
    """The file and each record's byte range in it."""
    parts = [orjson.dumps(r) for r in recs]
    head = b'{"Records":['
    ranges, at = [], len(head)
    for part in parts:
        ranges.append((at, at + len(part)))
        at += len(part) + 1
    return head + b",".join(parts) + b"]}", ranges


def pretty_file(recs: list[dict[str, Any]]) -> tuple[bytes, list[tuple[int, int]]]:
    parts = [json.dumps(r, indent=4).replace("\n", "\n    ").encode() for r in recs]
    head = b'{\n  "Records": [\n    '
    sep = b",\n    "
    ranges, at = [], len(head)
    for part in parts:
        ranges.append((at, at + len(part)))
        at += len(part) + len(sep)
    return head + sep.join(parts) + b"\n  ]\n}\n", ranges


DEFECTS = {
    "lone_surrogate": (b'"eventName":"', b'"eventName":"X\\ud800'),
    "invalid_utf8": (b'"eventName":"', b'"eventName":"\xff'),
    "nan": (b'{"eventVersion"', b'{"bad":NaN,"eventVersion"'),
    "control_character": (b'"eventName":"', b'"eventName":"\x01'),
}


def damaged(defect: str) -> tuple[bytes, list[dict[str, Any]], int]:
    """Five compact records; the third carries the defect."""
    recs = records(5, 3, when=WHEN)
    parts = [orjson.dumps(r) for r in recs]
    old, new = DEFECTS[defect]
    assert old in parts[2]
    parts[2] = parts[2].replace(old, new, 1)
    return b'{"Records":[' + b",".join(parts) + b"]}", recs, 2


@pytest.mark.parametrize("defect", ["invalid_utf8", "nan", "control_character"])
def test_one_defect_costs_one_record(defect: str) -> None:
    data, recs, bad = damaged(defect)
    with pytest.raises(DecodeError):
        decode_object(data)  # the strict path refuses the whole file
    got = salvage(data, max_record=MAX_RECORD)
    assert [orjson.loads(r) for r in lines(data, got)] == recs[:bad] + recs[bad + 1 :]
    [lost] = got.unreadable
    expected = {"invalid_utf8": "invalid_utf8", "nan": "non_finite_number"}
    assert lost.reason == expected.get(defect, "control_character")
    assert lost.index == bad
    assert data[lost.start : lost.end] == lost.raw
    assert lost.raw.startswith(b"{") and lost.raw.endswith(b"}")
    assert DEFECTS[defect][1][-4:] in lost.excerpt or b"NaN" in lost.excerpt


def test_a_lone_surrogate_escape_is_json_and_ships_unchanged() -> None:
    data, recs, bad = damaged("lone_surrogate")
    with pytest.raises(DecodeError):
        decode_object(data)
    got = salvage(data, max_record=MAX_RECORD)
    assert got.unreadable == []
    assert [orjson.loads(r) for i, r in enumerate(lines(data, got)) if i != bad] == recs[:2] + recs[
        3:
    ]
    assert b"X\\ud800" in lines(data, got)[bad]  # the escape itself, byte for byte


def test_pretty_printed_files_salvage_alike() -> None:
    recs = records(6, 5, when=WHEN)
    data, ranges = pretty_file(recs)
    start, _ = ranges[4]
    broken = data[: start + 40] + b"\xff" + data[start + 41 :]
    got = salvage(broken, max_record=MAX_RECORD)
    assert [orjson.loads(r) for r in lines(broken, got)] == recs[:4] + recs[5:]
    assert all(b"\n" not in r for r in lines(broken, got))
    assert [u.reason for u in got.unreadable] == ["invalid_utf8"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"Records":[{"a":' + b"[" * 100 + b"]" * 100 + b'}, {"eventVersion":"1"}]}', "too_deep"),
        (b'{"Records":[{"a":"' + b"x" * 5000 + b'"}, {"eventVersion":"1"}]}', "record_too_large"),
        (b'{"Records":["' + b"x" * 5000, "record_not_object"),
    ],
)
def test_limits_get_a_reason_not_a_crash(body: bytes, reason: str) -> None:
    got = salvage(body, max_record=1024)
    assert got.unreadable and got.unreadable[0].reason == reason
    if b"eventVersion" in body:
        assert lines(body, got) == [b'{"eventVersion":"1"}']


def test_no_records_array_at_all_is_still_an_error() -> None:
    with pytest.raises(DecodeError):
        salvage(b"\x00\x01 not json at all", max_record=MAX_RECORD)


# ---- random single-byte damage --------------------------------------------------------------

FILES = {
    "compact": compact_file(records(12, 21, when=WHEN)),
    "pretty": pretty_file(records(8, 22, when=WHEN)),
}


def normal(record: bytes) -> bytes:
    """A pretty record as compact bytes, to compare; a touched one may not even be that."""
    try:
        return orjson.dumps(orjson.loads(record))
    except orjson.JSONDecodeError:
        return record


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.sampled_from(sorted(FILES)),
    where=st.floats(min_value=0, max_value=1, exclude_max=True),
    byte=st.integers(min_value=0, max_value=255),
)
def test_random_damage_costs_only_the_record_it_touches(
    shape: str, where: float, byte: int
) -> None:
    data, ranges = FILES[shape]
    first, last = ranges[0][0], ranges[-1][1]
    at = first + int(where * (last - first))
    if data[at] == byte:
        return
    broken = data[:at] + bytes([byte]) + data[at + 1 :]
    touched = {i for i, (s, e) in enumerate(ranges) if s <= at < e}
    got = salvage(broken, max_record=MAX_RECORD)
    originals = [data[s:e] for s, e in ranges]
    expect = [
        orjson.dumps(orjson.loads(o)) if shape == "pretty" else o
        for i, o in enumerate(originals)
        if i not in touched
    ]
    shipped = [normal(r) if shape == "pretty" else r for r in lines(broken, got)]
    untouched = [r for r in shipped if r in expect]
    assert untouched == expect, f"damage at {at} ({byte:#x}) cost an untouched record"
    assert len(shipped) - len(untouched) <= len(touched)  # only the touched one may differ


@pytest.mark.parametrize("gzipped", [True, False])
def test_every_way_of_decoding_salvages_alike(gzipped: bool) -> None:
    """Whole (the worker pool), in steps (a large text held compressed) and spooled to a
    file (an object read in ranges): the same records, the same parts set aside."""
    data, _, _ = damaged("invalid_utf8")
    body = gzip.compress(data) if gzipped else data
    limits = PackLimits(500, 1 << 20)
    whole = pack_whole(body, limits)
    steps = pack_steps(body, limits)
    with tempfile.TemporaryFile() as raw:
        raw.write(body)
        spooled = pack_spooled(raw, limits, DecodeError("invalid_utf8", "test"))
    for packed in (whole, steps, spooled):
        assert packed.records == 4 and [u.reason for u in packed.unreadable] == ["invalid_utf8"]
        assert packed.unreadable == whole.unreadable
        assert [f.crc for f in packed.fragments] == [f.crc for f in whole.fragments]


# ---- a text of any size, a step at a time -------------------------------------------------


def large_damaged_file() -> tuple[bytes, int]:
    """~6 MB of records, pretty and compact, with damage of every kind spread through it
    (more than the window holds at once), and how many records are intact."""
    recs = records(400, 31)
    parts = [orjson.dumps(r) for r in recs] * 10
    intact = len(parts)
    for at, (old, new) in zip(range(50, len(parts), 700), DEFECTS.values(), strict=False):
        parts[at] = parts[at].replace(old, new, 1)
        intact -= 1
    parts[1000] = parts[1000][:-40]  # cut short: the structure breaks past the record
    parts[2000] = b"5"
    parts[3000] = json.dumps(recs[0], indent=2).encode()
    body = b'{"Records":[\n' + b",\n".join(parts) + b"\n]}"
    assert len(body) > 4 << 20
    return body, intact


@pytest.mark.parametrize("piece", [1 << 10, 7 << 10, 1 << 20])
def test_a_text_read_in_pieces_salvages_as_the_whole_of_it(piece: int) -> None:
    """The window lets go of what it read (past 1 MiB): the result may not depend on
    where the pieces of text fall."""
    data, _ = large_damaged_file()
    whole = salvage(data, max_record=MAX_RECORD)
    pieces = (data[at : at + piece] for at in range(0, len(data), piece))
    salvager = Salvager(pieces, max_record=MAX_RECORD)
    spans: list[tuple[int, int]] = []
    parts: list[Unreadable] = []
    while not salvager.done:
        found = salvager.step(64 << 10)
        assert [record_at(data, s) for s in found.spans] == found.records
        spans += found.spans
        parts += found.unreadable
    assert spans == whole.records and parts == whole.unreadable
    assert {p.reason for p in parts} >= {"invalid_utf8", "record_not_object"}


def test_a_salvage_from_compressed_bytes_holds_a_step_of_text_not_the_text() -> None:
    """A 256 MiB string in one record: the salvage's allocations stay near one record's
    bound (32 MiB), not the text's size; the record alone is set aside."""
    before, after = orjson.dumps(records(1, 1)[0]), orjson.dumps(records(1, 2)[0])
    body = long_string_bomb(before, after, 256)
    limits = PackLimits(500, 1 << 20)
    tracemalloc.start()
    try:
        packed = pack_spooled(io.BytesIO(body), limits, DecodeError("record_too_large", "t"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 128 << 20, f"{peak >> 20} MiB"
    assert packed.records == 2 and [u.reason for u in packed.unreadable] == ["record_too_large"]
    [lost] = packed.unreadable
    assert (lost.index, len(lost.raw)) == (1, RAW_CAP)
    assert packed.raw_bytes > 256 << 20


def test_more_unreadable_parts_than_a_damaged_file_has_refuse_the_object() -> None:
    """Each part is held until the object is done with; a file of nothing but damage
    would hold without bound (a few bytes of `5,` each)."""

    def damaged(parts: int) -> bytes:
        return b'{"Records":[' + b'5,{"eventVersion":"1"},' * parts + b'{"eventVersion":"1"}]}'

    assert len(salvage(damaged(MAX_UNREADABLE), max_record=64).unreadable) == MAX_UNREADABLE
    with pytest.raises(DecodeError) as caught:
        salvage(damaged(MAX_UNREADABLE + 1), max_record=64)
    assert caught.value.reason == "too_many_unreadable"
