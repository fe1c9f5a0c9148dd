"""Fragments joined by concatenation are one ordinary gzip member of the joined records."""

from __future__ import annotations

import gzip
import random
import zlib
from datetime import timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from cloudtrail_adapter.config import DeliveryOptions
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.decoding.batches import fragment, gzip_batch, pack_lines
from cloudtrail_adapter.decoding.values import PackLimits
from cloudtrail_adapter.emulator.corpus import START, cloudtrail_record, log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from tests.support.configs import file_config

ACCOUNT = "111122223333"
LINE = st.binary(max_size=300).map(lambda b: b.replace(b"\n", b" "))
GROUPS = st.lists(st.lists(LINE, min_size=1, max_size=20), max_size=12)


def one_member(payload: bytes) -> bytes:
    """Decompresses exactly one gzip member, and checks nothing follows it."""
    inflater = zlib.decompressobj(wbits=31)
    text = inflater.decompress(payload) + inflater.flush()
    assert inflater.eof and not inflater.unused_data
    return text


@given(GROUPS)
def test_joined_fragments_are_one_gzip_member_of_the_newline_joined_lines(
    groups: list[list[bytes]],
) -> None:
    payload, length = gzip_batch([fragment(lines) for lines in groups])
    expected = b"\n".join(line for lines in groups for line in lines)
    assert one_member(payload) == expected == gzip.decompress(payload)
    assert length == len(expected)


@given(st.lists(LINE, max_size=200), st.integers(1, 30), st.integers(1, 2000))
def test_pack_lines_keeps_order_and_limits(lines: list[bytes], records: int, size: int) -> None:
    limits = PackLimits(max_records=records, max_bytes=size)
    fragments = pack_lines(lines, limits)
    texts = [one_member(gzip_batch([f])[0]) for f in fragments]
    assert b"\n".join(texts) == b"\n".join(lines) and sum(f.records for f in fragments) == len(
        lines
    )
    for part in fragments:
        assert part.records <= records
        assert part.raw_bytes + 1 <= size or part.records == 1  # one line may exceed it alone


async def test_many_small_files_still_make_full_batches(
    lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    """Each object is packed on its own, in a worker; the batcher joins their fragments."""
    rng = random.Random(3)
    root = tmp_path / "small"
    root.mkdir()
    for index in range(30):
        when = START + timedelta(minutes=index)
        recs = [
            cloudtrail_record(rng, account=ACCOUNT, region="eu-west-1", when=when) for _ in range(5)
        ]
        (root / f"{index:02}.json.gz").write_bytes(log_file(recs))
    delivery = DeliveryOptions(batch_max_records=50, batch_linger=30.0)

    assert await serve([file_config(root, lc, delivery)], tmp_path / "state") == 0

    assert len({e.json()["eventID"] for e in lc.store.events}) == len(lc.store.events) == 150
    assert lc.usp.messages_received <= 6  # 30 objects; unjoined, they would be 30 batches
