"""Incremental decoding of a large CloudTrail object: bounded memory whatever its size.

`decode.decode_object` holds the whole decompressed object; that is fastest for the usual
files of a few MB but would take gigabytes for a huge one. `StreamDecoder` takes compressed
(or plain) bytes a piece at a time and hands back complete records as they appear, holding
at most one JSON value plus one decompression step in memory.

It keeps decode.py's decisions (gzip by magic bytes, every member, NUL padding between
members, compact one-line records via msgspec, the same error reasons; the inflating is
inflating.Inflater's) so a large object is treated as a small one would be. Two
differences follow from streaming: records before an error have already been handed back
(the item is not committed, so they are delivered again when it is retried: at least once,
never lost), and one JSON value larger than `max_value_bytes` is `record_too_large`
instead of a buffer that grows without end. Nesting deeper than msgspec decodes is
`not_json`, as in decode.py (salvage.py then sets that record aside as `too_deep`).

The JSON is not parsed here: a regex skips strings and counts brackets to find where each
value ends, and msgspec then validates and compacts that value on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

import msgspec

from cloudtrail_adapter.decoding.decode import (
    UTF8_BOM,
    check_record,
    check_utf8,
    json_type,
    no_records,
    one_line,
)
from cloudtrail_adapter.decoding.inflating import STEP_OUTPUT, Inflater
from cloudtrail_adapter.decoding.values import OVERSIZED_RECORD, DecodeError, DecodeReason

__all__ = ["DEFAULT_MAX_VALUE", "STEP_OUTPUT", "StreamDecoder", "StreamSummary"]

#: The largest single JSON value (a record) held while looking for its end.
DEFAULT_MAX_VALUE: Final = 32 << 20

# A run of JSON whitespace: matched at a position, several times faster than a search for
# what is not whitespace (a file may hold gigabytes of it); a run of spaces alone, faster
# still, first.
_WS_RUN: Final = re.compile(rb"[ \t\r\n]*")
_SPACES: Final = re.compile(rb" *")
# A whole string, a bracket, or a bare quote: a string that does not end in the buffer yet.
_TOKEN: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|["{}\[\]]', re.DOTALL)
_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_SCALAR: Final = re.compile(rb"[^ \t\r\n,\]}]*")
_OPEN: Final = frozenset(b"{[")
_CLOSE: Final = frozenset(b"}]")
_DIGEST_KEYS: Final = frozenset({"digestStartTime", "digestS3Object"})
_LBRACE, _RBRACE, _LBRACKET, _RBRACKET = b"{}[]"
_COMMA, _COLON, _QUOTE = b',:"'

_Phase = Literal["start", "key", "colon", "value", "records", "record", "record_sep", "next", "end"]


@dataclass(frozen=True, slots=True)
class StreamSummary:
    kind: Literal["log", "digest", "empty"]
    records: int
    raw_bytes: int
    #: (index, size) of records over CloudTrail's documented maximum
    oversized: tuple[tuple[int, int], ...] = ()
    #: hex SHA-256 of the uncompressed content, when the decoder was asked to take it
    content_sha256: str | None = None


class StreamDecoder:
    """`feed` bytes, call `step` until `hungry`, repeat; then `finish`.

    Raises DecodeError, and nothing else, for bad input. Not thread-safe, but consecutive
    calls may run in different threads of a pool. With `hash_content`, the summary holds
    the SHA-256 of the uncompressed content, taken as it is decompressed; past
    `max_inflated` bytes of it, `inflated_too_large`.
    """

    def __init__(
        self,
        max_value_bytes: int = DEFAULT_MAX_VALUE,
        *,
        hash_content: bool = False,
        max_inflated: int | None = None,
    ) -> None:
        self._max_value = max_value_bytes
        self._inflater = Inflater(hash_content=hash_content, max_inflated=max_inflated)
        self._text = bytearray()  # decompressed bytes not yet split
        self._base = 0  # offset of self._text[0] in the decompressed data
        self._phase: _Phase = "start"
        self._key = ""
        self._keys: list[str] = []
        self._records = 0
        self._array_empty = True
        self._oversized: list[tuple[int, int]] = []
        self._bulk_failed = False  # no bulk split found in this step: one at a time until next
        self._ws_end = -1  # where the whitespace the last `_advance` skipped ends

    @property
    def hungry(self) -> bool:
        """True when `step` can do nothing more until more bytes are fed (or `finish`)."""
        return self._inflater.hungry

    @property
    def buffered(self) -> int:
        """Bytes held: compressed input not yet inflated and text not yet split."""
        return self._inflater.buffered + len(self._text)

    def feed(self, data: bytes) -> None:
        self._inflater.feed(data)

    def step(self) -> list[bytes]:
        """Decompresses at most STEP_OUTPUT bytes and returns the records they completed."""
        self._text += self._inflater.pull()
        return self._split(final=False)

    def finish(self) -> StreamSummary:
        """Checks that the data ended where a valid object ends; `step` must be hungry."""
        if not self.hungry:
            raise RuntimeError("finish() before step() was called until hungry")
        self._text += self._inflater.pull(final=True)
        if self._split(final=True):
            raise RuntimeError("finish() before step() was called until hungry")
        return self._summary()

    # splitting

    def _split(self, *, final: bool) -> list[bytes]:
        records: list[bytes] = []
        self._bulk_failed = False
        pos: int | None = 0
        while pos is not None:
            consumed = pos
            pos = self._advance(pos, final, records)
        # Whitespace between values can go (the last `_advance` skipped it already: a
        # file may hold gigabytes of it, and each scan of it costs).
        consumed = self._ws_end if self._ws_end >= consumed else _skip_ws(self._text, consumed)
        if consumed:
            del self._text[:consumed]
            self._base += consumed
        if final and self._phase not in ("start", "end"):
            raise DecodeError("not_json", f"JSON ends early, at byte {self._inflater.raw_bytes}")
        return records

    def _advance(self, pos: int, final: bool, records: list[bytes]) -> int | None:
        """One step of the envelope's state machine; None when more input is needed."""
        self._ws_end = -1
        if self._phase == "start" and self._base == 0 and pos == 0:
            if UTF8_BOM.startswith(self._text[:3]) and len(self._text) < 3 and not final:
                return None
            if self._text[:3] == UTF8_BOM:
                return 3
        pos = self._ws_end = _skip_ws(self._text, pos)
        if pos == len(self._text):
            return None
        byte = self._text[pos]
        match self._phase:
            case "start":
                if byte != _LBRACE:
                    return self._wrong_type(
                        pos, final, "not_object", "the JSON document", "an object"
                    )
                self._phase = "key"
                return pos + 1
            case "key":
                if byte == _RBRACE and not self._keys:
                    self._phase = "end"
                    return pos + 1
                return self._read_key(pos, final)
            case "colon":
                if byte != _COLON:
                    raise self._syntax(pos, "':' after a key")
                self._phase = "records" if self._key == "Records" else "value"
                return pos + 1
            case "records":
                if byte != _LBRACKET:
                    return self._wrong_type(pos, final, "records_not_list", "Records", "an array")
                self._phase, self._array_empty = "record", True
                return pos + 1
            case "record":
                if byte == _RBRACKET and self._array_empty:
                    self._phase = "next"
                    return pos + 1
                if byte == _LBRACE and not self._bulk_failed:
                    bulk = self._read_records_bulk(pos, records)
                    if bulk is not None:
                        return bulk
                return self._read_record(pos, final, records)
            case "record_sep":
                return self._separator(pos, byte, _RBRACKET, "record", "',' or ']' after a record")
            case "value":
                return self._skip_value(pos, final)
            case "next":
                return self._separator(pos, byte, _RBRACE, "key", "',' or '}' after a value")
            case "end":
                raise self._syntax(pos, "nothing after the JSON document")

    def _separator(self, pos: int, byte: int, close: int, then: _Phase, expected: str) -> int:
        if byte == _COMMA:
            self._phase = then
            return pos + 1
        if byte == close:
            self._phase = "next" if close == _RBRACKET else "end"
            return pos + 1
        raise self._syntax(pos, expected)

    def _read_key(self, pos: int, final: bool) -> int | None:
        if self._text[pos] != _QUOTE:
            raise self._syntax(pos, "a string key")
        end = self._value_end(pos, final)
        if end is None:
            return None
        try:
            self._key = msgspec.json.decode(bytes(self._text[pos:end]), type=str)
        except msgspec.DecodeError as exc:
            raise DecodeError("not_json", f"not JSON at byte {self._base + pos}: {exc}") from None
        self._keys.append(self._key)
        self._phase = "colon"
        return end

    def _skip_value(self, pos: int, final: bool) -> int | None:
        end = self._value_end(pos, final)
        if end is None:
            return None
        self._format(pos, end)
        self._phase = "next"
        return end

    def _read_records_bulk(self, pos: int, records: list[bytes]) -> int | None:
        """Many records at once, at msgspec's speed: guess where the last complete record in
        the buffer ends, and let msgspec parse everything up to there as one JSON array.

        A guess is right exactly when that parse succeeds: a cut inside a string leaves the
        string open, and a cut inside a nested value leaves a bracket open, and either is
        invalid JSON. So a wrong guess costs a parse, never a wrong record. After a few
        wrong guesses the bracket scanner takes over until the next step.
        """
        text = self._text
        end = len(text)
        for _ in range(_BULK_TRIES):
            cut = _last_boundary(text, pos, end)
            if cut is None:
                break
            chunk = bytes(text[pos:cut])
            try:
                raws = _decode_array(b"[" + chunk + b"]")
            except msgspec.DecodeError:
                end = cut - 1
                continue
            except RecursionError:
                break  # one record at a time says which one
            check_utf8(chunk, self._base + pos)
            multiline = b"\n" in chunk or b"\r" in chunk
            for raw in raws:
                if len(raw) > self._max_value:
                    raise DecodeError(
                        "record_too_large",
                        f"Records[{self._records}] is larger than {self._max_value} bytes",
                    )
                self._take(one_line(bytes(raw)) if multiline else bytes(raw), records)
            return cut
        self._bulk_failed = True
        return None

    def _read_record(self, pos: int, final: bool, records: list[bytes]) -> int | None:
        end = self._value_end(pos, final)
        if end is None:
            return None
        self._take(self._format(pos, end), records)
        return end

    def _take(self, line: bytes, records: list[bytes]) -> None:
        check_record(line, self._records)
        if len(line) > OVERSIZED_RECORD:
            self._oversized.append((self._records, len(line)))
        records.append(line)
        self._records += 1
        self._phase, self._array_empty = "record_sep", False

    def _wrong_type(
        self, pos: int, final: bool, reason: DecodeReason, what: str, expected: str
    ) -> int | None:
        """A value of the wrong JSON type: named once it is known to be valid JSON at all
        (else it is not_json, as decode.py says), so the wait for its end comes first."""
        end = self._value_end(pos, final)
        if end is None:
            return None
        kind = json_type(self._format(pos, end))
        raise DecodeError(
            reason,
            f"{what} is {kind}, not {expected}",
        )

    def _value_end(self, pos: int, final: bool) -> int | None:
        """Where the JSON value starting at `pos` ends; None if it does not end in the buffer."""
        text = self._text
        first = text[pos]
        end: int | None
        if first == _QUOTE:
            found = _STRING.match(text, pos)
            end = found.end() if found else None
        elif first in _OPEN:
            end = _container_end(text, pos)
        else:
            scalar = _SCALAR.match(text, pos)
            assert scalar is not None  # the pattern matches the empty string
            if scalar.end() == pos:
                raise self._syntax(pos, "a JSON value")
            # A scalar at the end of the data is complete only as the whole document.
            complete = scalar.end() < len(text) or (final and self._phase == "start")
            end = scalar.end() if complete else None
        if end is None and final:
            raise DecodeError("not_json", f"JSON ends inside a value at byte {self._base + pos}")
        if (len(text) if end is None else end) - pos > self._max_value:
            where = f"Records[{self._records}]" if self._phase == "record" else "a value"
            raise DecodeError(
                "record_too_large",
                f"{where} at byte {self._base + pos} is larger than {self._max_value} bytes",
            )
        return end

    def _format(self, pos: int, end: int) -> bytes:
        """The value validated and made one line, as decode.py does it."""
        value = bytes(self._text[pos:end])
        try:
            _validate(value)
            line = one_line(value)
        except msgspec.DecodeError as exc:
            raise DecodeError("not_json", f"not JSON at byte {self._base + pos}: {exc}") from None
        except RecursionError:
            where = self._base + pos
            raise DecodeError(
                "not_json", f"JSON nested deeper than the decoder allows, at byte {where}"
            ) from None
        check_utf8(line, self._base + pos)
        return line

    def _summary(self) -> StreamSummary:
        sha256, raw_bytes = self._inflater.sha256, self._inflater.raw_bytes
        if self._phase == "start":
            return StreamSummary("empty", 0, raw_bytes, content_sha256=sha256)
        if "Records" in self._keys:
            return StreamSummary("log", self._records, raw_bytes, tuple(self._oversized), sha256)
        if _DIGEST_KEYS.intersection(self._keys):
            return StreamSummary("digest", 0, raw_bytes, content_sha256=sha256)
        raise no_records(self._keys)

    def _syntax(self, pos: int, expected: str) -> DecodeError:
        return DecodeError("not_json", f"not JSON: expected {expected} at byte {self._base + pos}")


_validate: Final = msgspec.json.Decoder(msgspec.Raw).decode
_decode_array: Final = msgspec.json.Decoder(list[msgspec.Raw]).decode
_BULK_TRIES: Final = 4
#: Where records usually meet: CloudTrail writes `eventVersion` first. Any `},{` will do
#: when that is not found; a guess is always checked.
_LIKELY_BOUNDARY: Final = b'},{"eventVersion"'
_BOUNDARY: Final = b"},{"


def _skip_ws(text: bytearray, pos: int) -> int:
    """The first position from `pos` that is not JSON whitespace (`len(text)` if none)."""
    spaces = _SPACES.match(text, pos)
    assert spaces is not None  # the patterns match the empty string
    found = _WS_RUN.match(text, spaces.end())
    assert found is not None
    return found.end()


def _last_boundary(text: bytearray, start: int, end: int) -> int | None:
    """The end of what may be the last complete record before `end` (just after its `}`)."""
    found = text.rfind(_LIKELY_BOUNDARY, start, end)
    if found < 0:
        found = text.rfind(_BOUNDARY, start, end)
    return None if found < 0 else found + 1


def _container_end(text: bytearray, pos: int) -> int | None:
    """The end of the object or array at `pos`; brackets inside strings do not count."""
    depth = 0
    for token in _TOKEN.finditer(text, pos):
        if token.end() - token.start() > 1:
            continue  # a whole string
        char = text[token.start()]
        if char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth -= 1
            if depth == 0:
                return token.end()
        else:
            return None  # a string that does not end in the buffer yet
    return None
