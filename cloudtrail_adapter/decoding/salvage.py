"""A damaged CloudTrail document -> every record readable on its own, and what was not.

The strict decoders refuse a whole file for one bad byte: a lone surrogate escape, an
invalid UTF-8 byte, a `NaN`, a raw control character. Here the damage costs only the record
it is in. Pure and CPU-bound like decode.py; used only after the strict path refused a
document, so it may be slower than it.

How records are found without trusting the content:
- The `Records` array is found by its key; what is around it is not needed.
- Each element's end is found by scanning tokens: strings (with their escapes) are skipped
  whole, brackets counted, so compact and pretty-printed files read alike. An element is a
  record when it is valid JSON on its own (msgspec, else Python's json for what JSON's
  grammar allows and msgspec refuses: a lone surrogate escape) and is followed by `,` or `]`.
- Where an element is not, the scanner finds its footing again at the next record start:
  a `{` after `,`, from which a whole record scans, validates, is followed by `,` or
  `]` and has a CloudTrail record's own keys (`eventVersion` or `eventTime`), so that a
  nested object of the damaged record is never shipped as a record of its own.
- Everything between is one unreadable part, reported with its index among the elements,
  its byte range, a reason and the bytes around the fault.

Records that are valid ship byte for byte as the strict path would ship them; one holding a
line break is compacted (with ASCII escapes where msgspec cannot: a lone surrogate).
"""

from __future__ import annotations

import json
import mmap
import re
from dataclasses import dataclass
from typing import Final

import msgspec

from cloudtrail_adapter.decoding.batches import Unreadable
from cloudtrail_adapter.decoding.decode import DecodeError

__all__ = ["EXCERPT", "RAW_CAP", "Salvaged", "Text", "record_at", "salvage"]

#: The decompressed document: bytes, or a memory map of it spooled to a file (a large one).
Text = bytes | mmap.mmap

#: Bytes shown either side of a fault.
EXCERPT: Final = 40
#: Raw bytes of an unreadable part kept for `quarantine show` and `export`.
RAW_CAP: Final = 64 * 1024
#: Nesting deeper than this is not a CloudTrail record (AWS nests a few levels).
MAX_DEPTH: Final = 64

_RECORDS: Final = re.compile(rb'"Records"\s*:\s*\[')
_TOKEN: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|["{}\[\]]', re.DOTALL)
_BOUNDARY: Final = re.compile(rb",\s*(\{)")
_WS: Final = b" \t\r\n"
_OPEN: Final = frozenset(b"{[")
_NON_FINITE: Final = re.compile(rb"-?(?:NaN|Infinity)")


@dataclass(frozen=True, slots=True)
class Salvaged:
    records: list[tuple[int, int]]  # each record's byte range, in file order (`record_at`)
    unreadable: list[Unreadable]


def record_at(data: Text, span: tuple[int, int]) -> bytes:
    """The record at `span` as one line, byte for byte unless it holds a line break."""
    return _one_line(data[span[0] : span[1]])


def salvage(data: Text, *, max_record: int) -> Salvaged:
    """Every readable record of a decompressed document, and every unreadable part.

    Raises DecodeError when no `Records` array can be found at all (the file is quarantined
    whole, as before). `max_record` bounds one record: a longer one is `record_too_large`.
    """
    found = _RECORDS.search(data)
    if found is None:
        raise DecodeError("no_records", "no Records array found to salvage records from")
    return _Scanner(data, max_record).run(found.end())


class _Scanner:
    def __init__(self, data: Text, max_record: int) -> None:
        self.data = data
        self.max_record = max_record
        self.records: list[tuple[int, int]] = []
        self.unreadable: list[Unreadable] = []
        self.index = 0

    def run(self, position: int) -> Salvaged:
        data = self.data
        p: int | None = position
        while p is not None:
            p = _skip_ws(data, p)
            if p >= len(data) or data[p] == ord("]"):
                p = self._after_close(p)  # the end, or a stray `]` between two records
                continue
            start = p
            end, reason, fault = self._element(start)
            if reason is None:
                p = self._after_record(start, end)
                if p is not None and p >= 0:
                    continue
                if p is None:
                    break
                reason, fault = "cut_short", end  # a valid object, then more of something
            resume = self._footing(start + 1)
            stop = resume if resume is not None else _array_end(data, start)
            self._lose(start, stop, reason, fault if fault is not None else start)
            p = resume
        return Salvaged(self.records, self.unreadable)

    def _after_close(self, p: int) -> int | None:
        """At a `]` (or the end): the array's end when the envelope goes on after it, else
        a damaged byte (a record follows a stray `]`, or the footing is found further on)."""
        data = self.data
        if p >= len(data):
            return None  # the array never closes: what was whole has been taken
        after = _skip_ws(data, p + 1)
        if after >= len(data) or data[after] in b"},":
            return None
        if data[after] == ord("{"):
            self._lose(p, p + 1, "bad_separator", p)
            return after
        resume = self._footing(p + 1)
        self._lose(
            p, resume if resume is not None else _array_end(data, p), "not_a_record_start", p
        )
        return resume

    def _after_record(self, start: int, end: int) -> int | None:
        """Takes the valid object at `start`..`end` when what follows it says it is whole,
        and says where to go on: a position, None at the array's end, -1 when it is not."""
        data = self.data
        follow = _skip_ws(data, end)
        if follow >= len(data) or data[follow] in b",]":
            self._take(start, end)
            if follow < len(data) and data[follow] == ord(","):
                return follow + 1
            return follow if follow < len(data) else None
        after = _skip_ws(data, follow + 1)  # one stray byte where `,` or `]` belongs?
        if after >= len(data) or data[after] in b"{}":
            self._take(start, end)
            self._lose(follow, follow + 1, "bad_separator", follow)
            return after if after < len(data) and data[after] == ord("{") else None
        return -1

    def _element(self, start: int) -> tuple[int, str | None, int | None]:
        """The element at `start`: its end, and why it is not a record (None if it is)."""
        data = self.data
        if data[start] != ord("{"):
            return start + 1, "record_not_object", start
        end, problem = _scan(data, start, self.max_record)
        if problem is not None:
            return end, problem, end
        reason, fault = _invalid(data[start:end])
        return end, reason, None if fault is None else start + fault

    def _footing(self, after: int) -> int | None:
        """The next record start from `after` that is beyond doubt (see the module doc): the
        next `{` (damage between two records), else one after a `,`."""
        data = self.data
        brace = data.find(b"{", after)
        candidates = ([brace] if brace >= 0 else []) + [
            c.start(1) for c in _BOUNDARY.finditer(data, after)
        ]
        for begin in candidates:
            end, problem = _scan(data, begin, self.max_record)
            if problem is not None:
                continue
            follow = _skip_ws(data, end)
            if follow < len(data) and data[follow] in b",]" and _is_record(data[begin:end]):
                return begin
        return None

    def _take(self, start: int, end: int) -> None:
        self.records.append((start, end))
        self.index += 1

    def _lose(self, start: int, stop: int, reason: str, fault: int) -> None:
        data = self.data
        while stop > start and data[stop - 1] in b" \t\r\n,":
            stop -= 1
        excerpt = data[max(start, fault - EXCERPT) : min(stop, fault + EXCERPT)]
        self.unreadable.append(
            Unreadable(
                self.index, start, stop, reason, excerpt, data[start : min(stop, start + RAW_CAP)]
            )
        )
        self.index += 1


def _skip_ws(data: Text, p: int) -> int:
    while p < len(data) and data[p] in _WS:
        p += 1
    return p


def _scan(data: Text, start: int, max_record: int) -> tuple[int, str | None]:
    """Where the value starting with `{` at `start` ends, by its tokens; or why not known."""
    depth = 0
    limit = start + max_record
    for token in _TOKEN.finditer(data, start):
        if token.start() > limit:
            return token.start(), "record_too_large"
        first = token.group()[0]
        if first == ord('"'):
            if len(token.group()) == 1:
                return len(data), "truncated"  # a string that never ends
            continue
        if first in _OPEN:
            depth += 1
            if depth > MAX_DEPTH:
                return token.start(), "too_deep"
        else:
            depth -= 1
            if depth == 0:
                return token.end(), None
    return len(data), "truncated"


def _invalid(piece: bytes) -> tuple[str | None, int | None]:
    """Why a scanned element is not a record on its own, and where (None: it is one)."""
    try:
        value = msgspec.json.decode(piece)
    except msgspec.DecodeError:
        return _slow_verdict(piece)
    return (None, None) if isinstance(value, dict) else ("record_not_object", 0)


def _slow_verdict(piece: bytes) -> tuple[str | None, int | None]:
    """What JSON's grammar allows and msgspec refuses (a lone surrogate escape) is a record;
    anything else gets its reason and offset."""
    try:
        text = piece.decode("utf-8")
    except UnicodeDecodeError as exc:
        return "invalid_utf8", exc.start
    try:
        value = json.loads(text, parse_constant=_refuse)
    except _NonFinite:
        found = _NON_FINITE.search(piece)
        return "non_finite_number", found.start() if found else 0
    except json.JSONDecodeError as exc:
        offset = len(text[: exc.pos].encode("utf-8", "surrogatepass"))
        kind = "control_character" if exc.msg.startswith("Invalid control") else "not_json"
        return kind, offset
    return (None, None) if isinstance(value, dict) else ("record_not_object", 0)


class _NonFinite(ValueError):
    pass


def _refuse(constant: str) -> object:
    raise _NonFinite(constant)


class _Keys(msgspec.Struct):
    eventVersion: msgspec.Raw = msgspec.Raw()
    eventTime: msgspec.Raw = msgspec.Raw()


_decode_keys: Final = msgspec.json.Decoder(_Keys).decode


def _is_record(piece: bytes) -> bool:
    """A CloudTrail record by its own keys, not merely an object (a nested one is not)."""
    try:
        keys = _decode_keys(piece)
    except msgspec.DecodeError:
        try:
            value = json.loads(piece.decode("utf-8"), parse_constant=_refuse)
        except (ValueError, UnicodeDecodeError):
            return False
        return isinstance(value, dict) and ("eventVersion" in value or "eventTime" in value)
    return bool(keys.eventVersion) or bool(keys.eventTime)


def _one_line(piece: bytes) -> bytes:
    if b"\n" not in piece and b"\r" not in piece:
        return piece
    try:
        compact: bytes = msgspec.json.format(piece, indent=-1)
    except msgspec.DecodeError:
        value = json.loads(piece.decode("utf-8"))
        return json.dumps(value, separators=(",", ":")).encode("ascii")
    return compact


def _array_end(data: Text, after: int) -> int:
    """Where the unreadable tail ends when no record follows: the array's last `]`."""
    end = data.rfind(b"]")
    return end if end > after else len(data)
