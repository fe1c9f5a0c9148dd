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
from dataclasses import dataclass
from typing import Final, Literal

from isal import isal_zlib

from cloudtrail_adapter.decoding.event_keys import Line, record_keys
from cloudtrail_adapter.decoding.filters import Matcher

__all__ = [
    "BATCH_LEVEL",
    "Fragment",
    "Line",
    "PackLimits",
    "PackedObject",
    "Unreadable",
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


@dataclass(frozen=True, slots=True)
class PackLimits:
    """How records are packed into batches, how large a document is decoded whole, how
    large a text is decoded at all (`max_inflated`, the `max_inflated_size` key; None: no
    bound), and which records are packed at all (`keep`; None keeps every one)."""

    max_records: int
    max_bytes: int
    whole_max_raw: int = 48 << 20
    max_inflated: int | None = None
    keep: Matcher | None = None
    dedup: bool = False  # give each fragment its records' keys (event_keys.record_keys)
    hash_content: bool = False  # SHA-256 of the uncompressed content (the integrity check)


@dataclass(frozen=True, slots=True)
class Fragment:
    """Newline-joined records as a non-final raw deflate stream; `raw_bytes` and `crc` are
    the length and CRC-32 of that text."""

    deflate: bytes
    records: int
    raw_bytes: int
    crc: int
    keys: bytes = b""  # event_keys.ENTRY bytes per record, when packed for de-duplication


@dataclass(frozen=True, slots=True)
class PackedObject:
    """One object's records as fragments, in file order."""

    kind: Literal["log", "digest", "empty"]
    records: int
    raw_bytes: int
    fragments: tuple[Fragment, ...]
    #: (index, size) of records over CloudTrail's documented maximum record size
    oversized: tuple[tuple[int, int], ...] = ()
    #: (filter, records it dropped); `records` counts only what was kept
    dropped: tuple[tuple[str, int], ...] = ()
    #: parts of a damaged object that are no record on their own (salvage.py)
    unreadable: tuple[Unreadable, ...] = ()
    #: hex SHA-256 of the uncompressed content, when `PackLimits.hash_content` asked for it
    content_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class Unreadable:
    """One element of a damaged object's `Records` that is not a record on its own (or junk
    between two): set aside in the state database instead of costing its neighbours."""

    index: int  # among the array's elements, as found
    start: int  # byte range in the decompressed document
    end: int
    reason: str
    excerpt: bytes  # the bytes around the fault
    raw: bytes  # the part itself, up to salvage.RAW_CAP

    def describe(self) -> str:
        """For logs: where and why, and the bytes around the fault (repr, so never raw)."""
        return (
            f"Records[{self.index}] (bytes {self.start}-{self.end}): {self.reason} "
            f"near {self.excerpt!r}"
        )


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
