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

How it reads, in bounded memory whatever the document's size: `Salvager` takes the text as
pieces (a document held in memory, or one inflated as it is read: inflating.text_of) and
gives records and parts a step at a time. The scanner only moves forward, through a window
that lets go of what it is done with: it holds one element (at most `max_record` bytes,
past which an element is `record_too_large`) and a piece of text or two, never the
document. Of what it let go it remembers only what the end of an unreadable tail needs
(the last `]`, the last byte that is neither whitespace nor a comma). Two consequences, for
input no CloudTrail writer produces: a string longer than `max_record` is
`record_too_large`, not `truncated`, when it never ends; and after damage, a record start
followed by more than `_LONG_RUN` bytes of whitespace is not a footing (the scanner could not
go back into it), so it is part of the unreadable part. A document with more than
`MAX_UNREADABLE` unreadable parts is no damaged CloudTrail file: it is refused whole
(`too_many_unreadable`), so that the parts kept of one object stay bounded too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

import msgspec

from cloudtrail_adapter.decoding.values import DecodeError, Unreadable

__all__ = [
    "EXCERPT",
    "MAX_UNREADABLE",
    "RAW_CAP",
    "SalvageStep",
    "Salvaged",
    "Salvager",
    "pieces_of",
    "record_at",
    "salvage",
]

#: Bytes shown either side of a fault.
EXCERPT: Final = 40
#: Raw bytes of an unreadable part kept for `quarantine show` and `export`.
RAW_CAP: Final = 64 * 1024
#: Nesting deeper than this is not a CloudTrail record (AWS nests a few levels).
MAX_DEPTH: Final = 64
#: Unreadable parts of one document before it is refused whole: a damaged file has a few.
#: With RAW_CAP, this bounds what is held of one object's parts (16 MiB).
MAX_UNREADABLE: Final = 256
#: Text per piece when the document is held in memory.
PIECE: Final = 4 << 20

#: A run of whitespace this long lets go of what the scanner held before it.
_LONG_RUN: Final = 1 << 20
#: Bytes let go of at once, at least (fewer deletions at the front of the window).
_LET_GO: Final = 1 << 20
#: Bytes an element is first scanned in; four times more each time it does not end there.
_FIRST_SCAN: Final = 64 << 10

_RECORDS_KEY: Final = b'"Records"'
_TOKEN: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|["{}\[\]]', re.DOTALL)
_WS_RUN: Final = re.compile(rb"[ \t\r\n]*")
_SPACE_RUN: Final = re.compile(rb"\s*")  # between "Records", ":" and "[", as ever
_TRIM: Final = b" \t\r\n,"
_OPEN: Final = frozenset(b"{[")
_NON_FINITE: Final = re.compile(rb"-?(?:NaN|Infinity)")
_LBRACE, _RBRACE, _RBRACKET, _COMMA, _COLON, _LBRACKET, _QUOTE = b'{}],:["'


@dataclass(frozen=True, slots=True)
class Salvaged:
    records: list[tuple[int, int]]  # each record's byte range, in file order (`record_at`)
    unreadable: list[Unreadable]


@dataclass(slots=True)
class SalvageStep:
    """What one step found, in file order: records as one line each (and their byte
    ranges in the text), and the unreadable parts."""

    records: list[bytes] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)
    size: int = 0  # bytes of `records`


def record_at(data: bytes, span: tuple[int, int]) -> bytes:
    """The record at `span` as one line, byte for byte unless it holds a line break."""
    return _one_line(data[span[0] : span[1]])


def pieces_of(data: bytes) -> Iterator[memoryview]:
    """A document held in memory, as the pieces `Salvager` reads."""
    view = memoryview(data)
    return (view[start : start + PIECE] for start in range(0, len(view), PIECE))


def salvage(data: bytes, *, max_record: int) -> Salvaged:
    """Every readable record of a decompressed document, and every unreadable part.

    Raises DecodeError when no `Records` array can be found at all (the file is quarantined
    whole, as before). `max_record` bounds one record: a longer one is `record_too_large`.
    """
    salvager = Salvager(pieces_of(data), max_record=max_record)
    spans: list[tuple[int, int]] = []
    parts: list[Unreadable] = []
    while not salvager.done:
        found = salvager.step(PIECE)
        spans += found.spans
        parts += found.unreadable
    return Salvaged(spans, parts)


class Salvager:
    """A damaged document's text in, as `pieces`; `step` until `done`.

    Raises DecodeError: `no_records` when no `Records` array can be found at all,
    `too_many_unreadable` past `max_unreadable` parts, and whatever reading `pieces` raises
    (a corrupt gzip stream). After the array, the rest of the text is read through too, so
    that whoever inflates and hashes it sees all of it.
    """

    def __init__(
        self,
        pieces: Iterable[bytes | memoryview],
        *,
        max_record: int,
        max_unreadable: int = MAX_UNREADABLE,
    ) -> None:
        self._window = _Window(pieces)
        self._max_record = max_record
        self._max_unreadable = max_unreadable
        self._index = 0  # elements of the array seen
        self._lost = 0  # unreadable parts
        self._found = SalvageStep()
        self._elements = self._run()
        self.done = False

    def step(self, budget: int) -> SalvageStep:
        """Records and parts found until the records hold `budget` bytes (or the end)."""
        found = self._found = SalvageStep()
        for _ in self._elements:
            if found.size >= budget:
                return found
        self._window.drain()
        self.done = True
        return found

    # the scan, one element at a time

    def _run(self) -> Iterator[None]:
        window = self._window
        p: int | None = self._records_array()
        while p is not None:
            window.keep = max(window.keep, p)
            p = window.skip(p)
            if window.at(p) in (None, _RBRACKET):
                p = self._after_close(p)  # the end, or a stray `]` between two records
                yield
                continue
            start = p
            end, reason, fault, piece = self._element(start)
            if reason is None:
                p = self._after_record(start, end, piece)
                if p is not None and p >= 0:
                    yield
                    continue
                if p is None:
                    break
                reason, fault = "cut_short", end  # a valid object, then more of something
            lost = self._capture(start, start if fault is None else fault)
            resume = self._footing(max(start + 1, window.keep))
            self._lose(lost, self._array_end(start) if resume is None else resume, reason)
            p = resume
            yield

    def _records_array(self) -> int:
        """Where the first element of the first `"Records": [` can start."""
        window = self._window
        pos = 0
        while (found := window.find(_RECORDS_KEY, pos)) >= 0:
            colon = window.skip(found + len(_RECORDS_KEY), _SPACE_RUN)
            if window.at(colon) == _COLON:
                bracket = window.skip(colon + 1, _SPACE_RUN)
                if window.at(bracket) == _LBRACKET:
                    return bracket + 1
            pos = max(found + 1, window.keep)
        raise DecodeError("no_records", "no Records array found to salvage records from")

    def _after_close(self, p: int) -> int | None:
        """At a `]` (or the end): the array's end when the envelope goes on after it, else
        a damaged byte (a record follows a stray `]`, or the footing is found further on)."""
        window = self._window
        if window.at(p) is None:
            return None  # the array never closes: what was whole has been taken
        after = window.skip(p + 1, hold=p)
        byte = window.at(after)
        if byte is None or byte in b"},":
            return None
        if byte == _LBRACE:
            self._lose_byte(p, _RBRACKET, "bad_separator")
            return after
        lost = self._capture(p, p)
        resume = self._footing(after)  # what lies between is whitespace: the same as from p + 1
        self._lose(lost, self._array_end(p) if resume is None else resume, "not_a_record_start")
        return resume

    def _after_record(self, start: int, end: int, piece: bytes) -> int | None:
        """Takes the valid object at `start`..`end` when what follows it says it is whole,
        and says where to go on: a position, None at the array's end, -1 when it is not."""
        window = self._window
        follow = window.skip(end, hold=start)
        byte = window.at(follow)
        if byte is None or byte in b",]":
            self._take(start, end, piece)
            if byte == _COMMA:
                return follow + 1
            return None if byte is None else follow
        after = window.skip(follow + 1, hold=start)  # one stray byte where `,` or `]` belongs?
        then = window.at(after)
        if then is None or then in b"{}":
            self._take(start, end, piece)
            self._lose_byte(follow, byte, "bad_separator")
            return after if then == _LBRACE else None
        return -1

    def _element(self, start: int) -> tuple[int, str | None, int | None, bytes]:
        """The element at `start`: its end, why it is not a record (None if it is), where
        the fault is, and its bytes when it is an object that scanned whole."""
        window = self._window
        if window.at(start) != _LBRACE:
            return start + 1, "record_not_object", start, b""
        end, problem = self._scan(start)
        if problem is not None:
            return end, problem, end, b""
        piece = window.piece(start, end)
        reason, fault = _invalid(piece)
        return end, reason, None if fault is None else start + fault, piece

    def _scan(self, start: int) -> tuple[int, str | None]:
        """Where the value starting with `{` at `start` ends, by its tokens; or why that is
        not known: `truncated` (the text ends first), `too_deep`, `record_too_large` (it
        does not end within `max_record` bytes)."""
        window = self._window
        limit = start + self._max_record
        span = _FIRST_SCAN
        while True:
            wanted = min(start + span, limit + 2)
            window.has(wanted - 1)
            stop = min(wanted, window.end)
            base = window.base
            end, problem = _scan_tokens(window.buf, start - base, stop - base, limit - base)
            if end is not None:
                return end + base, problem
            if stop == window.end and window.eof:
                return stop, "truncated"  # a string that never ends, or the text
            if stop == limit + 2:
                return limit + 1, "record_too_large"
            span *= 4

    def _footing(self, after: int) -> int | None:
        """The next record start from `after` that is beyond doubt (see the module doc): the
        next `{` (damage between two records), else one after a `,`."""
        window = self._window
        begin = window.find(b"{", after)
        while begin >= 0:
            if self._resumes_at(begin):
                return begin
            begin = self._next_boundary(max(begin + 1, window.keep))
        return None

    def _resumes_at(self, begin: int) -> bool:
        window = self._window
        window.keep = max(window.keep, begin)
        end, problem = self._scan(begin)
        if problem is not None:
            return False
        follow = window.skip(end, hold=begin)
        if window.keep > begin or window.at(follow) not in (_COMMA, _RBRACKET):
            return False  # not followed by `,` or `]` (or by a long whitespace run first)
        return _is_record(window.piece(begin, end))

    def _next_boundary(self, pos: int) -> int:
        """The `{` of the next `,`, whitespace, `{` from `pos`; -1 when there is none."""
        window = self._window
        while (comma := window.find(b",", pos)) >= 0:
            brace = window.skip(comma + 1)
            if window.at(brace) == _LBRACE:
                return brace
            pos = brace  # what was skipped is whitespace: no `,` in it
        return -1

    def _array_end(self, after: int) -> int:
        """Where the unreadable tail ends when no record follows: the array's last `]`
        (the footing search read the text to its end)."""
        window = self._window
        last = window.last_close()
        return last if last > after else window.end

    # what is found

    def _take(self, start: int, end: int, piece: bytes) -> None:
        line = _one_line(piece)
        found = self._found
        found.records.append(line)
        found.spans.append((start, end))
        found.size += len(line)
        self._index += 1

    def _capture(self, start: int, fault: int) -> _Lost:
        """What an unreadable part keeps of its bytes, taken before the footing search lets
        go of them: its head, and the bytes around the fault."""
        window = self._window
        head_at = max(start, window.keep)
        near_at = max(head_at, fault - EXCERPT)
        head = window.piece(head_at, start + RAW_CAP) if start + RAW_CAP > head_at else b""
        return _Lost(start, fault, head_at, head, near_at, window.piece(near_at, fault + EXCERPT))

    def _lose(self, lost: _Lost, stop: int, reason: str) -> None:
        stop = self._window.solid_end(lost.start, stop)
        excerpt = lost.near[: max(0, min(stop, lost.fault + EXCERPT) - lost.near_at)]
        raw = lost.head[: max(0, stop - lost.head_at)]
        self._add(Unreadable(self._index, lost.start, stop, reason, excerpt, raw))

    def _lose_byte(self, pos: int, byte: int, reason: str) -> None:
        one = bytes([byte])
        self._add(Unreadable(self._index, pos, pos + 1, reason, one, one))

    def _add(self, part: Unreadable) -> None:
        if self._lost >= self._max_unreadable:
            raise DecodeError(
                "too_many_unreadable",
                f"more than {self._max_unreadable} parts of Records are unreadable "
                f"(the last at byte {part.start}): not a damaged CloudTrail file",
            )
        self._found.unreadable.append(part)
        self._index += 1
        self._lost += 1


@dataclass(frozen=True, slots=True)
class _Lost:
    """An unreadable part whose end is not known yet: what it keeps of its bytes."""

    start: int
    fault: int
    head_at: int  # where `head` starts: `start`, unless a long whitespace run let it go
    head: bytes
    near_at: int
    near: bytes


class _Window:
    """The text from `base` on, pulled from `pieces` as the scanner reads on. What is before
    `keep` (which only moves forward) is let go of when more is pulled, so the scanner reads
    only from `keep` on; positions are offsets in the whole text."""

    def __init__(self, pieces: Iterable[bytes | memoryview]) -> None:
        self._pieces = iter(pieces)
        self.buf = bytearray()
        self.base = 0
        self.eof = False
        self.keep = 0
        self._last_close = -1  # the last `]` let go of
        self._close_solid = 0  # where what is not whitespace nor `,` ends before it
        self._last_solid = -1  # the last byte let go of that is neither whitespace nor `,`

    @property
    def end(self) -> int:
        return self.base + len(self.buf)

    def has(self, pos: int) -> bool:
        """Whether the text reaches `pos`, pulling more of it as needed."""
        while pos >= self.base + len(self.buf):
            if not self._pull():
                return False
        return True

    def at(self, pos: int) -> int | None:
        """The byte at `pos` (None past the end)."""
        if not self.has(pos):
            return None
        assert pos >= self.base, (pos, self.base)
        return self.buf[pos - self.base]

    def piece(self, start: int, stop: int) -> bytes:
        """text[start:stop] (shorter at the end)."""
        self.has(stop - 1)
        assert start >= self.base, (start, self.base)
        return bytes(self.buf[start - self.base : stop - self.base])

    def skip(self, pos: int, run: re.Pattern[bytes] = _WS_RUN, hold: int | None = None) -> int:
        """The first position from `pos` past a run of `run` (the end, if none): what it
        skips is let go of, except from `hold` on while the run is shorter than _LONG_RUN."""
        begin = pos
        while self.has(pos):
            found = run.match(self.buf, pos - self.base)
            assert found is not None  # the patterns match the empty string
            pos = self.base + found.end()
            if pos < self.end:
                return pos
            if hold is None or pos - begin > _LONG_RUN:
                self.keep = max(self.keep, pos)
        return pos

    def find(self, needle: bytes, pos: int) -> int:
        """The first `needle` at or after `pos` (-1 if none); what it searched is let go."""
        while self.has(pos + len(needle) - 1):
            found = self.buf.find(needle, pos - self.base)
            if found >= 0:
                return self.base + found
            pos = self.end - len(needle) + 1
            self.keep = max(self.keep, pos)
        return -1

    def last_close(self) -> int:
        """The last `]` of the text so far (-1 if none)."""
        found = self.buf.rfind(b"]")
        return self.base + found if found >= 0 else self._last_close

    def solid_end(self, start: int, stop: int) -> int:
        """`stop`, less the whitespace and commas before it, but not below `start`."""
        low = max(start, self.base)
        if start < stop < self.base:
            return max(start, self._close_solid)  # stop is the last `]`, let go of
        if stop > low:
            if self.buf[stop - 1 - self.base] not in _TRIM:
                return stop
            kept = len(bytes(self.buf[low - self.base : stop - self.base]).rstrip(_TRIM))
            if kept:
                return low + kept
        return max(start, self._last_solid + 1) if low > start else start

    def drain(self) -> None:
        """Reads the rest of the text through, holding none of it."""
        self.buf.clear()
        for piece in self._pieces:
            self.base += len(piece)
        self.eof = True

    def _pull(self) -> bool:
        if self.eof:
            return False
        for piece in self._pieces:
            if len(piece):
                self._let_go()
                self.buf += piece
                return True
        self.eof = True
        return False

    def _let_go(self) -> None:
        gone = min(self.keep, self.end) - self.base
        if gone < _LET_GO:
            return
        close = self.buf.rfind(b"]", 0, gone)
        if close >= 0:
            self._last_close = self.base + close
            before = len(bytes(self.buf[:close]).rstrip(_TRIM))
            self._close_solid = self.base + before if before else self._last_solid + 1
        if self.buf[gone - 1] not in _TRIM:
            self._last_solid = self.base + gone - 1
        elif solid := len(bytes(self.buf[:gone]).rstrip(_TRIM)):
            self._last_solid = self.base + solid - 1
        del self.buf[:gone]
        self.base += gone


def _scan_tokens(buf: bytearray, low: int, high: int, limit: int) -> tuple[int | None, str | None]:
    """The end of the value starting with `{` at `low`, from its tokens in buf[low:high];
    (None, None) when that does not say (a string or the value goes on past `high`)."""
    depth = 0
    for token in _TOKEN.finditer(buf, low, high):
        at = token.start()
        if at > limit:
            return at, "record_too_large"
        first = buf[at]
        if first == _QUOTE:
            if token.end() - at == 1:
                return None, None  # a string that does not end by `high`
            continue
        if first in _OPEN:
            depth += 1
            if depth > MAX_DEPTH:
                return at, "too_deep"
        else:
            depth -= 1
            if depth == 0:
                return token.end(), None
    return None, None


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
