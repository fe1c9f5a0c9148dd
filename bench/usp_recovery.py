"""How long the USP sink takes to recover after a dropped connection.

After a reconnect our sink sends one batch, then as many as the window the cloud grants in
its `fl` (LimaCharlie's reference client instead re-sends everything unacknowledged at
once, whatever the window). This measures, against the emulator on loopback with a
simulated round trip (the emulator's ack delay), the seconds from the drop until every
batch that was queued is acknowledged, when the cloud grants a window at once and when it
grants none (the window stays 1). The cost of a drop is the difference between a delivery
with one and the same delivery without; it includes the reconnect's backoff (a random
0-1 s on the first retry, so the cloud is not met by a stampede).
`python -m bench.usp_recovery` prints the table.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson
from isal import igzip

from cloudtrail_adapter.config import ClientOptions, Identity
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.model import Batch
from cloudtrail_adapter.secret import Secret
from cloudtrail_adapter.sinks.usp import UspSink

OID = "6c3f1d2a-9d55-4e1e-8f0a-3b2c1d0e9f8a"
KEY = "0f4e7a52-1b2c-4d3e-9f8a-7b6c5d4e3f2a"


@dataclass(frozen=True)
class RecoveryRow:
    window: str
    batches: int
    round_trip_ms: float
    without_drop_s: float  # delivering every batch, no fault
    with_drop_s: float  # the same with the connection dropped after the first window
    resent: int  # messages the cloud received twice


def _batches(n: int) -> list[Batch]:
    out = []
    for i in range(n):
        lines = [orjson.dumps({"eventID": f"r{i}-{j}"}) for j in range(50)]
        payload = igzip.compress(b"\n".join(lines))
        out.append(Batch(payload=payload, records=50, raw_bytes=sum(map(len, lines))))
    return out


async def delivery(
    batches: int, round_trip: float, window: int | None, drop: bool
) -> tuple[float, int]:
    """Seconds from the first send to the last ack, and the messages received twice."""
    async with LimaCharlieEmulator() as lc:
        lc.usp_faults.window = window
        lc.usp_faults.ack_delay = round_trip
        if drop:
            lc.usp_faults.drop_after_messages = min(batches, window or 1)
        acked: list[Batch] = []
        done = asyncio.Event()

        def on_ack(batch: Batch) -> None:
            acked.append(batch)
            if len(acked) == batches:
                done.set()

        options = ClientOptions(
            identity=Identity(OID, Secret(KEY)), hostname="bench", dest_url=lc.usp_url
        )
        sink = UspSink(options, on_ack)
        runner = asyncio.create_task(sink.run())
        started = time.perf_counter()
        for batch in _batches(batches):
            await sink.send(batch)
        await asyncio.wait_for(done.wait(), 300)
        took = time.perf_counter() - started
        await sink.close()
        await runner
        return took, lc.usp.duplicates_received


async def recovery(batches: int, round_trip: float, window: int | None) -> RecoveryRow:
    clean, _ = await delivery(batches, round_trip, window, drop=False)
    dropped, resent = await delivery(batches, round_trip, window, drop=True)
    return RecoveryRow(
        f"{window} (fl at once)" if window else "1 (no fl)",
        batches,
        round_trip * 1000,
        round(clean, 3),
        round(dropped, 3),
        resent,
    )


async def recovery_rows() -> list[RecoveryRow]:
    return [await recovery(64, 0.05, w) for w in (16, None)]


def render_recovery(rows: list[RecoveryRow]) -> str:
    head = "| window after reconnect | batches | round trip | s, no drop | s, one drop | re-sent |"
    lines = [head, "|---|---|---|---|---|---|"]
    lines += [
        f"| {r.window} | {r.batches} | {r.round_trip_ms:g} ms | {r.without_drop_s} | "
        f"{r.with_drop_s} | {r.resent} |"
        for r in rows
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_recovery(asyncio.run(recovery_rows())))
