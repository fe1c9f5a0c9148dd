"""The SHA-256 the integrity check compares with a digest's `hashValue`: of the uncompressed
content (as the AWS user guide and aws-cli's validate-logs hash it), taken by the decoder
that already decompresses the object for shipping, whole, in steps or salvaged, and only
when asked."""

from __future__ import annotations

import gzip
import hashlib
import tempfile

import orjson
import pytest

from cloudtrail_adapter.decoding.decode import UTF8_BOM, pack_object
from cloudtrail_adapter.decoding.packing import pack_spooled, pack_steps, pack_whole
from cloudtrail_adapter.decoding.stream_decode import StreamDecoder
from cloudtrail_adapter.decoding.values import DecodeError, PackLimits

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
    assert pack_steps(body, limits()).content_sha256 == want
    assert pack_whole(body, limits()).content_sha256 == want
    # Too large to decode whole: pack_whole falls back to steps, hash and all.
    assert pack_whole(body, limits(whole_max_raw=1024)).content_sha256 == want


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
    assert pack_steps(body, limits(hash_content=False)).content_sha256 is None


def test_hashing_changes_nothing_that_is_shipped() -> None:
    body = gzip.compress(PLAIN)
    hashed, plain = pack_object(body, None, limits()), pack_object(body, None, limits(False))
    assert hashed.fragments == plain.fragments and hashed.records == plain.records


def damaged_body() -> bytes:
    """A file the strict decoders refuse (one record's string holds a byte that is not
    UTF-8), so it is salvaged: its content hash is still that of all of its bytes."""
    text = PLAIN.replace(b'"eventID":"id-7"', b'"eventID":"id-\xff"', 1)
    assert text != PLAIN
    return gzip.compress(text)


def test_a_salvaged_object_hashes_its_whole_content_on_every_path() -> None:
    body = damaged_body()
    want = hashlib.sha256(gzip.decompress(body)).hexdigest()
    whole = pack_whole(body, limits())
    assert whole.unreadable and 0 < whole.records < len(RECORDS)
    assert whole.content_sha256 == want
    assert pack_steps(body, limits()).content_sha256 == want
    assert pack_whole(body, limits(whole_max_raw=1024)).content_sha256 == want
    with tempfile.TemporaryFile() as raw:  # the pipeline's path for objects read in ranges
        raw.write(body)
        cause = DecodeError("invalid_utf8", "refused by the stream decoder")
        spooled = pack_spooled(raw, limits(), cause)
    assert spooled.content_sha256 == want and spooled.unreadable
    assert pack_whole(body, limits(hash_content=False)).content_sha256 is None
