"""Secrets never leak: every error path is driven with recognisable secret values in the
config, and no log line, error message, CLI output or repr may contain any of them.

Each case first asserts that it really reached its error path (the event or message it is
about), then that no canary appears, raw or URL-encoded, anywhere in what the run printed.
"""

from __future__ import annotations

import asyncio
import gzip
import signal
import socket
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from cloudtrail_adapter import cli
from cloudtrail_adapter.config import AwsOptions, load_config
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from tests.support.configs import OID
from tests.support.corpus import PREFIX, records
from tests.support.process import CliProcess
from tests.support.stand_in import ACCESS_KEY, put_objects, set_auth
from tests.support.watch import LogWatch

INSTALLATION_KEY = "c4a2a7e5-0b1d-4e5f-8a9b-5ec2e75ec2e7"
AWS_SECRET = "CANARYawsSECRETk3y0123456789abcdefghijkl"
HOOK_SECRET = "CANARY-hook-s3cret/with+chars=="
CANARIES = (INSTALLATION_KEY, AWS_SECRET, HOOK_SECRET)


def leaks(text: str) -> list[str]:
    """Every canary form found in `text`: raw, URL-encoded (path and form) and the key's hex."""
    forms = set()
    for canary in CANARIES:
        forms |= {canary, urllib.parse.quote(canary, safe=""), urllib.parse.quote_plus(canary)}
    forms.add(INSTALLATION_KEY.replace("-", ""))
    return sorted(form for form in forms if form in text)


def usp(lc: LimaCharlieEmulator) -> dict[str, Any]:
    return {
        "hostname": "secret-test",
        "identity": {"installation_key": INSTALLATION_KEY, "oid": OID},
        "platform": "aws",
        "sensor_seed_key": "secrets",
        "dest_url": lc.usp_url,
    }


def s3_doc(aws: AwsOptions, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "bucket_name": bucket,
        "access_key": ACCESS_KEY,
        "secret_key": AWS_SECRET,
        "region": "us-east-1",
        "endpoint_url": aws.endpoint_url,
        "single_load": True,
        **extra,
    }


@dataclass
class Run:
    code: int | None
    output: str  # stdout and stderr together
    logs: LogWatch  # the JSON lines among them

    def named(self, name: str) -> list[dict[str, Any]]:
        return self.logs.named(name)


async def cli_run(
    args: list[str], *, until: str | None = None, timeout: float = 60.0, cwd: Path | None = None
) -> Run:
    """The real CLI in a child process; with `until`, SIGTERM once that event was logged."""
    daemon = ["--log-level", "debug", "--shutdown-grace", "1"]
    debug = daemon if args[0] in ("run", "s3", "sqs") else []
    async with CliProcess([*args, *debug], cwd=cwd, stdout=True) as child:
        async with asyncio.timeout(timeout):
            if until:
                await child.logs.wait_for(until, timeout=timeout)
                child.proc.send_signal(signal.SIGTERM)
            code = await child.proc.wait()
    return Run(code, "".join(child.lines), child.logs)


def write(path: Path, *docs: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump_all(docs))
    return path


@pytest.fixture
async def bad_object_bucket(aws_options: AwsOptions, bucket: str) -> AsyncIterator[str]:
    await put_objects(
        aws_options,
        bucket,
        {
            f"{PREFIX}corrupt.json.gz": b"\x1f\x8b\x08\x00garbage",
            f"{PREFIX}good.json.gz": gzip.compress(orjson.dumps({"Records": records(3, 700)})),
        },
    )
    yield bucket


# --- configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("secret_key", [AWS_SECRET]),
        ("secret_key", {"nested": AWS_SECRET}),
        ("secret_key", 12345),
        ("secret_kye", AWS_SECRET),
    ],
)
async def test_invalid_config_values_never_echo_a_secret(
    field: str, value: Any, tmp_path: Path, lc: LimaCharlieEmulator, aws_options: AwsOptions
) -> None:
    doc = s3_doc(aws_options, "b") | {"parallel_fetch": "many", "client_options": usp(lc)}
    doc.pop("secret_key")
    doc[field] = value
    if field == "secret_key" and value == 12345:
        doc["client_options"]["identity"]["installation_key"] = {"k": INSTALLATION_KEY}
    run = await cli_run(["validate", str(write(tmp_path / "c.yaml", {"s3": doc}))])
    assert run.code == 2
    assert "s3.parallel_fetch" in run.output
    assert ("secret_kye" in run.output) == (field == "secret_kye")
    assert leaks(run.output) == []


async def test_the_dotted_key_form_never_echoes_a_secret(lc: LimaCharlieEmulator) -> None:
    run = await cli_run(
        [
            "s3",
            f"client_options.identity.oid={OID}",
            "client_options.identity.installation_key=not-a-uuid-" + AWS_SECRET,
            "bucket_name=b",
            f"access_key={ACCESS_KEY}",
            f"secret_key={AWS_SECRET}",
            f"webhook.secret={HOOK_SECRET}",
            "parallel_fetch=zero",
        ]
    )
    assert run.code == 2 and "parallel_fetch" in run.output
    assert leaks(run.output) == []


def test_parsed_config_repr_and_summary_hold_no_secret(
    tmp_path: Path, lc: LimaCharlieEmulator, aws_options: AwsOptions
) -> None:
    hook = {"url": lc.webhook_url(OID, "hook"), "secret": HOOK_SECRET}
    path = write(
        tmp_path / "c.yaml",
        {"s3": s3_doc(aws_options, "b") | {"client_options": usp(lc)}},
        {"s3": s3_doc(aws_options, "b") | {"webhook": hook}},
    )
    sources = load_config(path, {})
    assert len(sources) == 2
    shown = repr(sources) + str(sources) + "".join(map(cli.summary, sources))
    assert "Secret('***')" in shown
    assert leaks(shown) == []


# --- LimaCharlie refusing or failing -------------------------------------------------


async def test_a_refused_usp_handshake(
    tmp_path: Path, lc: LimaCharlieEmulator, aws_options: AwsOptions, bad_object_bucket: str
) -> None:
    lc.usp_faults.handshake_error = f"unknown installation key {INSTALLATION_KEY}"[:24]
    doc = s3_doc(aws_options, bad_object_bucket) | {"client_options": usp(lc)}
    run = await cli_run(["run", str(write(tmp_path / "c.yaml", {"s3": doc}))])
    assert run.code == 1
    assert run.named("source_failed"), run.output[-2000:]
    assert leaks(run.output) == []


@pytest.mark.parametrize("status", [401, 403, 500, 429])
async def test_webhook_errors(
    status: int,
    tmp_path: Path,
    lc: LimaCharlieEmulator,
    aws_options: AwsOptions,
    bad_object_bucket: str,
) -> None:
    lc.webhook.register(OID, "hook", HOOK_SECRET)
    lc.webhook_faults.statuses = [status] * 3
    lc.webhook_faults.retry_after = "0"
    hook = {"url": lc.webhook_url(OID, "hook"), "secret": HOOK_SECRET}
    doc = s3_doc(aws_options, bad_object_bucket) | {"webhook": hook}
    run = await cli_run(["run", str(write(tmp_path / "c.yaml", {"s3": doc}))])
    assert run.code == 1, run.output[-2000:]  # the corrupt object, or the fatal 4xx
    assert run.named("object_failed") or run.named("source_failed")
    assert str(status) in run.output
    assert leaks(run.output) == []


async def test_an_unreachable_webhook(
    tmp_path: Path, aws_options: AwsOptions, bad_object_bucket: str
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    hook = {"url": f"http://127.0.0.1:{port}/{OID}/hook", "secret": HOOK_SECRET}
    doc = s3_doc(aws_options, bad_object_bucket) | {"webhook": hook}
    path = write(tmp_path / "c.yaml", {"s3": doc})
    run = await cli_run(["run", str(path)], until="webhook_retry")
    assert run.named("webhook_retry"), run.output[-2000:]
    assert leaks(run.output) == []


# --- AWS refusing or failing ---------------------------------------------------------


async def test_aws_rejecting_the_credentials(
    tmp_path: Path, lc: LimaCharlieEmulator, aws_options: AwsOptions, bucket: str
) -> None:
    """moto checks signatures once its auth is on: an unknown key is refused with 403."""
    assert aws_options.endpoint_url
    doc = s3_doc(aws_options, bucket) | {"client_options": usp(lc)}
    path = write(tmp_path / "c.yaml", {"s3": doc})
    await set_auth(aws_options.endpoint_url, "0")
    try:
        run = await cli_run(["run", str(path)])
    finally:
        await set_auth(aws_options.endpoint_url, "inf")
    assert run.code == 1
    assert "InvalidAccessKeyId" in run.output or "InvalidClientTokenId" in run.output
    assert leaks(run.output) == []


async def test_an_unreachable_aws_endpoint(tmp_path: Path, lc: LimaCharlieEmulator) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    doc = s3_doc(AwsOptions(endpoint_url=f"http://127.0.0.1:{port}"), "trail-unreachable")
    doc |= {"client_options": usp(lc)}
    run = await cli_run(["run", str(write(tmp_path / "c.yaml", {"s3": doc}))], timeout=120)
    assert run.code == 1 and run.named("source_failed"), run.output[-2000:]
    assert leaks(run.output) == []


async def test_bad_objects_and_the_quarantine_listing(
    tmp_path: Path, lc: LimaCharlieEmulator, aws_options: AwsOptions, bad_object_bucket: str
) -> None:
    doc = s3_doc(aws_options, bad_object_bucket, quarantine_after=1)
    doc |= {"client_options": usp(lc)}
    path = write(tmp_path / "c.yaml", {"s3": doc})
    run = await cli_run(["run", str(path), "--state-dir", str(tmp_path / "state")])
    assert run.code == 1 and run.named("object_quarantined"), run.output[-2000:]
    listing = await cli_run(["quarantine", "list", "--state-dir", str(tmp_path / "state")])
    assert "corrupt.json.gz" in listing.output
    assert leaks(run.output + listing.output) == []
