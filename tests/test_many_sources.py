"""Many sources, one process: twenty S3 sources, each with its own sensor, share the worker
processes; the one whose credentials AWS refuses is retried and reported (logs, metrics,
/readyz) and never stops the other nineteen.

moto checks credentials once its auth is switched on (test_access_denied.py), so the
refusal is a real 403 for an unknown access key."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions, SourceConfig
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.monitor import Monitor
from cloudtrail_adapter.secret import Secret
from tests.support.configs import OID, s3_config, usp_client_options
from tests.support.corpus import PREFIX, records
from tests.support.process import stop_daemon
from tests.support.scrape import get, samples, until_status
from tests.support.stand_in import put_objects, set_auth
from tests.support.watch import LogWatch, watch_logs

SOURCES = 20
BROKEN = 7  # the index (from 0) of the source with wrong credentials
FULL_ACCESS = orjson.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
).decode()


@pytest.fixture
async def with_auth(aws_options: AwsOptions) -> AsyncIterator[AwsOptions]:
    """The keys of an IAM user allowed everything, with moto's credential checks on."""
    async with aws.client("iam", aws_options) as iam:
        name = f"shipper-{os.getpid()}-{id(aws_options)}"
        await iam.create_user(UserName=name)
        await iam.put_user_policy(UserName=name, PolicyName="all", PolicyDocument=FULL_ACCESS)
        key = (await iam.create_access_key(UserName=name))["AccessKey"]
    assert aws_options.endpoint_url
    await set_auth(aws_options.endpoint_url, "0")
    try:
        yield dataclasses.replace(
            aws_options, access_key=key["AccessKeyId"], secret_key=Secret(key["SecretAccessKey"])
        )
    finally:
        await set_auth(aws_options.endpoint_url, "inf")


async def buckets_of(options: AwsOptions, count: int) -> list[str]:
    names = [f"org-{os.urandom(5).hex()}-{i}" for i in range(count)]
    async with aws.client("s3", options) as s3:
        for name in names:
            await s3.create_bucket(Bucket=name)
    return names


def source(i: int, options: AwsOptions, bucket: str, lc: LimaCharlieEmulator) -> SourceConfig:
    """Document i + 1: its own sensor (hostname and seed key), long-running."""
    cfg = s3_config(options, bucket, lc, single_load=False, poll_interval=0.3)
    client = dataclasses.replace(usp_client_options(lc, f"host-{i}"), sensor_seed_key=f"seed-{i}")
    return dataclasses.replace(cfg, index=i + 1, client_options=client)


@asynccontextmanager
async def running(
    configs: list[SourceConfig], state_dir: Path, logs: LogWatch
) -> AsyncIterator[str]:
    daemon = asyncio.create_task(
        serve(configs, state_dir, monitor=Monitor(), http_address=("127.0.0.1", 0))
    )
    await logs.wait_for("http_listening", timeout=20)
    try:
        yield f"http://{logs.named('http_listening')[0]['address']}"
    finally:
        stop_daemon()
        assert await asyncio.wait_for(daemon, 60) == 1  # a source was failing when stopped


async def test_twenty_sources_deliver_and_the_one_with_wrong_credentials_is_reported(
    aws_options: AwsOptions, with_auth: AwsOptions, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    buckets = await buckets_of(with_auth, SOURCES)
    expected: dict[str, set[str]] = {}
    for i, bucket in enumerate(buckets):
        recs = records(15, 3000 + i)
        await put_objects(with_auth, bucket, {f"{PREFIX}{i}.json.gz": log_file(recs)})
        if i != BROKEN:
            expected[f"{OID}/host-{i}"] = {str(r["eventID"]) for r in recs}
    wrong = dataclasses.replace(
        with_auth, access_key="AKIAWRONGWRONGWRONG0", secret_key=Secret("wrong")
    )
    configs = [
        source(i, wrong if i == BROKEN else with_auth, bucket, lc)
        for i, bucket in enumerate(buckets)
    ]
    broken = configs[BROKEN].name

    with watch_logs() as logs:
        async with running(configs, state_dir, logs) as base:
            await lc.store.wait_for(15 * (SOURCES - 1), timeout=60)
            await logs.wait_for("source_restart_scheduled", timeout=30)
            unready = await until_status(f"{base}/readyz", 503)
            scraped = samples((await get(f"{base}/metrics"))[1])

    got: dict[str, set[str]] = {}
    for event in lc.store.events:
        got.setdefault(event.sensor, set()).add(str(event.json()["eventID"]))
    assert got == expected  # every record of the 19, each in its own sensor; none of the 20th
    assert len(lc.store.events) == 15 * (SOURCES - 1)

    failed = logs.named("source_failed")
    assert {e["source"] for e in failed} == {broken}
    assert failed[0]["reason"] == "InvalidAccessKeyId"
    assert broken in unready and unready.count("\n") == 1
    for cfg in configs:
        up = scraped[f"cloudtrail_adapter_source_up{{source={cfg.name}}}"]
        assert up == (0 if cfg.name == broken else 1), cfg.name
    assert scraped[f"cloudtrail_adapter_source_restarts_total{{source={broken}}}"] >= 1
