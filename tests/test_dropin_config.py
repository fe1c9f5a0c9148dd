"""LimaCharlie's adapter configs run unchanged: every key and form its adapter reads."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cloudtrail_adapter import cli
from cloudtrail_adapter.config import (
    ConfigError,
    ConfigProblem,
    S3SourceOptions,
    SqsSourceOptions,
    parse_documents,
    parse_dotted,
)
from cloudtrail_adapter.config.values import SqsFilesSourceOptions

OID = "6c3f1d2a-9d55-4e1e-8f0a-3b2c1d0e9f8a"
IID = "0f4e7a52-1b2c-4d3e-9f8a-7b6c5d4e3f2a"
PROXY_PASSWORD = "pr0xy-PASSWORD-never-shown"
QUEUE = "https://sqs.us-gov-west-1.amazonaws.com/123456789012/trail-files"

EVERY_REFERENCE_KEY = f"""\
sensor_type: s3
healthcheck: 8080
cloud:
  oid: {OID}
  conf_guid: 1f0e3c7a-0000-4000-8000-000000000001
  show_config: false
s3:
  client_options:
    identity:
      oid: {OID}
      installation_key: {IID}
    hostname: trail-reader
    platform: aws
    architecture: usp_adapter
    is_compressed: true
    sensor_seed_key: trail
    buffer_options: {{}}
    proxy:
      url: http://proxy.corp.example:3128
      username: svc-lc
      password: {PROXY_PASSWORD}
      handshake_timeout: 45s
      connect_timeout: 10s
      read_write_timeout: 1m30s
  bucket_name: org-trail
  access_key: AKIAEXAMPLE
  secret_key: wJalrXUtnFEMIEXAMPLEKEY
---
sqs-files:
  client_options:
    identity:
      oid: {OID}
      installation_key: {IID}
    hostname: trail-files
    platform: aws
    sensor_seed_key: files
  access_key: AKIAEXAMPLE
  secret_key: wJalrXUtnFEMIEXAMPLEKEY
  queue_url: {QUEUE}
  region: us-gov-west-1
  parallel_fetch: 4
  bucket_path: Records/s3/bucket/name
  file_path: Records/s3/object/key
  is_decode_object_key: true
"""


def parse(text: str) -> tuple[list[object], list[ConfigProblem]]:
    notes: list[ConfigProblem] = []
    sources = parse_documents(textwrap.dedent(text), {}, "lc.yaml", warnings=notes)
    return list(sources), notes


def test_a_config_with_every_key_limacharlie_reads_validates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "lc.yaml"
    path.write_text(EVERY_REFERENCE_KEY)
    assert cli.main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "s3[1]:org-trail" in out and "sqs-files[2]:trail-files" in out
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert {n.split(": ")[3] for n in notes} >= {
        "cloud",
        "s3.client_options.architecture",
        "s3.client_options.is_compressed",
        "s3.client_options.buffer_options",
    }
    assert all("not used: " in n for n in notes)
    assert PROXY_PASSWORD not in out + err


def test_the_reference_keys_mean_what_they_mean_there() -> None:
    [s3, files], _ = parse(EVERY_REFERENCE_KEY)
    assert s3.client_options.proxy.url == "http://proxy.corp.example:3128"  # type: ignore[attr-defined]
    proxy = s3.client_options.proxy  # type: ignore[attr-defined]
    assert (proxy.handshake_timeout, proxy.connect_timeout, proxy.read_write_timeout) == (
        45.0,
        10.0,
        90.0,
    )
    assert proxy.password.reveal() == PROXY_PASSWORD
    assert PROXY_PASSWORD not in repr(s3)
    src = files.source  # type: ignore[attr-defined]
    assert isinstance(src, SqsFilesSourceOptions) and isinstance(src, SqsSourceOptions)
    assert (src.bucket, src.bucket_path, src.file_path, src.is_decode_object_key) == (
        None,
        "Records/s3/bucket/name",
        "Records/s3/object/key",
        True,
    )
    assert files.aws.region == "us-gov-west-1"  # type: ignore[attr-defined]


def test_sensor_type_picks_the_section_that_runs() -> None:
    text = f"""\
    sensor_type: sqs
    s3:
      bucket_name: unused
    sqs:
      client_options: {{identity: {{oid: {OID}, installation_key: {IID}}}}}
      queue_url: {QUEUE}
    """
    [cfg], notes = parse(text)
    assert cfg.kind == "sqs"  # type: ignore[attr-defined]
    [note] = notes
    assert (note.key, note.level, note.message) == ("s3", "info", "not used: sensor_type is sqs")


def test_sensor_type_naming_an_absent_section_is_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("sensor_type: sqs\ns3: {bucket_name: b, webhook: {url: https://h/x, secret: s}}")
    [error] = caught.value.errors
    assert error.key == "sensor_type" and "no sqs: section" in error.message


def test_a_cloud_managed_config_alone_says_it_is_not_fetched() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(f"sensor_type: s3\ncloud: {{oid: {OID}, conf_guid: abc}}\n")
    [error] = caught.value.errors
    assert error.key == "sensor_type" and "no s3: section" in error.message
    with pytest.raises(ConfigError) as caught:
        parse(f"cloud: {{oid: {OID}, conf_guid: abc}}\n")
    [error] = caught.value.errors
    assert error.key == "cloud" and "does not fetch" in error.message


@pytest.mark.parametrize(
    ("proxy", "key", "fragment"),
    [
        (
            f"{{url: 'http://svc:{PROXY_PASSWORD}@proxy:3128'}}",
            "url",
            "must not contain credentials",
        ),
        ("{url: http://proxy:3128, username: svc}", "password", "needs both"),
        (f"{{url: http://proxy:3128, password: {PROXY_PASSWORD}}}", "username", "needs both"),
        ("{url: socks5://proxy:1080}", "url", "http://"),
        ("{url: http://proxy:3128, connect_timeout: 10 parsecs}", "connect_timeout", "seconds"),
        ("{username: svc, password: x}", "url", "required key is missing"),
    ],
)
def test_proxy_mistakes_are_named_without_the_password(proxy: str, key: str, fragment: str) -> None:
    text = f"""\
    s3:
      client_options:
        identity: {{oid: {OID}, installation_key: {IID}}}
        proxy: {proxy}
      bucket_name: b
    """
    with pytest.raises(ConfigError) as caught:
        parse(text)
    [error] = caught.value.errors
    assert error.key == f"s3.client_options.proxy.{key}"
    assert fragment in error.message or "number" in error.message
    assert PROXY_PASSWORD not in str(caught.value)


def test_a_webhook_document_takes_a_proxy_too() -> None:
    text = """\
    s3:
      webhook: {url: "https://hooks.example/o/h", secret: s3cret, proxy: {url: "http://p:3128"}}
      bucket_name: b
    """
    [cfg], _ = parse(text)
    assert cfg.webhook.proxy.url == "http://p:3128"  # type: ignore[attr-defined]


def test_go_durations_are_seconds() -> None:
    text = """\
    s3:
      webhook: {url: "https://hooks.example/o/h", secret: s3cret, timeout: 1m30s}
      delivery: {batch_linger: 250ms}
      bucket_name: b
      poll_interval: 2h
    """
    [cfg], _ = parse(text)
    assert cfg.webhook.timeout == 90.0  # type: ignore[attr-defined]
    assert cfg.delivery.batch_linger == 0.25  # type: ignore[attr-defined]
    assert cfg.source.poll_interval == 7200.0  # type: ignore[attr-defined]


# ---- the key=value form ---------------------------------------------------------------------

BASE = [f"client_options.identity.oid={OID}", "bucket_name=trail"]


def test_list_items_by_index_as_limacharlie_writes_them() -> None:
    [cfg] = parse_dotted(
        "s3",
        [
            *BASE,
            f"client_options.identity.installation_key={IID}",
            "regions[0]=us-*",
            "regions[1]=eu-west-1",
            "accounts[0]=012345678901",
            "client_options.mappings[0].event_type_path=eventName",
            "client_options.mappings[0].sensor_hostname_path=recipientAccountId",
            "client_options.mappings[1].event_type_path=eventSource",
        ],
        {},
    )
    assert isinstance(cfg.source, S3SourceOptions)
    assert cfg.source.regions == ("us-*", "eu-west-1")
    assert cfg.source.accounts == ("012345678901",)
    assert cfg.client_options is not None
    assert cfg.client_options.mappings == [
        {"event_type_path": "eventName", "sensor_hostname_path": "recipientAccountId"},
        {"event_type_path": "eventSource"},
    ]


@pytest.mark.parametrize(
    ("pairs", "key", "fragment"),
    [
        (["regions[1]=eu-*"], "s3.regions[0]", "indexes count from 0"),
        (["regions=us-*", "regions[0]=eu-*"], "s3.regions", "both as a value and as a section"),
        (["regions[0]=us-*", "regions[0]=eu-*"], "s3.regions[0]", "more than once"),
    ],
)
def test_list_index_mistakes_are_named(pairs: list[str], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_dotted("s3", [*BASE, f"client_options.identity.installation_key={IID}", *pairs], {})
    assert any(e.key == key and fragment in e.message for e in caught.value.errors), caught.value


def test_environment_entries_named_like_keys_set_them() -> None:
    """LimaCharlie's adapter reads `key=value` from the environment after the arguments."""
    notes: list[ConfigProblem] = []
    env = {
        "client_options.identity.installation_key": IID,
        "bucket_name": "from-env",
        "PATH": "/usr/bin",
        "client_options.mapping.event_type_path": "eventName",
        "HOME": "/root",
    }
    [cfg] = parse_dotted("s3", BASE, env, warnings=notes)
    assert cfg.client_options is not None
    assert cfg.client_options.identity.installation_key.reveal() == IID
    assert cfg.client_options.mapping == {"event_type_path": "eventName"}
    assert isinstance(cfg.source, S3SourceOptions) and cfg.source.bucket_name == "from-env"
    [note] = notes
    assert note.key == "s3.bucket_name" and "environment's value is used" in note.message


def test_the_sqs_files_command_form() -> None:
    [cfg] = parse_dotted(
        "sqs-files",
        [
            f"client_options.identity.oid={OID}",
            f"client_options.identity.installation_key={IID}",
            f"queue_url={QUEUE}",
            "bucket=trail-bucket",
            "file_path=files/path",
        ],
        {},
    )
    assert cfg.kind == "sqs-files" and cfg.name == "sqs-files[1]:trail-files"
    assert isinstance(cfg.source, SqsFilesSourceOptions) and cfg.source.bucket == "trail-bucket"
