"""`shard: "i/N"`: which of N replicas lists which of a bucket's streams.

A stream (one account and region: its logs, Insights and digests together, because the
digests vouch for both kinds) belongs to the replica that scores highest for it under a
stable hash (rendezvous hashing). Every replica computes the same owner from nothing but
the account, the region and N, so replicas need not talk; and going from N to N + 1
replicas moves only the streams the new replica now scores highest for (about 1 in N + 1),
all of them to it, none between the old ones.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from cloudtrail_adapter.config.keys import Kind
from cloudtrail_adapter.config.reader import Section

__all__ = ["MAX_SHARDS", "Shard", "ShardKind"]

MAX_SHARDS = 1024
#: `2/3`, or a StatefulSet pod's name ending in its ordinal (`${POD_NAME}/3`:
#: `cloudtrail-adapter-s3-2/3`).
_SPEC = re.compile(r"(?:.+-)?(\d+)/(\d+)")


@dataclass(frozen=True)
class Shard:
    """Replica `index` of `count` (`shard: "i/N"`)."""

    index: int
    count: int
    _owners: dict[tuple[str, str], int] = field(
        default_factory=dict, compare=False, repr=False, hash=False
    )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @classmethod
    def parse(cls, text: str) -> Shard | None:
        """`i/N` (as `str` writes it, or with a pod name before the ordinal); None if not."""
        found = _SPEC.fullmatch(text.strip())
        if found is None:
            return None
        index, count = int(found[1]), int(found[2])
        if not 0 <= index < count <= MAX_SHARDS:
            return None
        return cls(index, count)

    def holds(self, account: str, region: str) -> bool:
        return self.owner(account, region) == self.index

    def owner(self, account: str, region: str) -> int:
        """The replica that scores highest for the stream (remembered: the integrity
        ledger asks once per row)."""
        found = self._owners.get((account, region))
        if found is None:
            found = max(range(self.count), key=lambda i: _score(account, region, i))
            self._owners[(account, region)] = found
        return found


def _score(account: str, region: str, replica: int) -> int:
    digest = hashlib.blake2b(f"{account}/{region}/{replica}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True)
class ShardKind(Kind[Shard]):
    def read(self, sec: Section, name: str, *, required: bool) -> Shard | None:
        text = sec.string(name)
        if text is None:
            return None
        shard = Shard.parse(text)
        if shard is None:
            sec.error(
                name,
                sec.line_of(name),
                f'expected "i/N": this replica\'s index i from 0 to N-1 of N replicas '
                f"(N at most {MAX_SHARDS}; i may be a StatefulSet pod's name, "
                f"`${{POD_NAME}}/3`), got {text!r}",
            )
        return shard

    def accepts(self) -> str:
        return '`"i/N"` (i from 0 to N-1, or a pod name ending in `-i`)'
