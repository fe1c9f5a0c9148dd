"""The values the decoders take and give back, in a module of their own so that nothing
(the pipeline, the state database, the monitor, the sources) imports a decoder for a type.
Everything here pickles small, for the process pool."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from cloudtrail_adapter.decoding.filters import Matcher

__all__ = [
    "OVERSIZED_RECORD",
    "SET_ASIDE_AT_ONCE",
    "DecodeError",
    "DecodeReason",
    "DecodedObject",
    "Fragment",
    "LimitReason",
    "PackLimits",
    "PackedObject",
    "TooLargeForWhole",
    "Unreadable",
]

DecodeReason = Literal[
    "corrupt_gzip",
    "truncated_gzip",
    "not_json",
    "not_object",
    "no_records",
    "records_not_list",
    "record_not_object",
    "invalid_utf8",
    "record_too_large",
]
#: Why an object is refused by a bound rather than for its shape, or why its decoding
#: failed: its text is over `max_inflated_size`; more of it is damage than salvage.py keeps;
#: the worker decoding it died (`worker_died`), or decoding it was killed twice.
LimitReason = Literal["inflated_too_large", "too_many_unreadable", "worker_died", "decode_killed"]
#: Reasons an object is set aside at once, never retried: it is the same next time, and
#: would cost as much again. `inflated_too_large`: its text is over `max_inflated_size`;
#: `too_many_unreadable`: more of its `Records` is damage than a damaged file holds (a
#: salvage would set aside more parts than salvage.MAX_UNREADABLE); `decode_killed`:
#: decoding it killed a worker (or the daemon) twice. `worker_died` (the first such
#: death) is retried like any failure: the death may have been someone else's doing.
SET_ASIDE_AT_ONCE: Final = frozenset({"inflated_too_large", "too_many_unreadable", "decode_killed"})

#: CloudTrail's documented maximum record size; larger ones are delivered, and reported.
OVERSIZED_RECORD: Final = 256 * 1024


class DecodeError(Exception):
    """An object that cannot be decoded; `reason` is a stable short code for logs and metrics.

    The message names what is wrong and where (byte offset, record index, top-level key
    names), never record content.
    """

    def __init__(self, reason: DecodeReason | LimitReason, message: str) -> None:
        # Both in args, so that the error survives pickling back from a process pool.
        super().__init__(reason, message)
        self.reason: DecodeReason | LimitReason = reason
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class DecodedObject:
    """One object's records as compact JSON lines (no trailing newline), in file order.

    `raw_bytes` is the decompressed size, for throughput accounting.
    """

    kind: Literal["log", "digest", "empty"]
    records: list[bytes]
    raw_bytes: int
    #: (index, size) of records over OVERSIZED_RECORD
    oversized: tuple[tuple[int, int], ...] = ()


class TooLargeForWhole(Exception):
    """The document decompresses to more than the whole-object limit: stream it instead."""


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
