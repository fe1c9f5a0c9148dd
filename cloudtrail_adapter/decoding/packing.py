"""An object's bytes -> fragments, and the one decision of how: inline, whole, in steps or
from ranges.

The pipeline asks `decoding` how to read and decode an object and calls what it names:

- "inline": a small object (`INLINE_MAX` compressed bytes at most: a few records) is read
  into memory and decoded whole (`pack_held`) on the event loop: a round trip to a worker
  costs ~300 us of CPU, ten times a one-record file's decoding (at worst, highly
  compressible, 8 MiB of text: some 30 ms of the loop).
- "whole": the object is read into memory and decoded whole in the worker pool
  (`pack_held`), the fastest way: msgspec slices every record at once.
- "steps": the object is read into memory, but its text would likely be too large to hold
  decoded, so it is decoded a step at a time in a thread (`pack_step`), each step's
  fragments handed on as it goes: only one step of its text is held, never all of it. So
  is one whose text turned out too large for "whole" or "inline" (`TooLargeForWhole`).
- "ranges": the object is larger than `delivery.stream_threshold`, so it is never held: it
  is read in ranges and each range decoded as it arrives (stream_decode.StreamDecoder, one
  `pack_step` at a time).

A damaged object is salvaged (salvage.py): whole, from its text in memory when that is
under `whole_max_raw`; otherwise from its compressed bytes read again from the start (held,
or spooled to a file by the pipeline), a step at a time (`Salvaging`), in the same bounded
memory as the strict steps. No path holds more of an object's text than `whole_max_raw`,
whatever its compression ratio, and every path refuses one over `max_inflated`.

With `PackLimits.hash_content`, every path gives the SHA-256 of the object's whole
uncompressed content (`PackedObject.content_sha256`, the integrity check's), of the bytes
it decompresses anyway: a salvaged object's too, of its text as read (damage included).

Everything here is pure and CPU-bound, and what it takes and returns pickles small.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO, Final, Literal

from cloudtrail_adapter.decoding.batches import pack_lines
from cloudtrail_adapter.decoding.decode import inflate, pack_object
from cloudtrail_adapter.decoding.filters import apply_filter, merge_counts
from cloudtrail_adapter.decoding.inflating import STEP_OUTPUT, Inflater, text_of
from cloudtrail_adapter.decoding.salvage import Salvager, SalvageStep, pieces_of
from cloudtrail_adapter.decoding.stream_decode import DEFAULT_MAX_VALUE, StreamDecoder
from cloudtrail_adapter.decoding.values import (
    OVERSIZED_RECORD,
    DecodeError,
    Fragment,
    PackedObject,
    PackLimits,
    TooLargeForWhole,
    Unreadable,
)

__all__ = [
    "CHUNK",
    "SALVAGEABLE",
    "Decoding",
    "Salvaging",
    "chunks_of",
    "decoding",
    "file_chunks",
    "pack_held",
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
#: Compressed bytes per piece read of an object (a ranged GET, a read of a spooled file).
CHUNK: Final = 4 << 20

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


def pack_held(data: bytes, limits: PackLimits) -> PackedObject:
    """The worker pool's entry point: an object held in memory, decoded whole and packed (a
    damaged one salvaged). TooLargeForWhole when its text turns out larger than
    `limits.whole_max_raw` after all (a small object may hold a lot): the caller goes on in
    steps (`Salvaging` and `pack_step`), so that no more than that bound of text is held."""
    try:
        return pack_object(data, None, limits)
    except DecodeError as exc:
        if exc.reason not in SALVAGEABLE:
            raise
        return pack_salvaged(inflate(data), limits, exc)


def pack_whole(data: bytes, limits: PackLimits) -> PackedObject:
    """`pack_held`, or `pack_steps` when too large for it: an object in one piece, for who
    wants it so (the bench's floor, tests). The daemon hands on each step as it goes."""
    try:
        return pack_held(data, limits)
    except TooLargeForWhole:
        return pack_steps(data, limits)


def pack_steps(data: bytes, limits: PackLimits) -> PackedObject:
    """An object held in memory, decoded a step at a time (salvaged from its start when the
    strict decoder refuses it), its fragments collected."""
    decoder = StreamDecoder(hash_content=limits.hash_content, max_inflated=limits.max_inflated)
    fragments: list[Fragment] = []
    dropped: dict[str, int] = {}
    try:
        for chunk in chunks_of(data):
            decoder.feed(chunk)
            while not decoder.hungry:
                fragments += pack_step(decoder, limits, dropped)
        summary = decoder.finish()
    except DecodeError as exc:
        if exc.reason not in SALVAGEABLE:
            raise
        return _collect(Salvaging(chunks_of(data), limits, exc))
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


def pack_spooled(raw: BinaryIO, limits: PackLimits, cause: DecodeError) -> PackedObject:
    """A damaged object spooled to `raw` (compressed, as read), salvaged a step at a time
    from its text as it is inflated; the fragments collected."""
    return _collect(Salvaging(file_chunks(raw), limits, cause))


def pack_salvaged(text: bytes, limits: PackLimits, cause: DecodeError) -> PackedObject:
    """What the strict decoders refused (`cause`), of a text held in memory (no larger than
    `whole_max_raw`): every record readable on its own, packed, and the unreadable parts, to
    be set aside. Without a Records array to salvage from, the strict decoder's error
    stands."""
    salvager = Salvager(pieces_of(text), max_record=DEFAULT_MAX_VALUE)
    lines: list[bytes] = []
    unreadable: list[Unreadable] = []
    while not salvager.done:
        found = _salvage_step(salvager, cause)
        lines += found.records
        unreadable += found.unreadable
    sha256 = hashlib.sha256(text).hexdigest() if limits.hash_content else None
    kept, dropped = apply_filter(lines, limits.keep)
    return PackedObject(
        "log",
        len(kept),
        len(text),
        tuple(pack_lines(kept, limits)),
        _oversized(lines),
        tuple(dropped.items()),
        tuple(unreadable),
        sha256,
    )


class Salvaging:
    """A damaged object salvaged a step at a time from its compressed bytes (`chunks`), read
    from its start again: only a step of its text is held, whatever its size.

    `step` until `done`; what it found besides the fragments (records kept and dropped,
    oversized ones, unreadable parts, the text's size and SHA-256) is here as it goes.
    Records handed on before the strict decoder refused the object come again (the object
    is not committed yet, so that is at least once; de-duplication drops them).
    """

    def __init__(self, chunks: Iterable[bytes], limits: PackLimits, cause: DecodeError) -> None:
        self._inflater = Inflater(
            hash_content=limits.hash_content, max_inflated=limits.max_inflated
        )
        self._salvager = Salvager(text_of(chunks, self._inflater), max_record=DEFAULT_MAX_VALUE)
        self._limits = limits
        self._cause = cause
        self._seen = 0  # records found so far, kept or not
        self.records = 0  # records kept (by the filter) so far
        self.oversized: list[tuple[int, int]] = []
        self.dropped: dict[str, int] = {}
        self.unreadable: list[Unreadable] = []

    @property
    def done(self) -> bool:
        return self._salvager.done

    @property
    def raw_bytes(self) -> int:
        return self._inflater.raw_bytes

    @property
    def content_sha256(self) -> str | None:
        return self._inflater.sha256

    def step(self) -> list[Fragment]:
        """One step's records, filtered and packed; its unreadable parts kept here."""
        found = _salvage_step(self._salvager, self._cause)
        self.oversized += [
            (self._seen + i, len(line))
            for i, line in enumerate(found.records)
            if len(line) > OVERSIZED_RECORD
        ]
        self._seen += len(found.records)
        self.unreadable += found.unreadable
        kept, refused = apply_filter(found.records, self._limits.keep)
        merge_counts(self.dropped, refused.items())
        self.records += len(kept)
        return pack_lines(kept, self._limits)


def _salvage_step(salvager: Salvager, cause: DecodeError) -> SalvageStep:
    try:
        return salvager.step(STEP_OUTPUT)
    except DecodeError as exc:
        if exc.reason == "no_records":
            raise cause from None  # nothing to salvage from: the strict decoder's error stands
        raise


def _collect(salvaging: Salvaging) -> PackedObject:
    fragments: list[Fragment] = []
    while not salvaging.done:
        fragments += salvaging.step()
    return PackedObject(
        "log",
        salvaging.records,
        salvaging.raw_bytes,
        tuple(fragments),
        tuple(salvaging.oversized),
        tuple(salvaging.dropped.items()),
        tuple(salvaging.unreadable),
        salvaging.content_sha256,
    )


def chunks_of(data: bytes) -> Iterator[bytes]:
    """An object held in memory, in the pieces a ranged read would give."""
    return (data[start : start + CHUNK] for start in range(0, len(data), CHUNK))


def file_chunks(raw: BinaryIO) -> Iterator[bytes]:
    """An object spooled to a file, from its start, a piece at a time."""
    raw.seek(0)
    return iter(lambda: raw.read(CHUNK), b"")


def _oversized(lines: Sequence[bytes]) -> tuple[tuple[int, int], ...]:
    return tuple((i, len(line)) for i, line in enumerate(lines) if len(line) > OVERSIZED_RECORD)


def pack_step(
    decoder: StreamDecoder, limits: PackLimits, dropped: dict[str, int]
) -> list[Fragment]:
    """One decoding step's records, filtered (drops counted into `dropped`) and packed."""
    kept, refused = apply_filter(decoder.step(), limits.keep)
    merge_counts(dropped, refused.items())
    return pack_lines(kept, limits)
