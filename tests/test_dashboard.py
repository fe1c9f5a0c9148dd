"""deploy/grafana/cloudtrail-adapter.json against a real Prometheus (Debian's package) that
scrapes a running daemon: every metric a panel queries must be one Prometheus holds samples
of, so a panel on a renamed metric, or on one the daemon never exports, fails here."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import os
import random
import re
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions, IntegrityOptions, RecordFilter
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import cloudtrail_record, log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.monitor import Monitor
from tests.support.configs import s3_config, sqs_config
from tests.support.prometheus import Api, prometheus
from tests.support.stand_in import STAND_IN, put_objects
from tests.support.trail import build_trail
from tests.support.watch import LogWatch, watch_logs

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "cloudtrail-adapter.json"
METRIC = re.compile(r"\b((?:cloudtrail_adapter|process)_[a-z_]+)\b")
HISTOGRAM_PARTS = ("_bucket", "_count", "_sum")


def queried(dashboard: dict[str, Any]) -> dict[str, set[str]]:
    """Panel title -> the metric names its queries use."""
    return {
        panel["title"]: {m for t in panel["targets"] for m in METRIC.findall(t["expr"])}
        for panel in dashboard["panels"]
    }


def exported(metric: str, names: set[str]) -> bool:
    if metric in names:
        return True
    return any(metric.endswith(p) and metric.removesuffix(p) in names for p in HISTOGRAM_PARTS)


def records(n: int, seed: int, region: str = "us-east-1") -> list[dict[str, Any]]:
    rng = random.Random(seed)
    when = datetime(2026, 11, 24, 12, tzinfo=UTC)
    return [
        cloudtrail_record(rng, account="111122223333", region=region, when=when) for _ in range(n)
    ]


def damaged(good: list[dict[str, Any]]) -> bytes:
    """A log file whose last record is not valid UTF-8: salvaged, that record set aside."""
    parts = [orjson.dumps(r) for r in good]
    parts.append(b'{"eventVersion":"1.08","eventName":"\xffBad"}')
    return gzip.compress(b'{"Records":[' + b",".join(parts) + b"]}")


async def new_bucket(aws_options: AwsOptions, name: str) -> str:
    async with aws.client("s3", aws_options) as s3:
        await s3.create_bucket(Bucket=name)
    return name


async def send(aws_options: AwsOptions, queue_url: str, body: str) -> None:
    async with aws.client("sqs", aws_options) as sqs:
        await sqs.send_message(QueueUrl=queue_url, MessageBody=body)


async def everything_happened(logs: LogWatch) -> None:
    """Until the daemon did what each panel shows: a damaged object failed and quarantined,
    a record set aside, a poison message, and the verified trail's files judged."""
    for event in ("object_quarantined", "records_unreadable", "sqs_message_poison"):
        await logs.wait_for(event, timeout=30)
    await logs.wait_for("integrity_settled", timeout=30)


async def test_every_metric_the_dashboard_queries_is_scraped_by_a_real_prometheus(
    aws_options: AwsOptions,
    bucket: str,
    queue: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    tmp_path: Path,
    keys_served: None,
) -> None:
    # An S3 source that sees what the panels show: records, a damaged object (failed and
    # quarantined), a damaged record (set aside), duplicates, a record filtered out; an SQS
    # source with a poison message; a verified trail.
    good = records(20, 1)
    await put_objects(
        aws_options,
        bucket,
        {
            "AWSLogs/good.json.gz": log_file(good),
            "AWSLogs/again.json.gz": log_file(good[:5]),  # duplicates
            "AWSLogs/elsewhere.json.gz": log_file(records(3, 2, region="eu-west-1")),
            "AWSLogs/salvaged.json.gz": damaged(records(3, 3)),
            "AWSLogs/bad.json.gz": b"not json",
        },
    )
    await send(aws_options, queue, "this is not a notification")
    trail = build_trail(await new_bucket(aws_options, f"{bucket}-trail"), hours=2)
    STAND_IN.public_keys = trail.public_keys()
    await trail.upload(aws_options)
    s3 = s3_config(
        aws_options,
        bucket,
        lc,
        single_load=False,
        poll_interval=0.2,
        quarantine_after=1,
        layout="flat",
    )
    s3 = dataclasses.replace(s3, record_filter=RecordFilter(include_regions=("us-east-1",)))
    sqs = dataclasses.replace(sqs_config(aws_options, queue, lc, single_load=False), index=2)
    verified = s3_config(
        aws_options,
        trail.bucket,
        lc,
        single_load=False,
        poll_interval=0.2,
        integrity=IntegrityOptions(verify=True),
    )
    verified = dataclasses.replace(verified, index=3)
    configs = [s3, sqs, verified]

    with watch_logs() as logs:
        task = asyncio.create_task(
            serve(configs, state_dir, monitor=Monitor(), http_address=("127.0.0.1", 0))
        )
        try:
            await logs.wait_for("http_listening")
            address = str(logs.named("http_listening")[0]["address"])
            await lc.store.wait_for(20 + 3 + len(trail.event_ids()), timeout=30)
            await everything_happened(logs)
            done = time.time()
            with prometheus(tmp_path, [address]) as server:
                async with aiohttp.ClientSession() as http, asyncio.timeout(60):
                    api = Api(http, server)
                    try:
                        await api.scraped_after(address, done)
                    except TimeoutError:
                        raise AssertionError(f"never scraped {address}:\n{server.tail()}") from None
                    names = await api.names()
        finally:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(task, 30)

    dashboard = json.loads(DASHBOARD.read_text())
    missing = {
        title: sorted(m for m in metrics if not exported(m, names))
        for title, metrics in queried(dashboard).items()
    }
    assert {title: m for title, m in missing.items() if m} == {}
    assert all(queried(dashboard).values())  # every panel queries something
    # the check can fail: a name the daemon does not export is missing
    assert not exported("cloudtrail_adapter_records_shipped_total", names)


def test_the_dashboard_has_the_job_and_source_variables() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"job", "source"} <= variables
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert 'job=~"$job"' in target["expr"], (panel["title"], target["expr"])
