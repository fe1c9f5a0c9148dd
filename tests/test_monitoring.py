"""/metrics adds up to what LimaCharlie received, with every counter there at 0 before its
first event and the durations alerts hold against measured by the daemon; /readyz follows
LimaCharlie's reachability; /healthz answers; `healthcheck: PORT` is LimaCharlie's way to
ask for them."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pytest
from prometheus_client import generate_latest

from cloudtrail_adapter.config import (
    AwsOptions,
    ConfigError,
    IntegrityOptions,
    SourceConfig,
    parse_documents,
)
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.decoding.values import DecodeReason
from cloudtrail_adapter.emulator.corpus import log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.integrity.verdicts import DIGEST_VERDICTS, FILE_VERDICTS
from cloudtrail_adapter.monitor import SETTLED_AFTER, Clock, Monitor, SourceRuntime
from tests.support import messages
from tests.support.configs import S3_SEED, s3_config, sqs_config
from tests.support.corpus import PREFIX, records
from tests.support.scrape import get, samples, until_status
from tests.support.stand_in import put_objects, send
from tests.support.watch import LogWatch, passes_done, watch_logs

OBJECTS = {f"{PREFIX}m-{i}.json.gz": records(50, 950 + i) for i in range(5)}


@asynccontextmanager
async def running(
    cfg: SourceConfig, state_dir: Path, monitor: Monitor, logs: LogWatch, exit_code: int = 0
) -> AsyncIterator[str]:
    """The daemon in-process with its HTTP endpoints on a free port; yields their base URL
    and stops the daemon with SIGTERM, as systemd would, expecting `exit_code`."""
    daemon = asyncio.create_task(
        serve([cfg], state_dir, monitor=monitor, http_address=("127.0.0.1", 0))
    )
    await logs.wait_for("http_listening")
    [listening] = logs.named("http_listening")
    try:
        yield f"http://{listening['address']}"
    finally:
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(daemon, 30) == exit_code


async def seeded(aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator) -> SourceConfig:
    """OBJECTS in the bucket, and a long-running S3 source over them."""
    await put_objects(aws_options, bucket, {k: log_file(v) for k, v in OBJECTS.items()})
    return s3_config(aws_options, bucket, lc, single_load=False, poll_interval=0.2)


async def test_metrics_add_up_to_what_limacharlie_received(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    cfg = await seeded(aws_options, bucket, lc)
    label = f"{{source={cfg.name}}}"
    total = sum(len(v) for v in OBJECTS.values())

    with watch_logs() as logs:
        async with running(cfg, state_dir, Monitor(), logs) as base:
            await lc.store.wait_for(total)
            await logs.wait_for("item_committed", len(OBJECTS), timeout=20)
            scraped = samples((await get(f"{base}/metrics"))[1])
            assert await get(f"{base}/healthz") == (200, "ok\n")
            assert await get(f"{base}/readyz") == (200, "ready\n")

    def metric(name: str) -> float:
        return scraped[f"cloudtrail_adapter_{name}{label}"]

    assert metric("records_acknowledged_total") == len(lc.store.events) == total
    assert metric("records_sent_total") == metric("records_decoded_total") == total
    assert metric("objects_committed_total") == metric("objects_decoded_total") == len(OBJECTS)
    assert metric("bytes_read_total") == sum(len(log_file(v)) for v in OBJECTS.values())
    assert metric("source_up") == 1 and metric("limacharlie_reachable") == 1
    assert metric("items_in_flight") == 0 and metric("oldest_unacknowledged_seconds") == 0
    assert metric("ack_latency_seconds_count") == metric("batches_sent_total") > 0
    assert metric("usp_window") == lc.usp_faults.window and metric("usp_unacknowledged") == 0
    assert metric("usp_reconnects_total") == 0
    passes = logs.named("source_pass_done")
    assert metric("list_calls_total") >= sum(p["list_calls"] for p in passes) >= 1
    assert metric("objects_off_layout_total") == 0
    window = (
        f"cloudtrail_adapter_objects_passed_over_total{{reason=outside_window,source={cfg.name}}}"
    )
    assert scraped[window] == 0


async def test_sqs_metrics_count_the_messages(
    aws_options: AwsOptions, bucket: str, queue: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    await put_objects(aws_options, bucket, {k: log_file(v) for k, v in OBJECTS.items()})
    await send(aws_options, queue, [messages.s3_event(bucket, [key]) for key in OBJECTS])
    cfg = sqs_config(aws_options, queue, lc, single_load=False, wait_time_seconds=1)
    label = f"{{source={cfg.name}}}"

    with watch_logs() as logs:
        async with running(cfg, state_dir, Monitor(), logs) as base:
            await logs.wait_for("sqs_message_deleted", len(OBJECTS), timeout=20)
            scraped = samples((await get(f"{base}/metrics"))[1])

    assert scraped[f"cloudtrail_adapter_sqs_messages_received_total{label}"] == len(OBJECTS)
    assert scraped[f"cloudtrail_adapter_sqs_messages_deleted_total{label}"] == len(OBJECTS)
    assert scraped[f"cloudtrail_adapter_sqs_messages_poison_total{label}"] == 0


async def test_readyz_turns_unready_while_limacharlie_is_down_and_ready_when_back(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    cfg = await seeded(aws_options, bucket, lc)

    with watch_logs() as logs:
        async with running(cfg, state_dir, Monitor(unready_after=0.3), logs) as base:
            await until_status(f"{base}/readyz", 200)
            await lc.stop()
            reason = await until_status(f"{base}/readyz", 503)
            assert "LimaCharlie unreachable" in reason and cfg.name in reason
            assert (await get(f"{base}/healthz"))[0] == 200, "alive, only not ready"
            await lc.start()
            await until_status(f"{base}/readyz", 200)


async def test_readyz_is_unready_while_a_source_is_failing(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    lc.usp_faults.handshake_error = "not yet"  # refused: the source fails and waits
    cfg = s3_config(aws_options, bucket, lc, single_load=False)
    with watch_logs() as logs:
        async with running(cfg, state_dir, Monitor(), logs, exit_code=1) as base:
            await logs.wait_for("source_restart_scheduled", timeout=20)
            status, text = await get(f"{base}/readyz")
    assert status == 503 and "not running" in text


def test_healthcheck_is_limacharlies_top_level_port_key() -> None:
    [cfg] = parse_documents("healthcheck: 9108\n" + S3_SEED, {}, "t")
    assert cfg.healthcheck == 9108
    with pytest.raises(ConfigError) as bad:
        parse_documents("healthcheck: http\n" + S3_SEED, {}, "t")
    assert [p.key for p in bad.value.errors] == ["healthcheck"]
    two = f"healthcheck: 9108\n{S3_SEED}---\nhealthcheck: 9109\n{S3_SEED}"
    with pytest.raises(ConfigError) as conflict:
        parse_documents(two, {}, "t")
    assert "different values (1: 9108, 2: 9109)" in str(conflict.value)


async def test_a_progress_line_per_interval_for_those_who_read_logs(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    cfg = await seeded(aws_options, bucket, lc)
    with watch_logs() as logs:
        async with running(cfg, state_dir, Monitor(summary_interval=0.2), logs):
            await logs.wait_for("item_committed", len(OBJECTS), timeout=20)
            mark = len(logs.named("source_progress"))
            await logs.wait_for("source_progress", mark + 2, timeout=20)
    lines = logs.named("source_progress")
    assert sum(line["objects_committed"] for line in lines) == len(OBJECTS)
    assert lines[-1]["records_per_second"] == 0 and lines[-1]["in_flight"] == 0
    assert {"lag_seconds", "failed", "source"} <= set(lines[-1])


# -- what an alert needs: every counter there from the start, durations the daemon measures


def scrape(monitor: Monitor) -> dict[str, float]:
    return samples(generate_latest(monitor.registry).decode())


def test_every_counter_is_there_at_zero_before_its_source_first_ran() -> None:
    """A labelled counter that first appeared at 1 would never raise its alert (increase()
    of a new series is 0): every value known ahead is exported at 0 from the start."""
    monitor = Monitor()
    monitor.add("s3[1]:trail", "s3")
    monitor.add("sqs[2]:queue", "sqs")
    scraped = scrape(monitor)

    def value(name: str, source: str, **labels: str) -> float:
        inner = ",".join(f"{k}={v}" for k, v in sorted((labels | {"source": source}).items()))
        return scraped[f"cloudtrail_adapter_{name}{{{inner}}}"]

    for source in ("s3[1]:trail", "sqs[2]:queue"):
        for reason in get_args(DecodeReason):
            assert value("objects_failed_total", source, reason=reason) == 0
        for name in ("records_acknowledged_total", "objects_decoded_total"):
            assert value(name, source) == 0
        for name in ("source_failing_seconds", "limacharlie_unreachable_seconds"):
            assert value(name, source) == 0
    for reason in (*get_args(DecodeReason), "too_large"):
        assert value("objects_quarantined_total", "s3[1]:trail", reason=reason) == 0
    for reason in ("digest", "outside_window"):
        assert value("objects_passed_over_total", "s3[1]:trail", reason=reason) == 0
    assert value("list_calls_total", "s3[1]:trail") == 0
    for name in ("sqs_messages_poison_total", "sqs_messages_deleted_total"):
        assert value(name, "sqs[2]:queue") == 0
    assert not any(k.startswith("cloudtrail_adapter_sqs_") and "s3[1]" in k for k in scraped)


async def test_a_verified_source_has_every_verdict_at_zero_before_the_first_one(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    cfg = s3_config(
        aws_options,
        bucket,
        lc,
        single_load=False,
        poll_interval=0.2,
        integrity=IntegrityOptions(verify=True),
    )
    with watch_logs() as logs:
        async with running(cfg, state_dir, Monitor(), logs) as base:
            await passes_done(logs, [cfg], more=1)
            scraped = samples((await get(f"{base}/metrics"))[1])
    for kind, verdicts in (("files", FILE_VERDICTS), ("digests", DIGEST_VERDICTS)):
        for verdict in verdicts:
            key = (
                f"cloudtrail_adapter_integrity_{kind}_total{{source={cfg.name},verdict={verdict}}}"
            )
            assert scraped[key] == 0


@dataclass
class FakeTime:
    """The stages' clock, turned by hand."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def runtime(rate: float = 1.0) -> tuple[SourceRuntime, FakeTime, Clock]:
    real = FakeTime()
    clock = Clock(rate, real)
    return SourceRuntime("s3[1]:trail", "s3", clock=clock), real, clock


def test_a_source_retried_with_backoff_keeps_failing_between_its_short_runs() -> None:
    rt, real, clock = runtime()
    stages: Any = None
    rt.attach(stages, stages, stages)
    real.now += 1
    rt.detach()  # failed after a second
    real.now += 5
    assert rt.failing_for(clock.now()) == 5
    rt.attach(stages, stages, stages)  # the retry runs a moment, and fails again
    real.now += 0.5
    assert rt.failing_for(clock.now()) == 5.5
    rt.detach()
    real.now += 10
    assert rt.failing_for(clock.now()) == 15.5
    rt.attach(stages, stages, stages)  # this one settles: the source is back
    real.now += SETTLED_AFTER
    assert rt.failing_for(clock.now()) == 0
    rt.detach()  # and a failure after it starts a new count
    real.now += 3
    assert rt.failing_for(clock.now()) == 3


def test_durations_run_at_the_clocks_rate() -> None:
    """A test runs the daemon's clock fast; the threshold of a retry settling does not."""
    rt, real, clock = runtime(rate=120)
    assert rt.last_record_age(clock.now()) == 0
    real.now += 2
    assert rt.last_record_age(clock.now()) == 240
    rt.observe_latency(0.1)
    real.now += 1
    assert rt.last_record_age(clock.now()) == 120
    assert clock.seconds(30) == 3600
