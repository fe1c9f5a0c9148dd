"""The SHA-256 the integrity check compares with a digest's `hashValue`: of the uncompressed
content (as the AWS user guide and aws-cli's validate-logs hash it), taken by the decoder
that already decompresses the object for shipping, whole or streamed, and only when asked."""

from __future__ import annotations

import gzip
import hashlib

import orjson
import pytest

from cloudtrail_adapter.bundles import PackLimits
from cloudtrail_adapter.decode import UTF8_BOM, pack_object
from cloudtrail_adapter.stream_decode import StreamDecoder, pack_in_memory, pack_stream

RECORDS = [{"eventID": f"id-{i}", "eventName": "GetObject", "n": "x" * 300} for i in range(400)]
PLAIN = orjson.dumps({"Records": RECORDS})


def limits(hash_content: bool = True, whole_max_raw: int = 48 << 20) -> PackLimits:
    return PackLimits(1000, 1 << 20, whole_max_raw=whole_max_raw, hash_content=hash_content)


@pytest.mark.parametrize(
    "body",
    [
        gzip.compress(PLAIN),
        PLAIN,  # a plain JSON object: its bytes are its content
        gzip.compress(UTF8_BOM + PLAIN),  # the BOM is content too
        gzip.compress(PLAIN[:5000]) + gzip.compress(PLAIN[5000:]),  # every member
    ],
    ids=["gzip", "plain", "bom", "two-members"],
)
def test_whole_streamed_and_fallback_paths_hash_the_uncompressed_content(body: bytes) -> None:
    content = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
    want = hashlib.sha256(content).hexdigest()
    assert pack_object(body, None, limits()).content_sha256 == want
    assert pack_stream(body, limits()).content_sha256 == want
    # Too large to decode whole: pack_in_memory falls back to streaming, hash and all.
    assert pack_in_memory(body, limits(whole_max_raw=1024)).content_sha256 == want


def test_a_stream_fed_in_pieces_hashes_the_same() -> None:
    body = gzip.compress(PLAIN)
    decoder = StreamDecoder(hash_content=True)
    for at in range(0, len(body), 777):
        decoder.feed(body[at : at + 777])
        while not decoder.hungry:
            decoder.step()
    assert decoder.finish().content_sha256 == hashlib.sha256(PLAIN).hexdigest()


def test_nothing_is_hashed_unless_asked() -> None:
    body = gzip.compress(PLAIN)
    assert pack_object(body, None, limits(hash_content=False)).content_sha256 is None
    assert pack_stream(body, limits(hash_content=False)).content_sha256 is None


def test_hashing_changes_nothing_that_is_shipped() -> None:
    body = gzip.compress(PLAIN)
    hashed, plain = pack_object(body, None, limits()), pack_object(body, None, limits(False))
    assert hashed.fragments == plain.fragments and hashed.records == plain.records
