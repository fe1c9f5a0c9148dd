"""Issue 19's five files, through the file source and through S3: every readable record
arrives, each unreadable one is set aside in the state database with its reason, the run
says so (log and exit code), and a second run ships nothing again."""

from __future__ import annotations

import gzip
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from cloudtrail_adapter import cli
from cloudtrail_adapter.config import AwsOptions, DeliveryOptions, SourceConfig
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import cloudtrail_record
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.state import StateStore
from tests.support.configs import file_config, s3_config
from tests.support.stand_in import put_objects
from tests.support.watch import watch_logs

PREFIX = "AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/30/"
# One defect per file, in its third record; the fifth file is clean.
DEFECTS: dict[str, tuple[bytes, bytes]] = {
    "lone_surrogate": (b'"eventName":"', b'"eventName":"X\\ud800'),
    "invalid_utf8": (b'"eventName":"', b'"eventName":"\xff'),
    "nan": (b'{"eventVersion"', b'{"bad":NaN,"eventVersion"'),
    "control_character": (b'"eventName":"', b'"eventName":"\x01'),
    "clean": (b"", b""),
}
SET_ASIDE = {"invalid_utf8", "non_finite_number", "control_character"}


def five_files() -> tuple[dict[str, bytes], list[Any]]:
    """The files by name, and every record that must arrive (as Python's json reads it)."""
    rng = random.Random(19)
    when = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    files: dict[str, bytes] = {}
    expected: list[Any] = []
    for n, (defect, (old, new)) in enumerate(DEFECTS.items()):
        recs = [
            cloudtrail_record(rng, account="111122223333", region="us-east-1", when=when)
            for _ in range(5)
        ]
        parts = [orjson.dumps(r) for r in recs]
        if old:
            assert old in parts[2]
            parts[2] = parts[2].replace(old, new, 1)
        for i, part in enumerate(parts):
            if i != 2 or defect in ("clean", "lone_surrogate"):
                expected.append(json.loads(part.decode("utf-8")))
        body = b'{"Records":[' + b",".join(parts) + b"]}"
        name = f"111122223333_CloudTrail_us-east-1_20261130T08{n}0Z_{defect}.json.gz"
        files[name] = gzip.compress(body)
    return files, expected


def arrived(lc: LimaCharlieEmulator) -> list[Any]:
    return [json.loads(e.raw.decode("utf-8")) for e in lc.store.events]


def key(record: Any) -> str:
    return json.dumps(record, sort_keys=True)


def assert_salvaged(lc: LimaCharlieEmulator, expected: list[Any], state_dir: Path) -> None:
    assert sorted(map(key, arrived(lc))) == sorted(map(key, expected))
    assert len(expected) == 22  # 21 good, and the lone surrogate's record, unchanged
    store = StateStore.in_dir(state_dir)
    try:
        parts = store.unreadable_records()
    finally:
        store.close()
    assert sorted(p.reason for p in parts) == sorted(SET_ASIDE)
    assert all(p.index == 2 and p.raw.startswith(b"{") for p in parts)


async def test_five_damaged_files_through_the_file_source(
    tmp_path: Path,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files, expected = five_files()
    trail = tmp_path / "trail"
    trail.mkdir()
    for name, body in files.items():
        (trail / name).write_bytes(body)
    await runs_twice(file_config(trail, lc, DELIVERY), lc, expected, state_dir, capsys)


async def test_large_objects_read_in_ranges_salvage_alike(
    tmp_path: Path,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Over `stream_threshold`, an object is decoded as a stream; refused part-way, it is
    read again and salvaged; what went before is not delivered twice (de-duplication)."""
    files, expected = five_files()
    trail = tmp_path / "trail"
    trail.mkdir()
    for name, body in files.items():
        (trail / name).write_bytes(body)
    streamed = DeliveryOptions(batch_max_records=500, batch_linger=0.05, stream_threshold=1024)
    assert all(len(body) > 1024 for body in files.values())
    await runs_twice(file_config(trail, lc, streamed), lc, expected, state_dir, capsys)


async def test_five_damaged_files_through_s3(
    aws_options: AwsOptions,
    bucket: str,
    lc: LimaCharlieEmulator,
    state_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files, expected = five_files()
    await put_objects(aws_options, bucket, {PREFIX + n: b for n, b in files.items()})
    cfg = s3_config(aws_options, bucket, lc, delivery=DELIVERY)
    await runs_twice(cfg, lc, expected, state_dir, capsys)


DELIVERY = DeliveryOptions(batch_max_records=500, batch_linger=0.05)


async def runs_twice(
    cfg: SourceConfig,
    lc: LimaCharlieEmulator,
    expected: list[Any],
    state_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with watch_logs() as logs:
        assert await serve([cfg], state_dir) == 1  # records were set aside: the job says so
    assert_salvaged(lc, expected, state_dir)
    unreadable = logs.named("records_unreadable")
    assert sorted(r for e in unreadable for r in e["reasons"]) == sorted(SET_ASIDE)
    [finished] = logs.named("source_finished")
    assert finished["unreadable"] == 3 and finished["failed"] == 0

    delivered = len(lc.store.events)
    assert await serve([cfg], state_dir) == 0  # nothing new, nothing set aside
    assert len(lc.store.events) == delivered

    assert cli.main(["quarantine", "list", "--state-dir", str(state_dir)]) == 0
    out = capsys.readouterr().out
    for reason in SET_ASIDE:
        assert reason in out
    assert out.count("Records[2]") == 3
