"""`check`'s LimaCharlie steps against the emulator: the route, the connection, TLS and the
USP or webhook handshake, each failing as a user meets it (an OID refused, an unreachable
`dest_url`, an untrusted certificate, a proxy that refuses our password), and never an
event sent. A `file:` document keeps AWS out of it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from cloudtrail_adapter.check import check_steps
from cloudtrail_adapter.check.steps import Step, exit_code
from cloudtrail_adapter.config import DeliveryOptions, SourceConfig, WebhookOptions
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.secret import Secret
from tests.support.configs import INSTALLATION_KEY, OID, WEBHOOK_SECRET, file_config
from tests.support.connect_proxy import PROXY_PASSWORD, PROXY_USER, ConnectProxy

USER, PASSWORD = PROXY_USER, PROXY_PASSWORD
REPO = Path(__file__).resolve().parent.parent


def file_source(tmp_path: Path, lc: LimaCharlieEmulator) -> SourceConfig:
    (tmp_path / "trail").mkdir(exist_ok=True)
    return file_config(tmp_path / "trail", lc, DeliveryOptions())


def with_client(cfg: SourceConfig, **changes: Any) -> SourceConfig:
    assert cfg.client_options is not None
    return dataclasses.replace(
        cfg, client_options=dataclasses.replace(cfg.client_options, **changes)
    )


async def checked(cfg: SourceConfig, tmp_path: Path) -> tuple[int, dict[str, Step]]:
    steps = [s async for s in check_steps([cfg], tmp_path / "state", {})]
    return exit_code(steps), {s.name: s for s in steps}


def closed_port() -> int:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        return int(free.getsockname()[1])


async def test_every_usp_step_passes_and_no_event_is_sent(
    lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    code, steps = await checked(file_source(tmp_path, lc), tmp_path)

    assert code == 0
    assert list(steps) == ["state", "directory", "route", "connect", "tls", "handshake"]
    assert steps["route"].result.startswith("direct")
    assert steps["tls"].status == "skipped"  # ws://: the emulator
    assert lc.usp.connections == 1 and lc.usp.messages_received == 0
    assert lc.store.events == []


async def test_an_oid_the_emulator_refuses_is_named_as_limacharlie_s_refusal(
    lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    lc.usp_faults.handshake_error = "unknown organization or installation key"
    code, steps = await checked(file_source(tmp_path, lc), tmp_path)

    handshake = steps["handshake"]
    assert handshake.status == "failed"
    assert handshake.result == (
        f"LimaCharlie refused the connection for oid={OID}: unknown organization or "
        "installation key"
    )
    assert "client_options.identity" in (handshake.fix or "")
    assert INSTALLATION_KEY not in handshake.line()
    assert code == 1


async def test_an_unreachable_dest_url_is_named_as_unreachable(
    lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    port = closed_port()
    cfg = with_client(file_source(tmp_path, lc), dest_url=f"ws://127.0.0.1:{port}/usp")
    code, steps = await checked(cfg, tmp_path)

    connect = steps["connect"]
    assert connect.status == "failed"
    assert connect.tried == f"TCP to 127.0.0.1:{port}"
    assert connect.result.startswith("unreachable (")
    assert (steps["tls"].status, steps["handshake"].status) == ("skipped", "skipped")
    assert code == 1


async def test_the_usp_endpoint_is_discovered_as_the_daemon_discovers_it(
    lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    cfg = with_client(file_source(tmp_path, lc), dest_url=None, api_url=lc.base_url)
    code, steps = await checked(cfg, tmp_path)

    assert steps["discovery"].result == f"the USP endpoint is {lc.usp_url}"
    assert steps["handshake"].status == "passed"
    assert code == 0


async def test_an_organisation_discovery_does_not_know_is_named(
    lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    cfg = with_client(file_source(tmp_path, lc), dest_url=None, api_url=f"{lc.base_url}/elsewhere")
    code, steps = await checked(cfg, tmp_path)

    discovery = steps["discovery"]
    assert discovery.status == "failed"
    assert f"LimaCharlie has no USP endpoint for oid={OID}" in discovery.result
    assert {steps[n].status for n in ("route", "connect", "tls", "handshake")} == {"skipped"}
    assert code == 1


def hooked(cfg: SourceConfig, lc: LimaCharlieEmulator, hook: str, secret: str) -> SourceConfig:
    options = WebhookOptions(url=lc.webhook_url(OID, hook), secret=Secret(secret))
    return dataclasses.replace(cfg, client_options=None, webhook=options)


@pytest.mark.parametrize(
    ("hook", "secret", "status", "said"),
    [
        ("cloudtrail", WEBHOOK_SECRET, "passed", "accepted the hook's OID, name and secret"),
        ("cloudtrail", "not-the-secret", "failed", "the secret was refused (HTTP 401"),
        ("elsewhere", WEBHOOK_SECRET, "failed", "no such webhook (HTTP 404"),
    ],
)
async def test_the_webhook_handshake_names_what_the_hook_refused_and_sends_no_event(
    lc: LimaCharlieEmulator, tmp_path: Path, hook: str, secret: str, status: str, said: str
) -> None:
    lc.webhook.register(OID, "cloudtrail", WEBHOOK_SECRET)
    code, steps = await checked(hooked(file_source(tmp_path, lc), lc, hook, secret), tmp_path)

    assert (steps["handshake"].status, code) == (status, 0 if status == "passed" else 1)
    assert said in steps["handshake"].result
    assert secret not in steps["handshake"].line()
    assert lc.webhook.requests == 1
    assert lc.store.events == []


# -- TLS and proxies -------------------------------------------------------------------------


async def test_a_certificate_nobody_trusts_is_named_as_tls(
    tls_lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    code, steps = await checked(file_source(tmp_path, tls_lc), tmp_path)

    assert steps["connect"].status == "passed"
    tls = steps["tls"]
    assert tls.status == "failed"
    assert "CERTIFICATE_VERIFY_FAILED" in tls.result
    assert "$SSL_CERT_FILE" in (tls.fix or "")
    assert steps["handshake"].status == "skipped"
    assert code == 1


def document(tmp_path: Path, lc: LimaCharlieEmulator, **client: Any) -> Path:
    (tmp_path / "trail").mkdir(exist_ok=True)
    doc = {
        "file": {
            "path": str(tmp_path / "trail"),
            "client_options": {
                "identity": {"oid": OID, "installation_key": INSTALLATION_KEY},
                "hostname": "checking",
                "platform": "aws",
                "sensor_seed_key": "check-test",
                "dest_url": lc.usp_url,
                **client,
            },
        }
    }
    path = tmp_path / "check.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


async def check_command(
    config: Path, ca: trustme.CA, tmp_path: Path, *args: str
) -> tuple[int, str]:
    """`cloudtrail-adapter check` as a user runs it, trusting the test CA as any OpenSSL
    program can be told to."""
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    env = dict(os.environ) | {"SSL_CERT_FILE": str(tmp_path / "ca.pem"), "PYTHONPATH": str(REPO)}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cloudtrail_adapter",
        "check",
        str(config),
        *args,
        "--state-dir",
        str(tmp_path / "state"),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    out, _ = await asyncio.wait_for(child.communicate(), 60)
    return await child.wait(), out.decode()


def proxied(proxy: ConnectProxy, password: str) -> dict[str, Any]:
    return {"proxy": {"url": proxy.url, "username": USER, "password": password}}


async def test_through_the_configured_proxy_over_tls_every_step_passes(
    tls_lc: LimaCharlieEmulator, proxy: ConnectProxy, ca: trustme.CA, tmp_path: Path
) -> None:
    config = document(tmp_path, tls_lc, **proxied(proxy, PASSWORD))
    code, out = await check_command(config, ca, tmp_path, "--json")

    assert code == 0, out
    steps = {s["step"]: s for s in map(json.loads, out.splitlines())}
    assert set(steps) == {"state", "directory", "route", "connect", "tls", "handshake"}
    assert {s["status"] for s in steps.values()} == {"passed"}
    assert steps["route"]["result"] == f"{proxy.url} (as configured)"
    assert steps["tls"]["result"].startswith("TLSv1.")
    assert [r.target for r in proxy.connects()] == [f"127.0.0.1:{tls_lc.port}"]
    assert tls_lc.usp.messages_received == 0
    assert PASSWORD not in out
    assert not (tmp_path / "state").exists()


async def test_a_proxy_that_refuses_our_password_is_named_on_the_route(
    tls_lc: LimaCharlieEmulator, proxy: ConnectProxy, ca: trustme.CA, tmp_path: Path
) -> None:
    wrong = "not-the-" + PASSWORD
    code, out = await check_command(
        document(tmp_path, tls_lc, **proxied(proxy, wrong)), ca, tmp_path
    )

    assert code == 1, out
    route = next(line for line in out.splitlines() if " route: " in line)
    assert route.startswith("FAILED")
    assert "407" in route and proxy.url in route
    assert "check client_options.proxy.username and password" in route
    assert wrong not in out and PASSWORD not in out
    assert out.splitlines()[-1].startswith("check failed: ")
