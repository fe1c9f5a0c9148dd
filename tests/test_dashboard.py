"""deploy/grafana/cloudtrail-adapter.json against a real Prometheus (Debian's package) that
scrapes a running daemon: every metric a panel queries must be one Prometheus scraped, so a
panel on a renamed metric fails here."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.monitor import Monitor
from tests.support.configs import s3_config, sqs_config
from tests.support.stand_in import put_objects
from tests.support.watch import watch_logs
from tests.test_e2e_s3 import records
from tests.test_e2e_sqs import send

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def prometheus(workdir: Path, target: str) -> Iterator[str]:
    """A real Prometheus on 127.0.0.1 scraping `target` every second; its base URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: `make test` installs Debian's prometheus package")
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "cloudtrail-adapter", "static_configs": [{"targets": [target]}]}
                ],
            }
        )
    )
    port = free_port()
    with (workdir / "prometheus.log").open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 (the real server, our own config)
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def api(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as answer:
        return (await answer.json())["data"]


async def scraped(base: str, timeout: float = 60.0) -> set[str]:
    """Every metric name Prometheus holds samples or metadata of, once it scraped the
    target successfully twice (so counters that appear later in a run are in)."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(aiohttp.ClientError, KeyError, TypeError):
                targets = (await api(http, f"{base}/api/v1/targets"))["activeTargets"]
                if targets and targets[0]["health"] == "up":
                    break
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.5)  # two more scrapes, after everything below happened
        names = set(await api(http, f"{base}/api/v1/label/__name__/values"))
        metadata = await api(http, f"{base}/api/v1/metadata")
    return names | set(metadata)


@contextlib.asynccontextmanager
async def daemon_serving(configs: list[Any], state_dir: Path) -> AsyncIterator[str]:
    with watch_logs() as logs:
        task = asyncio.create_task(
            serve(configs, state_dir, monitor=Monitor(), http_address=("127.0.0.1", 0))
        )
        await logs.wait_for("http_listening")
        try:
            yield str(logs.named("http_listening")[0]["address"])
        finally:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(task, 30)


async def test_every_metric_the_dashboard_queries_is_scraped_by_a_real_prometheus(
    aws_options: AwsOptions,
    bucket: str,
    queue: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    # an S3 and an SQS source that see what the panels show: records, a damaged object
    # (failed and quarantined), a poison message
    await put_objects(
        aws_options,
        bucket,
        {
            "AWSLogs/good.json.gz": log_file(records(20, 1)),
            "AWSLogs/bad.json.gz": b"not json",
        },
    )
    await send(aws_options, queue, ["this is not a notification"])
    s3 = s3_config(
        aws_options,
        bucket,
        lc,
        single_load=False,
        poll_interval=0.2,
        quarantine_after=1,
        layout="flat",
    )
    sqs = sqs_config(aws_options, queue, lc, single_load=False)
    sqs = dataclasses.replace(sqs, index=2)
    async with daemon_serving([s3, sqs], state_dir) as address:
        await lc.store.wait_for(20)
        with prometheus(tmp_path, address) as base:
            try:
                names = await scraped(base)
            except TimeoutError:
                log = (tmp_path / "prometheus.log").read_text()[-3000:]
                raise AssertionError(f"Prometheus never scraped {address}:\n{log}") from None

    dashboard = json.loads(DASHBOARD.read_text())
    missing = {
        title: sorted(m for m in metrics if not exported(m, names))
        for title, metrics in queried(dashboard).items()
    }
    assert {title: m for title, m in missing.items() if m} == {}
    assert all(queried(dashboard).values())  # every panel queries something
    # the check can fail: a name the daemon does not export is missing
    assert not exported("cloudtrail_adapter_records_shipped_total", names)


def exported(metric: str, names: set[str]) -> bool:
    if metric in names:
        return True
    return any(metric.endswith(p) and metric.removesuffix(p) in names for p in HISTOGRAM_PARTS)


def test_the_dashboard_has_the_job_and_source_variables() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"job", "source"} <= variables
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert 'job=~"$job"' in target["expr"], (panel["title"], target["expr"])
