"""An object's bytes -> fragments, and the one decision of how: inline, whole, in steps or
from ranges.

The pipeline asks `decoding` how to read and decode an object and calls what it names:

- "inline": a small object (`INLINE_MAX` compressed bytes at most: a few records) is read
  into memory and decoded whole (`pack_whole`) on the event loop: a round trip to a worker
  costs ~300 us of CPU, ten times a one-record file's decoding (at worst, highly
  compressible, 8 MiB of text: some 30 ms of the loop).
- "whole": the object is read into memory and decoded whole in the worker pool
  (`pack_whole`), the fastest way: msgspec slices every record at once.
- "steps": the object is read into memory, but its text would likely be too large to hold
  decoded, so it is decoded a step at a time in a thread (`pack_steps`): only its fragments
  are held, never all of its text.
- "ranges": the object is larger than `delivery.stream_threshold`, so it is never held: it
  is read in ranges and each range decoded as it arrives (stream_decode.StreamDecoder, one
  `pack_step` at a time).

With `PackLimits.hash_content`, every path gives the SHA-256 of the object's whole
uncompressed content (`PackedObject.content_sha256`, the integrity check's), of the bytes
it decompresses anyway: a salvaged object's too, of its text as read (damage included).

Everything here is pure and CPU-bound, and what it takes and returns pickles small.
"""

from __future__ import annotations

import hashlib
import mmap
import tempfile
from typing import BinaryIO, Final, Literal

from cloudtrail_adapter.decoding.batches import Fragment, PackedObject, PackLimits, pack_lines
from cloudtrail_adapter.decoding.decode import (
    OVERSIZED_RECORD,
    DecodeError,
    TooLargeForWhole,
    inflate,
    inflate_file,
    pack_object,
)
from cloudtrail_adapter.decoding.filters import apply_filter, merge_counts
from cloudtrail_adapter.decoding.salvage import Text, record_at, salvage
from cloudtrail_adapter.decoding.stream_decode import DEFAULT_MAX_VALUE, StreamDecoder

__all__ = [
    "SALVAGEABLE",
    "Decoding",
    "decoding",
    "pack_salvaged",
    "pack_spooled",
    "pack_step",
    "pack_steps",
    "pack_whole",
]

#: What the strict decoders refuse for damage inside `Records`: salvaged record by record.
#: A gzip stream that is corrupt or cut short, or a document of another shape, is not.
SALVAGEABLE: Final = frozenset(
    {"not_json", "invalid_utf8", "record_not_object", "record_too_large"}
)

Decoding = Literal["inline", "whole", "steps", "ranges"]

#: Compressed bytes up to which an object is decoded "inline".
INLINE_MAX: Final = 8 << 10

#: Text bytes per compressed byte that CloudTrail's gzip usually gives (at least).
_LIKELY_RATIO: Final = 6


def decoding(size: int, stream_threshold: int, limits: PackLimits) -> Decoding:
    """How an object of `size` compressed bytes is read and decoded (see the module
    docstring): from ranges over `stream_threshold`; otherwise whole when its text likely
    fits `limits.whole_max_raw` (on the loop up to `INLINE_MAX`), else in steps."""
    if size > stream_threshold:
        return "ranges"
    if size * _LIKELY_RATIO > limits.whole_max_raw:
        return "steps"
    return "inline" if size <= INLINE_MAX else "whole"


def pack_whole(data: bytes, limits: PackLimits) -> PackedObject:
    """The worker pool's entry point: an object held in memory, decoded whole and packed;
    should its text turn out larger than `limits.whole_max_raw` after all (a small object
    may hold a lot), it is decoded in steps instead. A damaged one is salvaged."""
    try:
        return pack_object(data, None, limits)
    except TooLargeForWhole:
        return pack_steps(data, limits)
    except DecodeError as exc:
        if exc.reason not in SALVAGEABLE:
            raise
        return pack_salvaged(inflate(data), limits, exc)


def pack_steps(data: bytes, limits: PackLimits) -> PackedObject:
    """An object held in memory, decoded a step at a time: its fragments are held, never
    all of its text. A damaged one is salvaged from its text spooled to a file."""
    try:
        return _pack_steps(data, limits)
    except DecodeError as exc:
        if exc.reason not in SALVAGEABLE:
            raise
        with tempfile.TemporaryFile() as raw:
            raw.write(data)
            del data
            return pack_spooled(raw, limits, exc)


def pack_spooled(raw: BinaryIO, limits: PackLimits, cause: DecodeError) -> PackedObject:
    """A damaged object spooled to `raw`, salvaged from its text in a second file, read
    through a memory map: the text is never held, only the records' fragments."""
    with tempfile.TemporaryFile() as text:
        inflate_file(raw, text)
        if not text.tell():
            raise cause
        with mmap.mmap(text.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return pack_salvaged(mapped, limits, cause)


def pack_salvaged(text: Text, limits: PackLimits, cause: DecodeError) -> PackedObject:
    """What the strict decoders refused (`cause`): every record readable on its own,
    packed, and the unreadable parts, to be set aside. Without a Records array to salvage
    from, the strict decoder's error stands."""
    try:
        found = salvage(text, max_record=DEFAULT_MAX_VALUE)
    except DecodeError:
        raise cause from None
    sha256 = hashlib.sha256(text).hexdigest() if limits.hash_content else None
    lines = [record_at(text, span) for span in found.records]
    kept, dropped = apply_filter(lines, limits.keep)
    fragments = tuple(pack_lines(kept, limits))
    oversized = tuple(
        (i, len(line)) for i, line in enumerate(lines) if len(line) > OVERSIZED_RECORD
    )
    return PackedObject(
        "log",
        len(kept),
        len(text),
        fragments,
        oversized,
        tuple(dropped.items()),
        tuple(found.unreadable),
        sha256,
    )


def _pack_steps(data: bytes, limits: PackLimits) -> PackedObject:
    decoder = StreamDecoder(hash_content=limits.hash_content)
    decoder.feed(data)
    del data
    fragments: list[Fragment] = []
    dropped: dict[str, int] = {}
    while not decoder.hungry:
        fragments += pack_step(decoder, limits, dropped)
    summary = decoder.finish()
    kept = sum(f.records for f in fragments)
    return PackedObject(
        summary.kind,
        kept,
        summary.raw_bytes,
        tuple(fragments),
        summary.oversized,
        tuple(dropped.items()),
        content_sha256=summary.content_sha256,
    )


def pack_step(
    decoder: StreamDecoder, limits: PackLimits, dropped: dict[str, int]
) -> list[Fragment]:
    """One decoding step's records, filtered (drops counted into `dropped`) and packed."""
    kept, refused = apply_filter(decoder.step(), limits.keep)
    merge_counts(dropped, refused.items())
    return pack_lines(kept, limits)
