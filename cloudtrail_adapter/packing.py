"""An object's bytes -> fragments, and the one decision of how: whole, in steps or from ranges.

The pipeline asks `decoding` how to read and decode an object and calls what it names:

- "whole": the object is read into memory and decoded whole in the worker pool
  (`pack_whole`), the fastest way: msgspec slices every record at once.
- "steps": the object is read into memory, but its text would likely be too large to hold
  decoded, so it is decoded a step at a time in a thread (`pack_steps`): only its fragments
  are held, never all of its text.
- "ranges": the object is larger than `delivery.stream_threshold`, so it is never held: it
  is read in ranges and each range decoded as it arrives (stream_decode.StreamDecoder, one
  `pack_step` at a time).

Everything here is pure and CPU-bound, and what it takes and returns pickles small.
"""

from __future__ import annotations

from typing import Final, Literal

from cloudtrail_adapter.batches import Fragment, PackedObject, PackLimits, pack_lines
from cloudtrail_adapter.decode import TooLargeForWhole, pack_object
from cloudtrail_adapter.filters import apply_filter, merge_counts
from cloudtrail_adapter.stream_decode import StreamDecoder

__all__ = ["Decoding", "decoding", "pack_step", "pack_steps", "pack_whole"]

Decoding = Literal["whole", "steps", "ranges"]

#: Text bytes per compressed byte that CloudTrail's gzip usually gives (at least).
_LIKELY_RATIO: Final = 6


def decoding(size: int, stream_threshold: int, limits: PackLimits) -> Decoding:
    """How an object of `size` compressed bytes is read and decoded (see the module
    docstring): from ranges over `stream_threshold`; otherwise whole when its text likely
    fits `limits.whole_max_raw`, else in steps."""
    if size > stream_threshold:
        return "ranges"
    if size * _LIKELY_RATIO > limits.whole_max_raw:
        return "steps"
    return "whole"


def pack_whole(data: bytes, limits: PackLimits) -> PackedObject:
    """The worker pool's entry point: an object held in memory, decoded whole and packed;
    should its text turn out larger than `limits.whole_max_raw` after all (a small object
    may hold a lot), it is decoded in steps instead."""
    try:
        return pack_object(data, None, limits)
    except TooLargeForWhole:
        return pack_steps(data, limits)


def pack_steps(data: bytes, limits: PackLimits) -> PackedObject:
    """An object held in memory, decoded a step at a time: its fragments are held, never
    all of its text."""
    decoder = StreamDecoder()
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
    )


def pack_step(
    decoder: StreamDecoder, limits: PackLimits, dropped: dict[str, int]
) -> list[Fragment]:
    """One decoding step's records, filtered (drops counted into `dropped`) and packed."""
    kept, refused = apply_filter(decoder.step(), limits.keep)
    merge_counts(dropped, refused.items())
    return pack_lines(kept, limits)
