"""What a replica does with the streams a change of `shard` moves.

Replicas share nothing but the bucket: a stream that moves arrives without its cursor, and
the replica it left still holds one. The state remembers, per bucket, the shard it was
listed as, the one before, and since when (`Checkpoints.shard_mark`); from that:

- a stream that **arrives** (no cursor here, and not this replica's under the shard
  before) is listed from `lookback` before the change: its old owner shipped what came
  before. A replica whose state was empty when it started sharded took every stream at
  that start (its first start ships the live trail, not the bucket's history: that is a
  backfill's, README "Backfill advice");
- a stream that **leaves** (a cursor here, another replica's now) is listed here until
  nothing in its day folders before that point is left unshipped, then forgotten
  (cursor and checkpoints), so that it can come back later as an arrival.

What is shipped twice is the arrivals' day folders from `lookback` before the change to
the change, and what a leaving stream ships while it finishes: README, "Scaling".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import structlog

from cloudtrail_adapter.config.shard import Shard
from cloudtrail_adapter.sources.trail_layout import Stream, stream_of
from cloudtrail_adapter.state import Checkpoints

__all__ = ["Handover", "handover"]

log = structlog.get_logger("cloudtrail_adapter.sources")

WHOLE = Shard(0, 1)
NOTHING = ""  # a `before` under which no stream was this replica's (an empty state)


@dataclass(frozen=True)
class Handover:
    """This replica's shard (None: unsharded), the one it was before (None: it held
    nothing, its state was empty when it started sharded; unsharded counts as `0/1`), since
    when, and the streams still to finish before they go."""

    shard: Shard | None
    before: Shard | None
    since: datetime
    leaving: dict[str, Stream]  # prefix -> stream, with its cursor still here

    def arrived(self, stream: Stream) -> bool:
        """Whether a stream without a cursor here came from another replica."""
        return self.before is None or not self.before.holds(stream.account, stream.region)

    def start(self, lookback: float) -> date:
        """The first day folder listed of an arriving stream."""
        return (self.since - timedelta(seconds=lookback)).date()

    def finished(self, prefix: str, cursor: date, lookback: float) -> bool:
        """Whether a leaving stream has nothing unshipped before `start`."""
        return prefix in self.leaving and cursor >= self.start(lookback)


def handover(
    checkpoints: Checkpoints,
    shard: Shard | None,
    now: datetime,
    lookback: float,
    selected: Callable[[Stream], bool],
) -> Handover:
    """Reads (and on a change, writes) the bucket's shard mark; forgets at once the leaving
    streams with nothing left to ship. `selected`: whether the document's accounts and
    regions (not its shard) take a stream."""
    spec = str(shard or WHOLE)
    cursors = checkpoints.cursors()
    mark = checkpoints.shard_mark()
    if mark is None:
        sharded = shard is not None and shard.count > 1
        before = NOTHING if sharded and not cursors else str(WHOLE)
        mark = (spec, before, now.timestamp())
        checkpoints.mark_shard(*mark)
    elif mark[0] != spec:
        mark = (spec, mark[0], now.timestamp())
        checkpoints.mark_shard(*mark)
    _, before, since = mark
    found = Handover(
        shard,
        Shard.parse(before) if before != NOTHING else None,
        datetime.fromtimestamp(since, UTC),
        {},
    )
    if since == now.timestamp() and before != spec and shard is not None:
        log.info(
            "shard_taken",
            shard=spec,
            before=before or None,
            arrivals_from=found.start(lookback).isoformat(),
            note="streams new to this replica are listed from this day; older files are "
            "their previous owner's, or a backfill's",
        )
    for prefix, day in cursors.items():
        stream = stream_of(prefix)
        if stream is None or not selected(stream):
            continue
        if shard is None or shard.holds(stream.account, stream.region):
            continue
        if date.fromisoformat(day) >= found.start(lookback):
            checkpoints.forget_stream(prefix)
        else:
            found.leaving[prefix] = stream
    return found
