"""`cloudtrail-adapter check` on the command line: its forms (a config, and LimaCharlie's
`s3`/`sqs` forms with a config or key=value pairs), exit codes 0/1/2, `--json`, and the
systemd unit's `ExecStartPre=`."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cloudtrail_adapter import logs
from cloudtrail_adapter.cli import main
from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.emulator.corpus import log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from tests.support.configs import INSTALLATION_KEY, OID
from tests.support.stand_in import ACCESS_KEY, SECRET_KEY, put_objects

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "cloudtrail-adapter.service"
KEY = (
    "AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/30/"
    "111122223333_CloudTrail_us-east-1_20261130T1000Z_x.json.gz"
)


@pytest.fixture(autouse=True)
def logging_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI sets up logging for the process; in-process, it stays as the tests set it."""
    monkeypatch.setattr(logs, "configure_logging", lambda level, stream=None: None)


def printed(capsys: pytest.CaptureFixture[str], *, as_json: bool = False) -> list[str]:
    """check's lines on stdout; in-process, log lines may share it with them (a test
    before may have pointed logging there), so they are left out."""
    lines = capsys.readouterr().out.splitlines()
    if as_json:
        return [line for line in lines if line.startswith('{"source":')]
    labels = ("passed ", "FAILED ", "warning ", "unproven ", "skipped ", "check ")
    return [line for line in lines if line.startswith(labels)]


def pairs(lc: LimaCharlieEmulator, *extra: str) -> list[str]:
    return [
        f"client_options.identity.oid={OID}",
        f"client_options.identity.installation_key={INSTALLATION_KEY}",
        "client_options.hostname=checking",
        "client_options.platform=aws",
        "client_options.sensor_seed_key=check",
        f"client_options.dest_url={lc.usp_url}",
        *extra,
    ]


def aws_pairs(options: AwsOptions) -> list[str]:
    return [
        f"access_key={ACCESS_KEY}",
        f"secret_key={SECRET_KEY}",
        "region=us-east-1",
        f"endpoint_url={options.endpoint_url}",
    ]


def test_an_invalid_document_exits_2_naming_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("s3:\n  bucketname: acme-trail\n")

    assert main(["check", str(bad), "--state-dir", str(tmp_path / "state")]) == 2
    err = capsys.readouterr().err
    assert "bucketname" in err and "bucket_name" in err
    assert not (tmp_path / "state").exists()


def test_a_form_without_its_arguments_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 2
    assert main(["check", "s3"]) == 2
    assert main(["check", "one.yaml", "two.yaml"]) == 2
    assert "usage: cloudtrail-adapter check CONFIG" in capsys.readouterr().err


async def test_the_s3_key_value_form_checks_as_lc_adapter_takes_it(
    aws_options: AwsOptions,
    bucket: str,
    lc: LimaCharlieEmulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await put_objects(aws_options, bucket, {KEY: log_file([{"eventID": "e1"}])})
    argv = ["check", "s3", *pairs(lc, f"bucket_name={bucket}", *aws_pairs(aws_options))]

    code = await asyncio.to_thread(main, [*argv, "--state-dir", str(tmp_path / "state")])

    out = printed(capsys)
    assert code == 0, out
    assert [line.split()[0] for line in out[:-1]] == [
        "passed",
        "passed",
        "passed",
        "passed",
        "passed",
        "passed",
        "passed",
        "skipped",
        "passed",
    ]
    assert out[-1] == "check passed: 8 passed, 1 skipped"
    assert any(f"GetObject s3://{bucket}/{KEY}" in line for line in out)
    assert SECRET_KEY not in "\n".join(out) and INSTALLATION_KEY not in "\n".join(out)


async def test_the_sqs_form_with_a_config_prints_json_and_exits_1_on_a_failure(
    aws_options: AwsOptions,
    queue: str,
    lc: LimaCharlieEmulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lc.usp_faults.handshake_error = "no such organization"
    client = {
        "identity": {"oid": OID, "installation_key": INSTALLATION_KEY},
        "hostname": "checking",
        "dest_url": lc.usp_url,
    }
    aws = dict(pair.split("=", 1) for pair in aws_pairs(aws_options))
    config = tmp_path / "sqs.yaml"
    config.write_text(
        yaml.safe_dump({"sqs": {"queue_url": queue, "client_options": client, **aws}})
    )

    code = await asyncio.to_thread(main, ["check", "sqs", str(config), "--json"])

    steps = [json.loads(line) for line in printed(capsys, as_json=True)]
    assert code == 1
    assert set(steps[0]) == {
        "source",
        "step",
        "status",
        "tried",
        "result",
        "action",
        "resource",
        "fix",
    }
    failed = [s for s in steps if s["status"] == "failed"]
    assert [(s["source"], s["step"]) for s in failed] == [
        (f"sqs[1]:{queue.rsplit('/', 1)[1]}", "handshake")
    ]
    assert "no such organization" in failed[0]["result"]


def test_the_s3_form_refuses_a_file_of_another_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "s3", str(REPO / "config" / "sqs.yaml")]) == 2


def test_the_unit_can_run_check_before_the_daemon(tmp_path: Path) -> None:
    text = UNIT.read_text()
    off = [line for line in text.splitlines() if line.startswith("#ExecStartPre=")]
    assert off == [
        "#ExecStartPre=/opt/cloudtrail-adapter/bin/cloudtrail-adapter check "
        "/etc/cloudtrail-adapter/config.yaml"
    ]
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine; the unit was not verified")
    unit = tmp_path / UNIT.name
    on = text.replace("#ExecStartPre=", "ExecStartPre=").replace(
        "/opt/cloudtrail-adapter/bin/", "/usr/bin/env "
    )
    unit.write_text(on)
    result = subprocess.run(  # noqa: S603 (our own unit file)
        [analyze, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
