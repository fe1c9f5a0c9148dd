"""Event keys, made in the worker processes: a record's identity (its `eventID` with its
`recipientAccountId`) hashed to 96 bits, next to the minute of its `eventTime`. The event
loop's de-duplication (dedup.py) only compares them; nothing here is shared state."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias

import msgspec

#: A record: a Raw slice of the document on the fast path, compacted bytes otherwise.
Line: TypeAlias = "bytes | msgspec.Raw"

__all__ = ["ENTRY", "KEY_BYTES", "Line", "event_key", "record_keys"]

#: Bytes per record in `Fragment.keys`: a 96-bit key, then the event minute (uint32 LE).
ENTRY: Final = 16
KEY_BYTES: Final = 12
_NO_KEY: Final = bytes(ENTRY)
_ZERO_KEY: Final = bytes(KEY_BYTES)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class _Identity(msgspec.Struct):
    eventID: Any = None
    recipientAccountId: Any = None
    eventTime: Any = None


_decode_identity: Final = msgspec.json.Decoder(_Identity).decode


def event_key(event_id: str, account: str) -> bytes:
    """The 96-bit key of an event (2^-48 collision odds for a million keys held)."""
    digest = hashlib.blake2b(f"{event_id}\0{account}".encode(), digest_size=KEY_BYTES).digest()
    return digest if digest != _ZERO_KEY else b"\1" + digest[1:]  # all zero means "no key"


def record_keys(lines: Sequence[Line]) -> bytes:
    """`ENTRY` bytes per record, in order: zeros for a record that has no identity."""
    return b"".join(map(_entry, lines))


def _entry(line: Line) -> bytes:
    """Decoding the record is most of a key's cost (~1.1 us of ~1.8 on the bench corpus:
    msgspec reads the whole record); the rest is kept to C calls (the minute's bytes are
    cached, the key compared whole)."""
    try:
        ident = _decode_identity(line)
    except msgspec.DecodeError:
        return _NO_KEY
    event_id, when, account = ident.eventID, ident.eventTime, ident.recipientAccountId
    if not (isinstance(event_id, str) and event_id and isinstance(when, str)):
        return _NO_KEY
    minute = _minute(when[:16])
    if minute is None:
        return _NO_KEY
    return event_key(event_id, account if isinstance(account, str) else "") + minute


@functools.lru_cache(maxsize=4096)
def _minute(prefix: str) -> bytes | None:
    """Minutes since the epoch of `YYYY-MM-DDTHH:MM` (UTC, as CloudTrail writes it), as the
    entry's last four bytes."""
    try:
        when = datetime.fromisoformat(prefix).replace(tzinfo=UTC)
    except ValueError:
        return None
    minute = int((when - _EPOCH).total_seconds()) // 60
    return minute.to_bytes(4, "little") if 0 <= minute < 1 << 32 else None
