"""The command line: exit codes, what goes to stdout/stderr, and what reaches the daemon."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import TextIO

import pytest

import cloudtrail_adapter
from cloudtrail_adapter import logs
from cloudtrail_adapter.cli import main, state_dir
from cloudtrail_adapter.config import S3SourceOptions, SourceConfig, SqsSourceOptions
from cloudtrail_adapter.monitor import Monitor
from cloudtrail_adapter.systemd import SystemdNotifier

OID = "6c3f1d2a-9d55-4e1e-8f0a-3b2c1d0e9f8a"
INSTALLATION_KEY = "0f4e7a52-1b2c-4d3e-9f8a-7b6c5d4e3f2a"
AWS_SECRET = "aws-secret-SHOULD-NOT-LEAK-7a1f9c"
REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "config"

SEED_ENV = {
    "LC_OID": OID,
    "LC_INSTALLATION_KEY": INSTALLATION_KEY,
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEACCESSKEY",
    "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
    "CLOUDTRAIL_BUCKET": "acme-trail",
    "CLOUDTRAIL_QUEUE_URL": "https://sqs.us-east-2.amazonaws.com/123456789012/trail",
}

BAD = """\
s3:
  client_options:
    identity:
      installation_key: 0f4e7a52-1b2c-4d3e-9f8a-7b6c5d4e3f2a
  bucketname: acme-trail
---
sqs:
  queue_url: https://sqs.us-east-2.amazonaws.com/123456789012/trail
  max_messages: 50
"""


@pytest.fixture
def seed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SEED_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


class FakeDaemon(types.ModuleType):
    """Stands in for cloudtrail_adapter.daemon: records what the CLI hands to `serve`."""

    def __init__(self) -> None:
        super().__init__("cloudtrail_adapter.daemon")
        self.calls: list[tuple[list[SourceConfig], Path]] = []

    async def serve(
        self,
        sources: list[SourceConfig],
        state: Path,
        *,
        shutdown_grace: float,
        notifier: SystemdNotifier,
        monitor: Monitor,
        http_address: tuple[str, int] | None,
        progress: TextIO | None,
    ) -> int:
        self.calls.append((sources, state))
        self.shutdown_grace = shutdown_grace
        self.notifier, self.monitor, self.http_address = notifier, monitor, http_address
        return 7


@pytest.fixture
def daemon(monkeypatch: pytest.MonkeyPatch) -> FakeDaemon:
    """The CLI with a fake daemon module, and logging left as the tests set it up."""
    fake = FakeDaemon()
    monkeypatch.setitem(sys.modules, "cloudtrail_adapter.daemon", fake)
    monkeypatch.setattr(cloudtrail_adapter, "daemon", fake, raising=False)
    monkeypatch.setattr(logs, "configure_logging", lambda level, stream=None: None)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    return fake


# ---- validate ----------------------------------------------------------------------------


@pytest.mark.usefixtures("seed_env")
def test_validate_accepts_the_seed_documents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    both = tmp_path / "both.yaml"
    both.write_text(
        (CONFIG_DIR / "s3.yaml").read_text() + "---\n" + (CONFIG_DIR / "sqs.yaml").read_text()
    )
    assert main(["validate", str(both)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"s3[1]:acme-trail -> usp oid={OID}")
    assert lines[1].startswith(f"sqs[2]:trail -> usp oid={OID}")
    assert "static keys" in lines[0] and "region us-east-2" in lines[1]
    assert err == ""
    assert AWS_SECRET not in out and INSTALLATION_KEY not in out


def test_validate_reports_every_error_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    assert main(["validate", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{bad}: document 1 (line 1): s3.bucket_name: required key is missing",
        f"{bad}: document 1 (line 3): s3.client_options.identity.oid: required key is missing",
        f"{bad}: document 1 (line 5): s3.bucketname: unknown key; did you mean bucket_name?",
        f"{bad}: document 2 (line 7): sqs.client_options: required key is missing: "
        "set client_options (LimaCharlie USP) or webhook",
        f"{bad}: document 2 (line 9): sqs.max_messages: expected an integer from 1 to 10, got 50",
    ]


def test_validate_prints_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "s3.yaml"
    config.write_text(
        f"s3:\n  bucket_name: b\n  client_options:\n    identity:\n      oid: {OID}\n"
        f"      installation_key: {AWS_SECRET}\n"
    )
    assert main(["validate", str(config)]) == 0
    out, err = capsys.readouterr()
    assert err.startswith(f"warning: {config}: document 1 (line 6): ")
    assert "Adapter Key" in err
    assert AWS_SECRET not in err + out
    assert out.startswith("s3[1]:b -> usp")


def test_validate_as_a_module(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    env = {**os.environ, **SEED_ENV}
    command = [sys.executable, "-m", "cloudtrail_adapter", "validate"]
    failed = subprocess.run(  # noqa: S603 - our own interpreter and module
        [*command, str(bad)], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert failed.returncode == 2
    assert "s3.bucketname: unknown key; did you mean bucket_name?" in failed.stderr
    assert "Traceback" not in failed.stderr
    passed = subprocess.run(  # noqa: S603
        [*command, str(CONFIG_DIR / "s3.yaml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert passed.returncode == 0, passed.stderr
    assert passed.stdout.startswith("s3[1]:acme-trail -> usp")


# ---- demo ------------------------------------------------------------------------------


@pytest.mark.parametrize("blocked", ["moto", "flask"])
def test_the_demo_without_its_extra_says_what_to_install(blocked: str) -> None:
    """`pip install cloudtrail-adapter` has no moto (nor moto's server, which needs Flask):
    the demo says what to install instead of failing on an import."""
    script = (
        f"import sys; sys.modules[{blocked!r}] = None; sys.argv = ['cloudtrail-adapter', 'demo']; "
        "from cloudtrail_adapter.__main__ import entry; raise SystemExit(entry())"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "pip install 'cloudtrail-adapter[demo]'" in done.stderr
    assert re.search(rf"cannot import {blocked}\b", done.stderr), done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


# ---- run and LimaCharlie's forms -----------------------------------------------------------


@pytest.mark.usefixtures("seed_env")
def test_run_hands_sources_and_state_dir_to_the_daemon(
    daemon: FakeDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["run", str(CONFIG_DIR / "s3.yaml"), "--state-dir", str(tmp_path)]) == 7
    [(sources, state)] = daemon.calls
    assert state == tmp_path
    assert [s.name for s in sources] == ["s3[1]:acme-trail"]
    assert daemon.http_address is None and daemon.monitor.unready_after == 60
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/cloudtrail-adapter")
    args = ["--log-level", "DEBUG", "--http-address", "127.0.0.1:9108", "--unready-after", "5"]
    assert main(["run", str(CONFIG_DIR / "s3.yaml"), *args]) == 7
    assert daemon.calls[1][1] == Path("/var/lib/cloudtrail-adapter")
    assert daemon.http_address == ("127.0.0.1", 9108) and daemon.monitor.unready_after == 5


def test_a_bad_http_address_is_a_usage_error(daemon: FakeDaemon) -> None:
    assert main(["run", str(CONFIG_DIR / "s3.yaml"), "--http-address", "9108"]) == 2
    assert not daemon.calls


def test_state_dir_resolution() -> None:
    assert state_dir("given", {"STATE_DIRECTORY": "/a"}) == Path("given")
    assert state_dir(None, {"STATE_DIRECTORY": "/a:/b"}) == Path("/a")
    assert state_dir(None, {}) == Path("state")


def test_s3_dotted_form(daemon: FakeDaemon) -> None:
    code = main(
        [
            "s3",
            f"client_options.identity.oid={OID}",
            f"client_options.identity.installation_key={INSTALLATION_KEY}",
            "bucket_name=acme-trail",
            "single_load=true",
            "--state-dir",
            "/tmp/ct-state",
        ]
    )
    assert code == 7
    [(sources, state)] = daemon.calls
    assert state == Path("/tmp/ct-state")
    assert sources[0].source == S3SourceOptions(bucket_name="acme-trail", single_load=True)


@pytest.mark.usefixtures("seed_env")
def test_sqs_form_with_a_config_file(daemon: FakeDaemon) -> None:
    assert main(["sqs", str(CONFIG_DIR / "sqs.yaml")]) == 7
    [(sources, _)] = daemon.calls
    assert isinstance(sources[0].source, SqsSourceOptions)


@pytest.mark.usefixtures("seed_env")
def test_form_with_a_file_of_the_other_kind_fails(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["s3", str(CONFIG_DIR / "sqs.yaml")]) == 2
    assert "sqs: a sqs source, but the command is `s3`" in capsys.readouterr().err
    assert daemon.calls == []


def test_config_errors_stop_before_the_daemon(
    daemon: FakeDaemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    assert main(["run", str(bad)]) == 2
    assert main(["sqs", "queue_url=https://sqs.us-east-1.amazonaws.com/1/q", AWS_SECRET]) == 2
    err = capsys.readouterr().err
    assert "s3.bucketname: unknown key" in err
    assert "command line: argument 2 is not key=value" in err
    assert AWS_SECRET not in err
    assert daemon.calls == []


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["run", "x.yaml", "--log-level", "loud"]) == 2
    assert main(["s3"]) == 2
    assert main(["emulate", "--port", "65536"]) == 2
    assert "usage: cloudtrail-adapter" in capsys.readouterr().err


@pytest.mark.usefixtures("seed_env")
def test_the_container_entrypoint_is_a_valid_command_line(daemon: FakeDaemon) -> None:
    """The Dockerfile's exec-form ENTRYPOINT + CMD, as the container runs them: `run` on
    the mounted config (here the seed document in its place), serving HTTP on every address."""
    text = (CONFIG_DIR.parent / "Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    assert entry[0] == "cloudtrail-adapter" and entry[1] == "run"
    mounted = "/etc/cloudtrail-adapter/config.yaml"
    argv = [*entry[1:], *cmd]
    assert argv.count(mounted) == 1
    seed = str(CONFIG_DIR / "s3.yaml")
    assert main([seed if arg == mounted else arg for arg in argv]) == 7
    [(sources, _)] = daemon.calls
    assert [s.name for s in sources] == ["s3[1]:acme-trail"]  # the config is what it read
    assert daemon.http_address == ("0.0.0.0", 9108)  # noqa: S104
    assert re.search(r"^USER 10001$", text, re.M), "never root"
    assert "/healthz" in text.split("HEALTHCHECK", 1)[1]
