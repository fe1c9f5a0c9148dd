"""An object's bytes -> its text, a step at a time: what the incremental decoders read.

decode.py inflates a small object at once; a large one, or one whose text turns out large
(a few MB of gzip may hold gigabytes), is inflated here a step at a time, so that only one
step of its text is ever held. The same decisions as decode.py: gzip by its magic bytes,
every member, NUL padding between members, the same error reasons; and two more things
every path needs of the text: its length and SHA-256 (the integrity check), and a bound on
it (`max_inflated`, the `max_inflated_size` key): past it the object is refused, whatever
the memory it would take, because no CloudTrail file is that large and a bomb would cost
the CPU of inflating all of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Final

from isal import isal_zlib

from cloudtrail_adapter.decoding.decode import GZIP_MAGIC, GZIP_WBITS, inflated_too_large
from cloudtrail_adapter.decoding.values import DecodeError

__all__ = ["STEP_OUTPUT", "Inflater", "text_of"]

#: Decompressed bytes per step: bounds the memory and the records of one step.
STEP_OUTPUT: Final = 4 << 20

_IsalError: Final[type[Exception]] = isal_zlib.error  # type: ignore[assignment]


class Inflater:
    """`feed` bytes, `pull` until `hungry`, repeat; at the end `pull(final=True)` once, to
    check that the data ended where a gzip stream may end.

    Raises DecodeError, and nothing else, for bad input. Not thread-safe, but consecutive
    calls may run in different threads.
    """

    def __init__(self, *, hash_content: bool = False, max_inflated: int | None = None) -> None:
        self._hasher = hashlib.sha256() if hash_content else None
        self._max = max_inflated
        self._input = b""  # bytes not yet given to the inflater
        self._gzip: bool | None = None
        self._inflater: isal_zlib.Decompress | None = None
        self._limited = False  # the last inflate stopped at STEP_OUTPUT: more may be pending
        self._member_offset = 0
        self._consumed = 0  # compressed bytes given to the inflater so far
        self.raw_bytes = 0  # text handed out so far

    @property
    def hungry(self) -> bool:
        """True when `pull` can give nothing more until more bytes are fed (or the end)."""
        if self._gzip is None:
            return len(self._input) < 2
        if not self._gzip:
            return not self._input
        if self._inflater is None:
            return len(self._input.lstrip(b"\0")) < 2
        return not (self._input or self._inflater.unconsumed_tail or self._limited)

    @property
    def buffered(self) -> int:
        """Compressed bytes held, not yet inflated."""
        tail = len(self._inflater.unconsumed_tail) if self._inflater is not None else 0
        return len(self._input) + tail

    @property
    def sha256(self) -> str | None:
        """Hex SHA-256 of the text handed out so far, when asked for (`hash_content`)."""
        return None if self._hasher is None else self._hasher.hexdigest()

    def feed(self, data: bytes) -> None:
        self._input += data

    def pull(self, *, final: bool = False) -> bytes:
        """At most STEP_OUTPUT bytes of text; with `final`, the input is complete."""
        out = self._inflate(final=final)
        if out:
            self.raw_bytes += len(out)
            if self._max is not None and self.raw_bytes > self._max:
                raise inflated_too_large(self._max)
            if self._hasher is not None:
                self._hasher.update(out)
        return out

    def _inflate(self, *, final: bool) -> bytes:
        if self._gzip is None:
            if len(self._input) < 2 and not final:
                return b""
            self._gzip = self._input[:2] == GZIP_MAGIC
        if not self._gzip:
            out, self._input = self._input[:STEP_OUTPUT], self._input[STEP_OUTPUT:]
            return out
        if self._inflater is None and not self._start_member(final=final):
            return b""
        inflater = self._inflater
        assert inflater is not None
        data = inflater.unconsumed_tail
        if not data:
            data, self._input = self._input, b""
        try:
            out = inflater.decompress(data, STEP_OUTPUT)
        except _IsalError as exc:
            raise DecodeError(
                "corrupt_gzip", f"corrupt gzip member at byte {self._member_offset}: {exc}"
            ) from None
        self._consumed += len(data) - len(inflater.unconsumed_tail) - len(inflater.unused_data)
        self._limited = len(out) >= STEP_OUTPUT
        if inflater.eof:
            self._input = inflater.unused_data + self._input
            self._inflater, self._limited = None, False
        elif final and not (inflater.unconsumed_tail or self._limited):
            raise DecodeError(
                "truncated_gzip",
                f"gzip data ends before the end of the member at byte {self._member_offset} "
                f"({self._consumed} bytes in all)",
            )
        return out

    def _start_member(self, *, final: bool) -> bool:
        """Between members NUL padding is skipped; anything else must be a new member."""
        stripped = self._input.lstrip(b"\0")
        self._consumed += len(self._input) - len(stripped)
        self._input = stripped
        if not stripped or (len(stripped) < 2 and not final):
            return False
        if stripped[:2] != GZIP_MAGIC:
            raise DecodeError(
                "corrupt_gzip",
                f"data that is not gzip follows the gzip member(s), at byte {self._consumed}",
            )
        self._member_offset = self._consumed
        self._inflater = isal_zlib.decompressobj(wbits=GZIP_WBITS)
        return True


def text_of(chunks: Iterable[bytes], inflater: Inflater) -> Iterator[bytes]:
    """The text of an object given as compressed `chunks`, a step at a time (empty steps
    left out); the check that it ends where it may comes last, after every step."""
    for chunk in chunks:
        inflater.feed(chunk)
        while not inflater.hungry:
            if out := inflater.pull():
                yield out
    while out := inflater.pull(final=True):
        yield out
