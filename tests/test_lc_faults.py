"""LimaCharlie misbehaving, end to end through the real daemon: errors, back-off and
reconnect requests, dropped sockets, withheld acks, a stalled peer, webhook 5xx and 429.
Nothing is lost, memory stays bounded, and a refused handshake is retried slowly."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import cloudtrail_record, log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from tests.support.configs import s3_config, s3_document
from tests.support.corpus import PREFIX
from tests.support.process import DaemonProcess, all_workers_waiting
from tests.support.stand_in import put_objects

WORKERS = 4
LIMIT_MB = 300


def trail(objects: int, per_object: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(seed)
    when = datetime(2026, 11, 24, tzinfo=UTC)
    return {
        f"{PREFIX}faults-{n:03}.json.gz": [
            cloudtrail_record(rng, account="111122223333", region="us-east-1", when=when)
            for _ in range(per_object)
        ]
        for n in range(objects)
    }


def ids_in(objects: dict[str, list[dict[str, Any]]]) -> Counter[str]:
    return Counter(str(r["eventID"]) for recs in objects.values() for r in recs)


def long_running(endpoint: str, bucket: str, lc: LimaCharlieEmulator) -> dict[str, Any]:
    """Small buffers, so that a stall reaches every worker quickly."""
    delivery = {"batch_max_records": 100, "batch_linger": 0.02, "max_buffered_bytes": 1 << 20}
    return s3_document(
        endpoint, bucket, lc, "faults", parallel_fetch=WORKERS, poll_interval=0.5, delivery=delivery
    )


async def test_a_schedule_of_usp_faults_loses_nothing_and_memory_stays_bounded(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    objects = trail(40, 400, 801)
    await put_objects(aws_options, bucket, {k: log_file(v) for k, v in objects.items()})
    assert aws_options.endpoint_url
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(long_running(aws_options.endpoint_url, bucket, lc)))
    faults = lc.usp_faults

    faults.stall_after_messages = 3  # the peer stops reading and acking: back-pressure
    async with DaemonProcess(path, tmp_path / "state") as daemon:
        await asyncio.wait_for(faults.stall_began.wait(), 60)
        await all_workers_waiting(daemon, WORKERS, since=daemon.logs.mark())
        peak = daemon.peak_rss_mb()
        faults.release_peer()

        faults.hold_acks()  # acks withheld until every worker waits on LimaCharlie
        await all_workers_waiting(daemon, WORKERS, since=daemon.logs.mark())
        accepted_while_held = len(lc.store.events)
        faults.release_acks()

        faults.drop_after_messages = 3  # the socket dies, unacked, without a close frame
        await daemon.logs.wait_for("usp_connecting", 2)
        faults.reconnect_after_messages = 3  # `re`
        await daemon.logs.wait_for("usp_connecting", 3)
        faults.error_after_messages = 3  # `error` mid-stream, then the server closes
        await daemon.logs.wait_for("usp_server_error")
        await daemon.logs.wait_for("usp_connecting", 4)
        faults.backoff_after_messages = (3, 0.5)  # `bo`
        await daemon.logs.wait_for("usp_backoff")

        await lc.store.wait_for(sum(ids_in(objects).values()), timeout=120)
        assert await daemon.stop() == 0, daemon.tail()

    accepted = lc.store.event_ids()
    assert set(accepted) == set(ids_in(objects)), "records were lost"
    assert accepted_while_held < sum(ids_in(objects).values()), "the hold never bit"
    print(f"\npeak RSS with a stalled peer: {peak:.0f} MB")
    assert peak < LIMIT_MB, f"peak RSS {peak:.0f} MB"


async def test_webhook_5xx_and_429_with_retry_after_lose_nothing(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    objects = trail(6, 200, 802)
    await put_objects(aws_options, bucket, {k: log_file(v) for k, v in objects.items()})
    cfg = s3_config(aws_options, bucket, lc, webhook=True)
    lc.webhook_faults.statuses = [500, 429, 503, 502, 429, 200, 500]
    lc.webhook_faults.retry_after = "1"

    assert await serve([cfg], state_dir) == 0
    assert lc.store.event_ids() == ids_in(objects)
    assert not lc.webhook_faults.statuses, "every injected fault was served"


async def test_a_refused_handshake_is_retried_with_backoff_not_in_a_loop(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    await put_objects(aws_options, bucket, {f"{PREFIX}one.json.gz": log_file([])})
    assert aws_options.endpoint_url
    path = tmp_path / "refused.yaml"
    path.write_text(yaml.safe_dump(long_running(aws_options.endpoint_url, bucket, lc)))
    lc.usp_faults.handshake_error = "invalid installation key"

    async with DaemonProcess(path, tmp_path / "state") as daemon:
        failed = await daemon.logs.wait_for("source_failed")
        scheduled = await daemon.logs.wait_for("source_restart_scheduled")
        connects = len(daemon.logs.named("usp_connecting"))
        # Stopped while its source was failing: exit 1, so systemd shows the unit failed.
        assert await daemon.stop() == 1, daemon.tail()

    assert "invalid installation key" in failed["error"]
    assert scheduled["retry_in"] >= 4, "the first restart waits about 5 s"
    assert connects == 1, "a refused handshake is not retried by the sink in a loop"
