"""A `ws://` or `http://` LimaCharlie destination behind a proxy that wants credentials:
there is no CONNECT, so the credentials must ride on the request the proxy carries (the
WebSocket upgrade, each POST), and a 407 is as fatal as it is for CONNECT. The proxy is a
real one on 127.0.0.1 (tests/support/connect_proxy.py); LimaCharlie is the plain emulator.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import encode_basic_auth

from cloudtrail_adapter.config import AwsOptions, SourceConfig
from cloudtrail_adapter.config.values import ProxyOptions
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import cloudtrail_record, log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.secret import Secret
from cloudtrail_adapter.sinks.proxies import Routes
from tests.support.configs import s3_config
from tests.support.connect_proxy import ConnectProxy
from tests.support.stand_in import put_objects
from tests.support.watch import watch_logs

USER = "svc-lc"
PASSWORD = "pl41n-pr0xy-S3CRET"
KEY = "AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/30/111122223333_CloudTrail_p.json.gz"
#: Bounds a run that must end by itself: a 407 retried forever would not.
RUN_LIMIT = 30.0
KEYS_NAMED = {
    "usp": "client_options.proxy.username and password",
    "webhook": "webhook.proxy.username and password",
}


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    with ConnectProxy(USER, PASSWORD) as running:
        yield running


def through(cfg: SourceConfig, proxy: ConnectProxy, password: str) -> SourceConfig:
    """The document's destination (USP or webhook) sent through the proxy."""
    options = ProxyOptions(url=proxy.url, username=USER, password=Secret(password))
    if cfg.webhook is not None:
        return replace(cfg, webhook=replace(cfg.webhook, proxy=options))
    assert cfg.client_options is not None
    return replace(cfg, client_options=replace(cfg.client_options, proxy=options))


async def trail(aws_options: AwsOptions, bucket: str) -> Counter[str]:
    rng = random.Random(11)
    when = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    records = [
        cloudtrail_record(rng, account="111122223333", region="us-east-1", when=when)
        for _ in range(30)
    ]
    await put_objects(aws_options, bucket, {KEY: log_file(records)})
    return Counter(str(r["eventID"]) for r in records)


@pytest.mark.parametrize("destination", ["usp", "webhook"])
async def test_a_plain_destination_authenticates_to_the_proxy(
    destination: str,
    aws_options: AwsOptions,
    bucket: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    proxy: ConnectProxy,
) -> None:
    expected = await trail(aws_options, bucket)
    plain = s3_config(aws_options, bucket, lc, webhook=destination == "webhook")
    cfg = through(plain, proxy, PASSWORD)

    with watch_logs() as logs:
        assert await asyncio.wait_for(serve([cfg], state_dir), RUN_LIMIT) == 0

    assert lc.store.event_ids() == expected
    carried = proxy.carried()
    assert carried, "nothing went through the proxy"
    assert all(r.user == USER for r in carried), "a request without the credentials"
    assert all(f"127.0.0.1:{lc.port}/" in r.target for r in carried)
    assert not proxy.connects(), "plain destinations need no CONNECT"
    assert PASSWORD not in repr(logs.entries)


@pytest.mark.parametrize("destination", ["usp", "webhook"])
async def test_a_407_on_a_plain_destination_is_fatal_and_names_the_proxy(
    destination: str,
    aws_options: AwsOptions,
    bucket: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    proxy: ConnectProxy,
) -> None:
    await trail(aws_options, bucket)
    wrong = "not-the-" + PASSWORD
    plain = s3_config(aws_options, bucket, lc, webhook=destination == "webhook")
    cfg = through(plain, proxy, wrong)

    with watch_logs() as logs:
        assert await asyncio.wait_for(serve([cfg], state_dir), RUN_LIMIT) != 0

    assert not lc.store.event_ids()
    assert proxy.requests and not any(r.allowed for r in proxy.requests)
    [failed] = logs.named("source_failed")
    assert proxy.url in failed["error"] and "407" in failed["error"]
    assert KEYS_NAMED[destination] in failed["error"]
    assert wrong not in repr(logs.entries) and PASSWORD not in repr(logs.entries)


@pytest.mark.parametrize(
    ("url", "on_connect", "on_request"),
    [
        ("wss://usp.limacharlie.io/usp", True, False),
        ("https://hooks.example/x", True, False),
        ("ws://127.0.0.1:8080/usp", False, True),
        ("http://127.0.0.1:8080/hook", False, True),
    ],
)
def test_credentials_go_where_the_proxy_reads_them_and_nowhere_else(
    url: str, on_connect: bool, on_request: bool
) -> None:
    """Through a tunnel the request is LimaCharlie's to read: the proxy's credentials go on
    the CONNECT only. Without one, the proxy reads the request: they go there."""
    options = ProxyOptions(url="http://corp:3128", username=USER, password=Secret(PASSWORD))
    route = Routes(options, {}).for_url(url)
    expected = {"Proxy-Authorization": encode_basic_auth(USER, PASSWORD)}
    assert route.headers == (expected if on_connect else None)
    assert route.request_headers == (expected if on_request else {})
