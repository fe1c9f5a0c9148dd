"""Records -> deflate fragments -> gzip batches joined by concatenation.

A worker process compresses an object's records into *fragments*: raw deflate streams that
end on a sync flush (not final), each with the CRC-32 and length of its text. Fragments,
from one object or many, join into a batch by concatenation: a gzip header, the fragments
with a compressed newline between them, an empty final block, and a trailer whose CRC is
combined from theirs (`crc32_combine`, as pigz does). The result is one ordinary gzip
member, so the event loop builds a batch of any mix of objects without compressing
anything, and small files still make full batches. Everything taken and returned pickles
small, for the process pool.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from isal import isal_zlib

from cloudtrail_adapter.decoding.event_keys import Line, record_keys
from cloudtrail_adapter.decoding.values import Fragment, PackLimits

__all__ = [
    "BATCH_LEVEL",
    "Line",
    "drop_lines",
    "fragment",
    "gzip_batch",
    "pack_lines",
]

#: isa-l level for outgoing batches: about as fast as level 0, and much smaller.
BATCH_LEVEL: Final = 1


# gzip header: magic, deflate, no flags, mtime 0, no extra flags, OS unknown (RFC 1952).
_HEADER: Final = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_FINAL_BLOCK: Final = b"\x03\x00"  # an empty final block with fixed Huffman codes
_RAW_DEFLATE: Final = -isal_zlib.MAX_WBITS


def fragment(lines: Sequence[Line], *, keyed: bool = False) -> Fragment:
    text = b"\n".join(lines)
    deflater = isal_zlib.compressobj(BATCH_LEVEL, isal_zlib.DEFLATED, _RAW_DEFLATE)
    body = deflater.compress(text) + deflater.flush(isal_zlib.Z_SYNC_FLUSH)
    keys = record_keys(lines) if keyed else b""
    return Fragment(body, len(lines), len(text), isal_zlib.crc32(text), keys)


def drop_lines(part: Fragment, drop: Sequence[int]) -> Fragment:
    """The fragment without the records at `drop` (duplicates), recompressed. Records are
    single lines, so splitting the text on newlines gives them back exactly."""
    text = isal_zlib.decompressobj(wbits=_RAW_DEFLATE).decompress(part.deflate)
    skip = set(drop)
    return fragment([line for i, line in enumerate(text.split(b"\n")) if i not in skip])


_NEWLINE: Final = fragment([b"", b""])  # one "\n", to go between fragments


def pack_lines(lines: Sequence[Line], limits: PackLimits) -> list[Fragment]:
    """Greedy fragments of at most `max_records` lines and `max_bytes` (a line counts its
    newline), so that a batch of one fragment is within the limits."""
    fragments: list[Fragment] = []
    start = size = 0
    for index, line in enumerate(lines):
        grown = size + len(line) + 1
        if index > start and (index - start >= limits.max_records or grown > limits.max_bytes):
            fragments.append(fragment(lines[start:index], keyed=limits.dedup))
            start, grown = index, len(line) + 1
        size = grown
    if start < len(lines):
        fragments.append(fragment(lines[start:], keyed=limits.dedup))
    return fragments


def gzip_batch(fragments: Sequence[Fragment]) -> tuple[bytes, int]:
    """One gzip member holding the fragments' texts joined by newlines, and its length."""
    parts = [_HEADER]
    crc = length = 0
    for index, part in enumerate(fragments):
        if index:
            parts.append(_NEWLINE.deflate)
            crc = isal_zlib.crc32_combine(crc, _NEWLINE.crc, 1)
            length += 1
        parts.append(part.deflate)
        crc = isal_zlib.crc32_combine(crc, part.crc, part.raw_bytes)
        length += part.raw_bytes
    parts += [_FINAL_BLOCK, struct.pack("<II", crc, length & 0xFFFFFFFF)]
    return b"".join(parts), length
