"""Through an HTTP proxy, as enterprise egress demands: LimaCharlie's `client_options.proxy`
(CONNECT, basic auth) and the environment's HTTPS_PROXY/HTTP_PROXY/NO_PROXY, for LimaCharlie
and for AWS. The proxy is a real one on 127.0.0.1 (tests/support/connect_proxy.py); LimaCharlie is
the emulator serving TLS with a test CA, so the daemon must tunnel as it would to the cloud.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from aiohttp import encode_basic_auth

from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.config.values import ProxyOptions
from cloudtrail_adapter.emulator.corpus import cloudtrail_record, log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.secret import Secret
from cloudtrail_adapter.sinks.proxies import Routes
from tests.support.configs import INSTALLATION_KEY, OID
from tests.support.connect_proxy import PROXY_PASSWORD, PROXY_USER, ConnectProxy
from tests.support.process import DaemonProcess
from tests.support.stand_in import ACCESS_KEY, SECRET_KEY, put_objects

USER, PASSWORD = PROXY_USER, PROXY_PASSWORD
PREFIX = "AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/30/"


@dataclass
class Stage:
    """What every end-to-end case here uses: a bucket, LimaCharlie over TLS, the proxy."""

    aws: AwsOptions
    bucket: str
    lc: LimaCharlieEmulator
    proxy: ConnectProxy
    ca: trustme.CA
    tmp: Path

    def config(self, **client: Any) -> Path:
        return config(self.tmp, self.aws, self.bucket, self.lc, **client)

    async def run(self, path: Path, env: dict[str, str] | None = None) -> tuple[int, DaemonProcess]:
        """The daemon, trusting the test CA, until it exits: its exit code, and itself."""
        env = ca_env(self.ca, self.tmp) | (env or {})
        async with DaemonProcess(path, self.tmp / "state", env=env) as daemon:
            code = await daemon.proc.wait()
        return code, daemon


@pytest.fixture
def stage(
    aws_options: AwsOptions,
    bucket: str,
    tls_lc: LimaCharlieEmulator,
    proxy: ConnectProxy,
    ca: trustme.CA,
    tmp_path: Path,
) -> Stage:
    return Stage(aws_options, bucket, tls_lc, proxy, ca, tmp_path)


def ca_env(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    """The daemon trusts the test CA the way any OpenSSL program can be told to."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return {"SSL_CERT_FILE": str(path)}


async def trail(aws_options: AwsOptions, bucket: str, files: int = 3) -> set[str]:
    rng = random.Random(7)
    when = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    ids: set[str] = set()
    objects: dict[str, bytes] = {}
    for n in range(files):
        records = [
            cloudtrail_record(rng, account="111122223333", region="us-east-1", when=when)
            for _ in range(40)
        ]
        ids |= {str(r["eventID"]) for r in records}
        name = f"111122223333_CloudTrail_us-east-1_20261130T09{n:02d}Z_{n}.json.gz"
        objects[PREFIX + name] = log_file(records)
    await put_objects(aws_options, bucket, objects)
    return ids


def config(
    tmp_path: Path, aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, **client: Any
) -> Path:
    doc = {
        "s3": {
            "client_options": {
                "identity": {"oid": OID, "installation_key": INSTALLATION_KEY},
                "hostname": "behind-a-proxy",
                "platform": "aws",
                "sensor_seed_key": "proxy-test",
                "dest_url": lc.usp_url,
                **client,
            },
            "bucket_name": bucket,
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "region": "us-east-1",
            "endpoint_url": aws_options.endpoint_url,
            "single_load": True,
        }
    }
    path = tmp_path / "proxied.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def lc_proxy(proxy: ConnectProxy, password: str = PASSWORD) -> dict[str, Any]:
    return {
        "proxy": {
            "url": proxy.url,
            "username": USER,
            "password": password,
            "handshake_timeout": "45s",
            "connect_timeout": "10s",
            "read_write_timeout": "30s",
        }
    }


async def test_the_s3_source_ships_everything_through_the_configured_proxy(
    stage: Stage,
) -> None:
    expected = await trail(stage.aws, stage.bucket)
    code, daemon = await stage.run(stage.config(**lc_proxy(stage.proxy)))
    assert code == 0, daemon.tail()

    assert set(stage.lc.store.event_ids()) == expected
    lc_target = f"127.0.0.1:{stage.lc.port}"
    assert [r.target for r in stage.proxy.connects()] == [lc_target]
    assert all(r.user == USER for r in stage.proxy.connects())
    [connecting] = daemon.logs.named("usp_connecting")
    assert connecting["proxy"] == stage.proxy.url
    assert PASSWORD not in "".join(daemon.lines)


async def test_a_wrong_proxy_password_fails_naming_the_proxy_not_the_password(
    stage: Stage,
) -> None:
    await trail(stage.aws, stage.bucket, files=1)
    wrong = "not-the-" + PASSWORD
    code, daemon = await stage.run(stage.config(**lc_proxy(stage.proxy, wrong)))
    assert code != 0, daemon.tail()

    assert not stage.lc.store.event_ids()
    assert stage.proxy.requests and not any(r.allowed for r in stage.proxy.requests)
    [failed] = daemon.logs.named("source_failed")
    assert stage.proxy.url in failed["error"] and "407" in failed["error"]
    assert "client_options.proxy.username and password" in failed["error"]
    logged = "".join(daemon.lines)
    assert wrong not in logged and PASSWORD not in logged


async def test_the_environment_proxies_carry_limacharlie_and_aws(stage: Stage) -> None:
    """HTTPS_PROXY carries the wss:// USP link (CONNECT); HTTP_PROXY the http:// stand-in of
    S3, through botocore's own reading of the environment; credentials in the URL."""
    expected = await trail(stage.aws, stage.bucket)
    with_auth = stage.proxy.url.replace("http://", f"http://{USER}:{PASSWORD}@")
    env = {"HTTPS_PROXY": with_auth, "HTTP_PROXY": with_auth}
    code, daemon = await stage.run(stage.config(), env)
    assert code == 0, daemon.tail()

    assert set(stage.lc.store.event_ids()) == expected
    allowed = [r for r in stage.proxy.requests if r.allowed]
    connects = [r.target for r in allowed if r.method == "CONNECT"]
    assert connects == [f"127.0.0.1:{stage.lc.port}"]
    s3_requests = [r.target for r in allowed if r.method != "CONNECT"]
    endpoint = str(stage.aws.endpoint_url)
    assert any(stage.bucket in t and t.startswith(endpoint) for t in s3_requests)
    [connecting] = daemon.logs.named("usp_connecting")
    assert connecting["proxy"] == stage.proxy.url  # shown without the credentials
    assert PASSWORD not in "".join(daemon.lines)


async def test_no_proxy_sends_limacharlie_traffic_direct(stage: Stage) -> None:
    expected = await trail(stage.aws, stage.bucket, files=1)
    env = {"HTTPS_PROXY": stage.proxy.url, "NO_PROXY": "localhost,127.0.0.1"}
    code, daemon = await stage.run(stage.config(), env)
    assert code == 0, daemon.tail()
    assert set(stage.lc.store.event_ids()) == expected
    assert stage.proxy.requests == []


# ---- the routing rule itself ----------------------------------------------------------------


def test_a_configured_proxy_wins_over_the_environment() -> None:
    configured = ProxyOptions(url="http://corp:3128", username="u", password=Secret(PASSWORD))
    routes = Routes(configured, {"HTTPS_PROXY": "http://other:8080"})
    route = routes.for_url("wss://usp.limacharlie.io/usp")
    assert (route.proxy, route.source, route.options) == ("http://corp:3128", "config", configured)
    assert route.headers == {"Proxy-Authorization": encode_basic_auth("u", PASSWORD)}
    assert PASSWORD not in repr(route) and PASSWORD not in route.describe()


@pytest.mark.parametrize(
    ("env", "url", "proxy"),
    [
        ({"HTTPS_PROXY": "http://p:1"}, "wss://usp.limacharlie.io/usp", "http://p:1"),
        (
            {"https_proxy": "http://low:1", "HTTPS_PROXY": "http://up:1"},
            "https://a.io",
            "http://low:1",
        ),
        ({"HTTPS_PROXY": "http://p:1"}, "ws://127.0.0.1:80/usp", None),
        ({"HTTP_PROXY": "p:3128"}, "http://hooks.example/x", "http://p:3128"),
        (
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".limacharlie.io"},
            "wss://usp.limacharlie.io/usp",
            None,
        ),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, "https://a.io", None),
        ({}, "wss://usp.limacharlie.io/usp", None),
    ],
)
def test_the_environment_routes_by_scheme_and_no_proxy(
    env: dict[str, str], url: str, proxy: str | None
) -> None:
    assert Routes(None, env).for_url(url).proxy == proxy


def test_credentials_in_an_environment_proxy_url_become_basic_auth() -> None:
    route = Routes(None, {"HTTPS_PROXY": f"http://{USER}:{PASSWORD}@p:3128"}).for_url("https://x")
    assert route.proxy == "http://p:3128"
    assert route.headers == {"Proxy-Authorization": encode_basic_auth(USER, PASSWORD)}
    assert PASSWORD not in repr(route) and PASSWORD not in route.describe()
