"""Streamed objects in a test's sizes: small ranges, a low threshold, and a daemon stopped
early in an object's reading."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from cloudtrail_adapter.config import DeliveryOptions, SourceConfig
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator

RANGE = 64 << 10  # small ranges (for pipeline.STREAM_RANGE): a test-sized object takes many reads
STREAMING = DeliveryOptions(batch_max_records=50, batch_linger=0.05, stream_threshold=1024)


@contextlib.asynccontextmanager
async def stalled_mid_object(
    lc: LimaCharlieEmulator, cfg: SourceConfig, state_dir: Path
) -> AsyncIterator[asyncio.Task[int]]:
    """Runs the daemon while LimaCharlie holds its acks with a window of one, so a streamed
    object stops early in its reading (every queue is bounded); acks are released on exit."""
    lc.usp_faults.window = 1
    lc.usp_faults.hold_acks()
    run = asyncio.create_task(serve([cfg], state_dir))
    try:
        await lc.usp.wait_for_messages(1)
        yield run
    finally:
        lc.usp_faults.release_acks()
