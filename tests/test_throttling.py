"""A throttled bucket slows us down instead of failing us: each 503 SlowDown halves the GETs
(and ListObjectsV2 calls) the bucket gets at once, each success adds one back; the logs say
every change and the metrics show the current concurrency and the throttles counted."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from pathlib import Path

from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.monitor import Monitor
from tests.support.configs import s3_config
from tests.support.corpus import PREFIX, ids, records
from tests.support.fault_proxy import FaultPlan, FaultProxy
from tests.support.scrape import get, samples
from tests.support.stand_in import put_objects
from tests.support.watch import eventually, watch_logs

CEILING = 4
THROTTLED = 8


async def test_a_throttled_bucket_lowers_our_concurrency_and_it_recovers(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    """The first 8 objects' first GETs are answered 503 SlowDown, and the first listings of
    the bucket too; GETs answer slowly, so a lowered limit stays lowered long enough to
    scrape, and the other objects' GETs bring it back."""
    objects = {f"{PREFIX}t-{i:02d}.json.gz": records(20, 700 + i) for i in range(24)}
    await put_objects(aws_options, bucket, {k: log_file(v) for k, v in objects.items()})
    plan = FaultPlan(
        slow_down_every=1,
        only_first=THROTTLED,
        tries=1,
        delays={"GetObject": 0.4},
        throttle_lists={bucket: 3},
    )
    with FaultProxy(str(aws_options.endpoint_url), plan) as proxy, watch_logs() as logs:
        through = dataclasses.replace(aws_options, endpoint_url=proxy.url)
        cfg = s3_config(
            through, bucket, lc, single_load=False, poll_interval=0.5, parallel_fetch=CEILING
        )
        label = f"{{source={cfg.name}}}"
        daemon = asyncio.create_task(
            serve([cfg], state_dir, monitor=Monitor(), http_address=("127.0.0.1", 0))
        )
        try:
            listening = await logs.wait_for("http_listening")
            metrics = f"http://{listening['address']}/metrics"
            lowered = await logs.wait_for(
                "s3_concurrency_changed", when=lambda e: e["requests"] == "fetch"
            )
            low = samples((await get(metrics))[1])
            await lc.store.wait_for(sum(len(v) for v in objects.values()))
            high: dict[str, float] = {}

            async def recovered() -> bool:
                high.update(samples((await get(metrics))[1]))
                return high[f"cloudtrail_adapter_s3_fetch_concurrency{label}"] == CEILING

            await eventually(recovered)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)
            assert await asyncio.wait_for(daemon, 30) == 0
    assert (lowered["why"], lowered["old"], lowered["new"]) == ("throttled", CEILING, CEILING // 2)
    assert low[f"cloudtrail_adapter_s3_fetch_concurrency{label}"] < CEILING
    assert low[f"cloudtrail_adapter_s3_throttled_total{label}"] >= 1
    assert high[f"cloudtrail_adapter_s3_throttled_total{label}"] >= THROTTLED
    fetch = [e for e in logs.named("s3_concurrency_changed") if e["requests"] == "fetch"]
    assert (fetch[-1]["why"], fetch[-1]["new"]) == ("recovering", CEILING)
    assert min(e["new"] for e in fetch) < CEILING
    listing = [e for e in logs.named("s3_concurrency_changed") if e["requests"] == "list"]
    assert any(e["why"] == "throttled" for e in listing), "throttled listings did not slow down"
    assert proxy.kinds()["slow_down"] == THROTTLED
    assert lc.store.event_ids() == ids([r for v in objects.values() for r in v])
