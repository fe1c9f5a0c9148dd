"""Shared fixtures: a real moto server and the LimaCharlie emulator, both on 127.0.0.1."""

from __future__ import annotations

import asyncio
import urllib.parse
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import (
    AwsOptions,
    ClientOptions,
    DeliveryOptions,
    FileSourceOptions,
    Identity,
    S3SourceOptions,
    SourceConfig,
    SqsSourceOptions,
    WebhookOptions,
)
from cloudtrail_adapter.emulator.moto import ACCESS_KEY, REGION, SECRET_KEY, STAND_IN, moto_server
from cloudtrail_adapter.emulator.process import DaemonProcess
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.model import Batch
from cloudtrail_adapter.secret import Secret

OID = "6c3f1d2a-9d55-4e1e-8f0a-3b2c1d0e9f8a"
INSTALLATION_KEY = "0f4e7a52-1b2c-4d3e-9f8a-7b6c5d4e3f2a"
WEBHOOK_SECRET = "webhook-secret-do-not-log-7f3a"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws_options(moto_endpoint: str) -> AwsOptions:
    return AwsOptions(ACCESS_KEY, Secret(SECRET_KEY), REGION, moto_endpoint)


@pytest.fixture
async def bucket(aws_options: AwsOptions) -> str:
    name = f"trail-{uuid.uuid4().hex[:12]}"
    async with aws.client("s3", aws_options) as s3:
        await s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
async def lc() -> AsyncIterator[LimaCharlieEmulator]:
    async with LimaCharlieEmulator() as emulator:
        yield emulator


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


async def put_objects(aws_options: AwsOptions, bucket: str, objects: dict[str, bytes]) -> None:
    async with aws.client("s3", aws_options) as s3:
        for key, body in objects.items():
            await s3.put_object(Bucket=bucket, Key=key, Body=body)


def usp_client_options(lc: LimaCharlieEmulator, hostname: str = "test-host") -> ClientOptions:
    return ClientOptions(
        identity=Identity(OID, Secret(INSTALLATION_KEY)),
        hostname=hostname,
        sensor_seed_key="cloudtrail-tests",
        dest_url=lc.usp_url,
    )


@pytest.fixture
async def queue(aws_options: AwsOptions) -> str:
    async with aws.client("sqs", aws_options) as sqs:
        made = await sqs.create_queue(QueueName=f"trail-{uuid.uuid4().hex[:12]}")
    return str(made["QueueUrl"])


def sqs_config(
    aws_options: AwsOptions, queue_url: str, lc: LimaCharlieEmulator, **source: Any
) -> SourceConfig:
    """An SQS document to the emulator over USP; single-load with short polls by default."""
    defaults: dict[str, Any] = {"single_load": True, "wait_time_seconds": 0}
    return SourceConfig(
        index=1,
        kind="sqs",
        source=SqsSourceOptions(queue_url=queue_url, **(defaults | source)),
        aws=aws_options,
        client_options=usp_client_options(lc),
        webhook=None,
        delivery=DeliveryOptions(batch_max_records=500, batch_linger=0.05),
    )


def s3_config(
    aws_options: AwsOptions,
    bucket: str,
    lc: LimaCharlieEmulator,
    *,
    webhook: bool = False,
    delivery: DeliveryOptions | None = None,
    **source: Any,
) -> SourceConfig:
    """A single-load S3 document to the emulator, over USP or (webhook=True) the webhook."""
    hook = None
    if webhook:
        lc.webhook.register(OID, "cloudtrail", WEBHOOK_SECRET)
        hook = WebhookOptions(url=lc.webhook_url(OID, "cloudtrail"), secret=Secret(WEBHOOK_SECRET))
    return SourceConfig(
        index=1,
        kind="s3",
        source=S3SourceOptions(bucket_name=bucket, **({"single_load": True} | source)),
        aws=aws_options,
        client_options=None if webhook else usp_client_options(lc),
        webhook=hook,
        delivery=delivery or DeliveryOptions(batch_max_records=500, batch_linger=0.05),
    )


def file_config(path: Path, lc: LimaCharlieEmulator, delivery: DeliveryOptions) -> SourceConfig:
    """A file-source document (single-load by default) to the emulator over USP."""
    return SourceConfig(
        index=1,
        kind="file",
        source=FileSourceOptions(path=path),
        aws=AwsOptions(),
        client_options=usp_client_options(lc),
        webhook=None,
        delivery=delivery,
    )


def s3_document(
    endpoint: str, bucket: str, lc: LimaCharlieEmulator, hostname: str, **extra: Any
) -> dict[str, Any]:
    """An `s3:` YAML document, as a daemon child process reads it, to the emulator over USP."""
    client = {
        "hostname": hostname,
        "identity": {"installation_key": INSTALLATION_KEY, "oid": OID},
        "platform": "aws",
        "sensor_seed_key": hostname,
        "dest_url": lc.usp_url,
    }
    aws = {"access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "region": REGION}
    return {
        "s3": {"client_options": client, "bucket_name": bucket, "endpoint_url": endpoint}
        | aws
        | extra
    }


async def all_workers_waiting(
    daemon: DaemonProcess, workers: int, *, since: int = 0, timeout: float = 120.0
) -> None:
    """LimaCharlie is the bottleneck and the pipeline holds all the memory its bounds allow:
    every worker waits downstream (the pipeline's `worker_waiting` debug line)."""
    await daemon.wait_event(
        "worker_waiting", lambda e: bool(e["waiting_workers"] == workers), timeout, since=since
    )


class AckRecorder:
    """A sink's on_ack callback: keeps acknowledged batches in order; tests wait on a count."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self._changed = asyncio.Event()

    def __call__(self, batch: Batch) -> None:
        self.batches.append(batch)
        self._changed.set()

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                while len(self.batches) < count:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"{len(self.batches)} batches acked, expected {count}") from None


class LogWatch:
    """A structlog processor that keeps every event and lets a test wait for one by name:
    a retry is visible only in the logs, and logs are part of the sink's interface."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    def __call__(self, _logger: Any, _method: str, event: MutableMapping[str, Any]) -> str:
        self.entries.append(dict(event))
        self._changed.set()
        raise structlog.DropEvent

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["event"] == name]

    async def wait_for(self, name: str, count: int = 1, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.named(name)) < count:
                self._changed.clear()
                await self._changed.wait()


@contextmanager
def watch_logs() -> Iterator[LogWatch]:
    watch = LogWatch()
    previous = structlog.get_config()["processors"]
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, watch])
    try:
        yield watch
    finally:
        structlog.configure(processors=previous)


@pytest.fixture
def requests() -> Iterator[list[tuple[str, str]]]:
    """What the stand-in was asked, from now on."""
    STAND_IN.requests = []
    try:
        yield STAND_IN.requests
    finally:
        STAND_IN.requests = None


def listings(requests: list[tuple[str, str]], bucket: str) -> list[dict[str, str]]:
    """The ListObjectsV2 calls on the bucket, as their query parameters."""
    found = []
    for method, url in requests:
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        if method == "GET" and parts.path.strip("/") == bucket and query.get("list-type") == "2":
            found.append(query)
    return found


async def passes_done(logs: LogWatch, configs: list[SourceConfig], more: int) -> None:
    """Until every source finished `more` listing passes after now."""
    counts = {c.name: len([e for e in logs.named("source_pass_done") if e["source"] == c.name])
              for c in configs}  # fmt: skip
    async with asyncio.timeout(30):
        while True:
            done = Counter(e["source"] for e in logs.named("source_pass_done"))
            if all(done[name] >= count + more for name, count in counts.items()):
                return
            await logs.wait_for("source_pass_done", len(logs.named("source_pass_done")) + 1, 30)


#: A test that uses one of these runs real servers (moto, the emulator) or the daemon itself.
E2E_FIXTURES = frozenset({"moto_endpoint", "aws_options", "bucket", "queue", "lc"})
#: Modules whose tests start servers or processes of their own.
E2E_MODULES = frozenset({
    "test_alerts", "test_dashboard", "test_demo", "test_kill", "test_lc_faults", "test_memory",
    "test_progress", "test_scale_out", "test_systemd", "test_usp", "test_webhook",
    "test_workers", "test_bench", "test_shutdown", "test_streaming",
})  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks the end-to-end tests `e2e`: `pytest -m "not e2e"` is the fast inner loop, and
    `make test` runs everything."""
    for item in items:
        module = item.path.stem
        fixtures = set(getattr(item, "fixturenames", ()))
        if module in E2E_MODULES or fixtures & E2E_FIXTURES:
            item.add_marker(pytest.mark.e2e)
