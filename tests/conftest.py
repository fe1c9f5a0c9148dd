"""Shared fixtures: a real moto server and the LimaCharlie emulator, both on 127.0.0.1, and
the `e2e` marking. The helpers the tests share are in tests/support/."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.secret import Secret
from tests.support.connect_proxy import PROXY_PASSWORD, PROXY_USER, ConnectProxy
from tests.support.stand_in import ACCESS_KEY, REGION, SECRET_KEY, STAND_IN, moto_server


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


@pytest.fixture
async def queue(aws_options: AwsOptions) -> str:
    async with aws.client("sqs", aws_options) as sqs:
        made = await sqs.create_queue(QueueName=f"trail-{uuid.uuid4().hex[:12]}")
    return str(made["QueueUrl"])


@pytest.fixture
def requests() -> Iterator[list[tuple[str, str]]]:
    """What the stand-in was asked, from now on."""
    STAND_IN.requests = []
    try:
        yield STAND_IN.requests
    finally:
        STAND_IN.requests = None


#: A test that uses one of these runs real servers (moto, the emulator) or the daemon itself.
E2E_FIXTURES = frozenset({"moto_endpoint", "aws_options", "bucket", "queue", "lc"})
#: Modules whose tests start servers or processes of their own.
E2E_MODULES = frozenset(
    {
        "test_alerts",
        "test_dashboard",
        "test_demo",
        "test_kill",
        "test_lc_faults",
        "test_memory",
        "test_progress",
        "test_scale_out",
        "test_systemd",
        "test_usp",
        "test_webhook",
        "test_workers",
        "test_bench",
        "test_shutdown",
        "test_streaming",
        "test_emulate",
    }
)


@pytest.fixture
def keys_served() -> Iterator[None]:
    """The stand-in's ListPublicKeys answers with the trail's keys during the test."""
    try:
        yield
    finally:
        STAND_IN.public_keys = {}
        STAND_IN.public_key_calls.clear()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_lc(ca: trustme.CA) -> AsyncIterator[LimaCharlieEmulator]:
    """The emulator over TLS, its certificate from `ca` (trusted through SSL_CERT_FILE)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    async with LimaCharlieEmulator(ssl_context=context) as emulator:
        yield emulator


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    with ConnectProxy(PROXY_USER, PROXY_PASSWORD) as running:
        yield running


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks the end-to-end tests `e2e`: `pytest -m "not e2e"` is the fast inner loop, and
    `make test` runs everything."""
    for item in items:
        module = item.path.stem
        fixtures = set(getattr(item, "fixturenames", ()))
        if module in E2E_MODULES or fixtures & E2E_FIXTURES:
            item.add_marker(pytest.mark.e2e)
