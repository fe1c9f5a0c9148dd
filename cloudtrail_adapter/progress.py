"""A progress line for a backfill (`single_load`) run on a terminal.

An operator replaying a bucket wants to know how far along it is and when it will be done:
objects done of those to do, records, the record rate and an estimate of the time left. Off
a terminal the per-minute `source_progress` log line says the same to a log reader.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TextIO

from cloudtrail_adapter.monitor import Monitor, SourceRuntime

REFRESH = 0.5


@dataclass(frozen=True)
class Snapshot:
    done: int  # objects committed or failed
    todo: int  # objects offered so far
    final: bool  # listing finished: `todo` will not grow
    records: int

    @classmethod
    def of(cls, runtimes: list[SourceRuntime]) -> Snapshot:
        done = todo = records = 0
        final = True
        for rt in runtimes:
            if rt.tracker is not None and rt.pipeline is not None:
                done += rt.tracker.stats.committed + rt.pipeline.stats.objects_failed
                records += rt.tracker.stats.records_acked
            listing = rt.source.stats().listing if rt.source is not None else None
            if listing is not None:
                todo += listing.offered
                final = final and listing.listing_done
            else:
                final = False  # a queue (or a source not started yet) has no end to count to
        return cls(done, max(todo, done), final, records)


def render(now: Snapshot, elapsed: float) -> str:
    """`123/456 objects (27%)  1,234,567 records  45,678 rec/s  ETA 1m02s`."""
    rate = now.records / elapsed if elapsed > 0 else 0.0
    share = f" ({100 * now.done // now.todo}%)" if now.final and now.todo else ""
    plus = "" if now.final else "+"
    line = f"{now.done:,}/{now.todo:,}{plus} objects{share}  {now.records:,} records"
    line += f"  {rate:,.0f} rec/s"
    if now.final and now.done and now.todo > now.done:
        left = elapsed / now.done * (now.todo - now.done)
        line += f"  ETA {int(left // 60)}m{int(left % 60):02d}s"
    return line


async def show(monitor: Monitor, stream: TextIO) -> None:
    """Redraws one line in place until cancelled; the caller ends it with `finish`."""
    started = time.monotonic()
    while True:
        draw(monitor, stream, started)
        await asyncio.sleep(REFRESH)


def draw(monitor: Monitor, stream: TextIO, started: float) -> None:
    snapshot = Snapshot.of(list(monitor.sources.values()))
    stream.write("\r\x1b[K" + render(snapshot, time.monotonic() - started))
    stream.flush()
