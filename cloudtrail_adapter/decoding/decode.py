"""CloudTrail object bytes -> compact one-line records, and records -> batch fragments.

Pure and CPU-bound: no asyncio, no logging, no global state. Everything taken and returned
is bytes, str or a small frozen value, so these functions run unchanged in a thread or a
process pool.

Decisions a reader would otherwise have to rediscover:
- gzip is recognised by its magic bytes, never by a name or Content-Encoding.
- Concatenated gzip members are valid gzip (RFC 1952 §2.2) and are all decompressed; NUL
  padding after the last member is ignored (as gzip(1) does); any other trailing data is
  `corrupt_gzip`, because silently dropping it could drop records.
- Records are never turned into Python objects: msgspec splits `Records` into `Raw` slices.
  A record without a line break goes on byte for byte (CloudTrail writes compact JSON); one
  with a line break is compacted by `msgspec.json.format(indent=-1)`. JSON strings cannot
  hold a raw newline (msgspec rejects one), so a record is always exactly one line.
- `pack_object` is the daemon's path: from the slices straight to deflate fragments
  (batches.py), without a bytes object per record, in a worker process (what it takes
  and returns pickles small). A document that decompresses to more than
  `PackLimits.whole_max_raw` raises `TooLargeForWhole`, for the caller to decode in steps
  (packing.py decides which objects are decoded whole): the whole text of an object is
  held only up to that bound, whatever the compression ratio. One over
  `PackLimits.max_inflated` is refused (`inflated_too_large`), on every path.
- Zero-byte and whitespace-only objects are kind "empty"; `{"Records":[]}` is a "log" with
  no records; an object without `Records` that is a digest (by its keys, or by the key
  hint) is a "digest". Anything else without `Records` is an error, not an empty log: an
  object we do not understand must not be checkpointed as done.
"""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Sequence
from typing import Final, Literal

import msgspec
from isal import isal_zlib

from cloudtrail_adapter.decoding.batches import Line, pack_lines
from cloudtrail_adapter.decoding.filters import apply_filter
from cloudtrail_adapter.decoding.values import (
    OVERSIZED_RECORD,
    DecodedObject,
    DecodeError,
    PackedObject,
    PackLimits,
    TooLargeForWhole,
)
from cloudtrail_adapter.sources.trail_layout import is_digest_key

__all__ = [
    "GZIP_MAGIC",
    "GZIP_WBITS",
    "UTF8_BOM",
    "check_record",
    "check_utf8",
    "decode_object",
    "inflate",
    "inflated_too_large",
    "json_type",
    "no_records",
    "one_line",
    "pack_object",
]


GZIP_MAGIC: Final = b"\x1f\x8b"
_UTF8_CHUNK: Final = 1 << 13
_LBRACE: Final = ord("{")
GZIP_WBITS: Final = 16 + isal_zlib.MAX_WBITS
UTF8_BOM: Final = b"\xef\xbb\xbf"
# The stub declares `error` as an instance; at runtime it is the exception class.
_IsalError: Final[type[Exception]] = isal_zlib.error  # type: ignore[assignment]
_JSON_TYPE_BY_FIRST_BYTE: Final = {
    ord("{"): "an object",
    ord("["): "an array",
    ord('"'): "a string",
    ord("t"): "a boolean",
    ord("f"): "a boolean",
    ord("n"): "null",
}


class _Envelope(msgspec.Struct):
    """The top level of a CloudTrail file; every other key is skipped unparsed."""

    Records: list[msgspec.Raw] | msgspec.UnsetType = msgspec.UNSET
    digestStartTime: msgspec.Raw = msgspec.Raw()
    digestS3Object: msgspec.Raw = msgspec.Raw()


_decode_envelope: Final = msgspec.json.Decoder(_Envelope).decode


def decode_object(data: bytes, key: str | None = None) -> DecodedObject:
    """Decode one CloudTrail object (gzip or plain JSON) into compact one-line records.

    `key`, when given, only helps classify a Records-less object as a digest; it never
    decides whether the data is gzip. Raises DecodeError, and nothing else, for bad input.
    """
    kind, lines, raw_bytes, _ = _decode(data, key, max_raw=None)
    records = [bytes(line) for line in lines]
    return DecodedObject(kind, records, raw_bytes, _oversized(records))


def pack_object(data: bytes, key: str | None, limits: PackLimits) -> PackedObject:
    """Decode one object, as `decode_object` does, straight into batches (see `pack_lines`).

    Raises DecodeError for bad input and TooLargeForWhole past `limits.whole_max_raw`.
    With `limits.hash_content`, the SHA-256 of the uncompressed content comes back too (of
    the bytes already decompressed here: the integrity check never reads an object twice).
    """
    cap = limits.max_inflated
    try:
        kind, lines, raw_bytes, sha256 = _decode(
            data,
            key,
            max_raw=limits.whole_max_raw if cap is None else min(cap, limits.whole_max_raw),
            hash_content=limits.hash_content,
        )
    except TooLargeForWhole:
        if cap is not None and cap <= limits.whole_max_raw:
            raise inflated_too_large(cap) from None
        raise
    del data
    kept, dropped = apply_filter(lines, limits.keep)
    fragments = tuple(pack_lines(kept, limits))
    oversized = _oversized(lines)
    return PackedObject(
        kind,
        len(kept),
        raw_bytes,
        fragments,
        oversized,
        tuple(dropped.items()),
        content_sha256=sha256,
    )


def _decode(
    data: bytes, key: str | None, *, max_raw: int | None, hash_content: bool = False
) -> tuple[Literal["log", "digest", "empty"], Sequence[Line], int, str | None]:
    if data[:2] == GZIP_MAGIC:
        data = _gunzip(data, max_raw)
    elif max_raw is not None and len(data) > max_raw:
        raise TooLargeForWhole(f"{len(data)} bytes of JSON")
    # What CloudTrail hashes: the uncompressed content, every byte of it (a BOM included).
    sha256 = hashlib.sha256(data).hexdigest() if hash_content else None
    try:
        return (*_decode_json(data, key), sha256)
    except RecursionError:
        raise DecodeError("not_json", "JSON nested deeper than the decoder allows") from None


def _decode_json(
    data: bytes, key: str | None
) -> tuple[Literal["log", "digest", "empty"], Sequence[Line], int]:
    raw_bytes = len(data)
    if data[:3] == UTF8_BOM:
        data = data[3:]
    try:
        envelope = _decode_envelope(data)
    except msgspec.ValidationError as exc:
        raise _shape_error(data, exc) from None
    except msgspec.DecodeError as exc:
        if not data.strip(b" \t\r\n"):
            return "empty", [], raw_bytes
        raise DecodeError("not_json", f"not JSON: {exc}") from None
    check_utf8(data)
    if isinstance(envelope.Records, msgspec.UnsetType):
        if envelope.digestStartTime or envelope.digestS3Object or is_digest_key(key or ""):
            return "digest", [], raw_bytes
        raise _no_records(data)
    if b"\n" in data or b"\r" in data:
        return "log", _compact(envelope.Records), raw_bytes
    _check_objects(envelope.Records)
    return "log", envelope.Records, raw_bytes


def _gunzip(data: bytes, max_raw: int | None = None) -> bytes:
    """Every gzip member in `data`, concatenated; NUL padding after the last is ignored.

    Past `max_raw` decompressed bytes, TooLargeForWhole: a small object may hold a lot.
    """
    members: list[bytes] = []
    rest = data
    room = -1 if max_raw is None else max_raw + 1
    while True:
        inflater = isal_zlib.decompressobj(wbits=GZIP_WBITS)
        offset = len(data) - len(rest)
        try:
            members.append(inflater.decompress(rest, max(room, 0)))
        except _IsalError as exc:
            raise DecodeError(
                "corrupt_gzip", f"corrupt gzip member at byte {offset}: {exc}"
            ) from None
        if max_raw is not None:
            room -= len(members[-1])
            if room <= 0:
                raise TooLargeForWhole(f"more than {max_raw} bytes decompressed")
        if not inflater.eof:
            raise DecodeError(
                "truncated_gzip",
                f"gzip data ends before the end of the member at byte {offset} "
                f"({len(data)} bytes in all)",
            )
        rest = inflater.unused_data.lstrip(b"\0")
        if not rest:
            break
        if rest[:2] != GZIP_MAGIC:
            raise DecodeError(
                "corrupt_gzip",
                f"{len(rest)} bytes that are not gzip follow the gzip member(s)",
            )
    return members[0] if len(members) == 1 else b"".join(members)


def inflate(data: bytes) -> bytes:
    """An object's text: every gzip member decompressed, or the bytes as they are. Only
    for a text known to be small (pack_object inflated it under a bound already)."""
    return _gunzip(data) if data[:2] == GZIP_MAGIC else data


def inflated_too_large(cap: int) -> DecodeError:
    """The error for an object whose text is larger than `max_inflated_size` allows."""
    return DecodeError(
        "inflated_too_large",
        f"more than {cap} bytes decompressed (max_inflated_size): not a CloudTrail file",
    )


def check_utf8(data: bytes, offset: int = 0) -> None:
    """msgspec does not validate strings inside a Raw; records must be valid UTF-8 text.

    Only the chunks that are not plain ASCII are decoded (through one incremental decoder,
    so a character split between chunks is still checked): text is mostly ASCII, and
    decoding all of it would build a large str for nothing.
    """
    if data.isascii():
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    try:
        for start in range(0, len(data), _UTF8_CHUNK):
            chunk = view[start : start + _UTF8_CHUNK]
            if decoder.getstate()[0] or not chunk.tobytes().isascii():
                decoder.decode(chunk, final=False)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        try:  # the error path only: where exactly, from one plain decode
            data.decode("utf-8")
            at = len(data)
        except UnicodeDecodeError as exc:
            at = exc.start
        raise DecodeError(
            "invalid_utf8", f"invalid UTF-8 at byte {offset + at} of the decompressed data"
        ) from None


def check_record(line: bytes, index: int) -> None:
    """A compacted record must be a JSON object."""
    if line[:1] != b"{":
        raise DecodeError(
            "record_not_object", f"Records[{index}] is {json_type(line)}, not a JSON object"
        )


def _check_objects(raws: list[msgspec.Raw]) -> None:
    """Every record must be a JSON object: its first byte says so (a Raw is a valid value)."""
    for index, raw in enumerate(raws):
        if memoryview(raw)[0] != _LBRACE:
            check_record(bytes(raw), index)


def _compact(raws: list[msgspec.Raw]) -> list[Line]:
    """The slow path, for a document with line breaks: records holding one are compacted."""
    lines: list[Line] = []
    for index, raw in enumerate(raws):
        line = one_line(bytes(raw))
        check_record(line, index)
        lines.append(line)
    return lines


def one_line(value: bytes) -> bytes:
    """A valid JSON value on one line: as it is when it has no line break, else compacted."""
    if b"\n" in value or b"\r" in value:
        compact: bytes = msgspec.json.format(value, indent=-1)
        return compact
    return value


def _oversized(records: Sequence[Line]) -> tuple[tuple[int, int], ...]:
    limit = OVERSIZED_RECORD
    if not records or max(map(len, records)) <= limit:
        return ()
    return tuple((i, len(line)) for i, line in enumerate(records) if len(line) > limit)


def _shape_error(data: bytes, exc: msgspec.ValidationError) -> DecodeError:
    """Valid JSON of the wrong shape: say which part is wrong (only on the error path)."""
    first = data.lstrip(b" \t\r\n")[:1]
    if first != b"{":
        return DecodeError("not_object", f"the JSON document is {json_type(first)}, not an object")
    try:
        records = msgspec.json.decode(data, type=dict[str, msgspec.Raw]).get("Records")
    except msgspec.DecodeError:
        records = None
    if records is None:
        return DecodeError("not_json", f"unexpected JSON: {exc}")
    kind = json_type(memoryview(records)[:1].tobytes())  # Raw supports buffers, not slicing
    return DecodeError("records_not_list", f"Records is {kind}, not an array")


def _no_records(data: bytes) -> DecodeError:
    try:
        keys = list(msgspec.json.decode(data, type=dict[str, msgspec.Raw]))
    except msgspec.DecodeError:
        keys = []
    return no_records(keys)


def no_records(keys: Sequence[str]) -> DecodeError:
    """The error for a JSON object that is neither a log nor a digest, naming its keys."""
    shown = ", ".join(repr(k[:40]) for k in keys[:8]) + (", ..." if len(keys) > 8 else "")
    return DecodeError(
        "no_records",
        f"JSON object has no Records key and is not a digest (keys: {shown or 'none'})",
    )


def json_type(value: bytes) -> str:
    """What a JSON value (starting at its first byte, as msgspec slices it) is, in words."""
    if not value:
        return "empty"
    return _JSON_TYPE_BY_FIRST_BYTE.get(value[0], "a number")
