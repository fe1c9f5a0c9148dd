"""Hostile CloudTrail objects, built cheaply: a few MB of gzip that inflate to gigabytes.

A gzip member is written as pieces of raw deflate, each compressed once on its own (ending
on a sync flush) and repeated as often as wanted, with the CRC-32 of the whole combined
from the pieces' (as batches.py joins fragments): 4 GiB of text costs a few ms to build,
not a minute of compressing.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import Final

from isal import isal_zlib

_HEADER: Final = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_FINAL_BLOCK: Final = b"\x03\x00"
MIB: Final = 1 << 20


def gzip_of(parts: Sequence[tuple[bytes, int]]) -> bytes:
    """One gzip member whose text is each `(text, times)` part repeated `times` times."""
    out = [_HEADER]
    crc = length = 0
    for text, times in parts:
        deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        piece = deflater.compress(text) + deflater.flush(zlib.Z_SYNC_FLUSH)
        piece_crc = zlib.crc32(text)
        for _ in range(times):
            out.append(piece)
            crc = isal_zlib.crc32_combine(crc, piece_crc, len(text))
            length += len(text)
    out += [_FINAL_BLOCK, struct.pack("<II", crc, length & 0xFFFFFFFF)]
    return b"".join(out)


def whitespace_bomb(before: bytes, after: bytes, mib: int) -> bytes:
    """`{"Records":[before, <mib MiB of spaces> after]}`: valid, and all but empty."""
    return gzip_of([(b'{"Records":[' + before + b",", 1), (b" " * MIB, mib), (after + b"]}", 1)])


def long_string_bomb(before: bytes, after: bytes, mib: int) -> bytes:
    """`{"Records":[before, {"eventVersion": ..., "x": "<mib MiB>"}, after]}`: the middle
    record is valid JSON but far over any record size."""
    head = b'{"Records":[' + before + b',{"eventVersion":"1.08","x":"'
    return gzip_of([(head, 1), (b"a" * MIB, mib), (b'"},' + after + b"]}", 1)])


def deep_bomb(before: bytes, after: bytes, depth: int) -> bytes:
    """`{"Records":[before, {"eventVersion": ..., "x": [[[...]]]}, after]}`, nested `depth`
    levels: valid JSON that no recursive decoder reads."""
    deep = b'{"eventVersion":"1.08","x":' + b"[" * depth + b"]" * depth + b"}"
    return gzip_of([(b'{"Records":[' + before + b"," + deep + b"," + after + b"]}", 1)])
