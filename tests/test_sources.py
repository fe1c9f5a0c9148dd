"""Polling behaviour: new objects are picked up, SIGTERM stops cleanly, opt-in deletion,
the local directory source, and a YAML seed document through the CLI."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path

import yaml

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions, DeliveryOptions
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.corpus import log_file, org_trail, write_directory
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from tests.support.configs import INSTALLATION_KEY, OID, file_config, s3_config
from tests.support.corpus import PREFIX, records
from tests.support.process import stop_daemon
from tests.support.stand_in import ACCESS_KEY, SECRET_KEY, put_objects


async def test_polling_picks_up_new_objects_and_sigterm_stops_cleanly(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    first, second = records(30, 21), records(40, 22)
    await put_objects(aws_options, bucket, {f"{PREFIX}a.json.gz": log_file(first)})
    # flat: the new object lands in a days-old folder, which the day listing would skip
    cfg = s3_config(aws_options, bucket, lc, single_load=False, poll_interval=0.2, layout="flat")

    daemon = asyncio.create_task(serve([cfg], state_dir))
    await lc.store.wait_for(30, timeout=30)
    await put_objects(aws_options, bucket, {f"{PREFIX}b.json.gz": log_file(second)})
    await lc.store.wait_for(70, timeout=30)
    stop_daemon()

    assert await asyncio.wait_for(daemon, 30) == 0
    assert lc.store.event_ids() == Counter(str(r["eventID"]) for r in first + second)


async def test_delete_after_ack_deletes_only_delivered_objects(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    good = {f"{PREFIX}{i}.json.gz": log_file(records(10, 30 + i)) for i in range(3)}
    broken = {f"{PREFIX}broken.json.gz": b"\x1f\x8b\x08\x00not really gzip"}
    await put_objects(aws_options, bucket, good | broken)

    cfg = s3_config(aws_options, bucket, lc, delete_after_ack=True)
    assert await serve([cfg], state_dir) == 1, "a broken object must make single_load fail"

    assert len(lc.store.events) == 30
    async with aws.client("s3", aws_options) as s3:
        listed = await s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in listed["Contents"]] == list(broken), "only delivered objects go"


async def test_file_source_replays_a_directory(
    tmp_path: Path, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    files = org_trail(5, accounts=2, regions=1, days=1, files_per_day=2, records_per_file=(1, 50))
    write_directory(files, tmp_path / "trail")
    cfg = file_config(tmp_path / "trail", lc, DeliveryOptions())

    assert await serve([cfg], state_dir) == 0
    expected = Counter(e for f in files if f.kind == "log" for e in f.event_ids)
    assert lc.store.event_ids() == expected
    assert await serve([cfg], state_dir) == 0
    assert len(lc.store.events) == sum(expected.values())


async def test_seed_document_runs_through_the_cli(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    """LimaCharlie's seed document, verbatim plus loopback endpoints, in a child process."""
    recs = records(25, 40)
    await put_objects(aws_options, bucket, {f"{PREFIX}seed.json.gz": log_file(recs)})
    document = {
        "s3": {
            "client_options": {
                "hostname": "seed-host",
                "identity": {"installation_key": INSTALLATION_KEY, "oid": OID},
                "platform": "aws",
                "sensor_seed_key": "seed",
                "dest_url": lc.usp_url,
            },
            "bucket_name": bucket,
            "secret_key": SECRET_KEY,
            "access_key": ACCESS_KEY,
            "endpoint_url": aws_options.endpoint_url,
            "single_load": True,
        }
    }
    config = tmp_path / "s3.yaml"
    config.write_text(yaml.safe_dump(document))

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cloudtrail_adapter",
        "s3",
        str(config),
        "--state-dir",
        str(tmp_path / "state"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)

    assert proc.returncode == 0, err.decode()
    assert lc.store.event_ids() == Counter(str(r["eventID"]) for r in recs)
    assert lc.store.by_sensor() == Counter({f"{OID}/seed-host": 25})
    assert INSTALLATION_KEY.encode() not in out + err
    assert SECRET_KEY.encode() not in out + err
