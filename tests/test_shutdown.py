"""SIGTERM: intake stops, in-flight work gets the grace period, what cannot finish is handed
back, exit 0; a second signal stops at once. Nothing is lost either way."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import yaml

from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from tests.support import messages
from tests.support.configs import s3_config, s3_document, sqs_config
from tests.support.corpus import PREFIX, records
from tests.support.process import DaemonProcess, stop_daemon
from tests.support.stand_in import depth, put_objects, send
from tests.support.watch import watch_logs

BIG = records(20_000, 600)
SMALL = {f"{PREFIX}small-{i}.json.gz": records(50, 610 + i) for i in range(4)}


def expected() -> Counter[str]:
    return Counter(str(r["eventID"]) for r in BIG + [r for v in SMALL.values() for r in v])


async def seed(aws_options: AwsOptions, bucket: str) -> None:
    objects = {f"{PREFIX}big.json.gz": log_file(BIG)}
    objects |= {k: log_file(v) for k, v in SMALL.items()}
    await put_objects(aws_options, bucket, objects)


async def test_sigterm_mid_file_finishes_in_flight_work_within_the_grace(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    await seed(aws_options, bucket)
    cfg = s3_config(aws_options, bucket, lc, single_load=False, poll_interval=0.05)
    lc.usp_faults.hold_acks()

    with watch_logs() as logs:
        daemon = asyncio.create_task(serve([cfg], state_dir, shutdown_grace=60))
        await lc.usp.wait_for_messages(1, timeout=30)
        stop_daemon()
        await logs.wait_for("source_stopping", timeout=10)
        lc.usp_faults.release_acks()
        assert await asyncio.wait_for(daemon, 60) == 0
    assert not logs.named("shutdown_grace_expired")
    first = lc.store.event_ids()
    assert first and max(first.values()) == 1

    cfg = s3_config(aws_options, bucket, lc)
    assert await serve([cfg], state_dir) == 0, "the restart must complete"
    assert lc.store.event_ids() == expected(), "lost or re-sent after a graceful stop"


async def test_grace_running_out_hands_sqs_messages_back_at_once(
    aws_options: AwsOptions, bucket: str, queue: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    await seed(aws_options, bucket)
    keys = [f"{PREFIX}big.json.gz", *SMALL]
    await send(aws_options, queue, [messages.s3_event(bucket, [k]) for k in keys])
    cfg = sqs_config(aws_options, queue, lc, single_load=False, wait_time_seconds=1)
    lc.usp_faults.hold_acks()

    with watch_logs() as logs:
        daemon = asyncio.create_task(serve([cfg], state_dir, shutdown_grace=0.5))
        await logs.wait_for("sqs_message_received", count=len(keys), timeout=30)
        stop_daemon()
        assert await asyncio.wait_for(daemon, 30) == 0
    assert logs.named("shutdown_grace_expired")
    assert logs.named("sqs_handed_back")[0]["messages"] == len(keys)
    # visibility_timeout is 300 s: only a hand-back makes them visible again right away.
    assert await depth(aws_options, queue) == (len(keys), 0)

    lc.usp_faults.release_acks()
    assert await serve([sqs_config(aws_options, queue, lc)], state_dir) == 0
    assert set(lc.store.event_ids()) == set(expected())
    assert await depth(aws_options, queue) == (0, 0)


async def test_a_second_signal_stops_at_once_and_loses_nothing(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    await seed(aws_options, bucket)
    cfg = s3_config(aws_options, bucket, lc, single_load=False, poll_interval=0.05)
    lc.usp_faults.hold_acks()

    with watch_logs() as logs:
        daemon = asyncio.create_task(serve([cfg], state_dir, shutdown_grace=600))
        await lc.usp.wait_for_messages(1, timeout=30)
        stop_daemon()
        await logs.wait_for("source_stopping", timeout=10)
        stop_daemon()
        assert await asyncio.wait_for(daemon, 10) == 0, "the second signal did not cut it short"
    assert logs.named("shutdown_forced")
    assert len(lc.store.events) == 0, "nothing was acknowledged"

    lc.usp_faults.release_acks()
    assert await serve([s3_config(aws_options, bucket, lc)], state_dir) == 0
    assert lc.store.event_ids() == expected()


async def test_sigterm_as_soon_as_the_daemon_says_it_started_is_a_graceful_stop(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    """systemd may stop a unit the moment it starts: the handlers are in place before
    `daemon_started` (and the worker pool's start-up), so the stop is graceful, exit 0."""
    await seed(aws_options, bucket)
    assert aws_options.endpoint_url
    path = tmp_path / "early.yaml"
    path.write_text(yaml.safe_dump(s3_document(aws_options.endpoint_url, bucket, lc, "early")))
    async with DaemonProcess(path, tmp_path / "state") as daemon:
        assert await daemon.stop() == 0, daemon.tail()
        assert daemon.logs.named("daemon_stopped"), daemon.tail()
