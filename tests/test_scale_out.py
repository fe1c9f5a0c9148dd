"""Several daemons, as separate processes, share one queue: SQS is the distributed part."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path

import yaml

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.emulator.corpus import log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from tests.support import messages
from tests.support.configs import INSTALLATION_KEY, OID
from tests.support.corpus import PREFIX, records
from tests.support.stand_in import ACCESS_KEY, SECRET_KEY, depth

DAEMONS = 3
NOTIFICATIONS = 300


def config(queue: str, endpoint: str, lc: LimaCharlieEmulator, n: int) -> dict[str, object]:
    return {
        "sqs": {
            "client_options": {
                "hostname": f"consumer-{n}",
                "identity": {"installation_key": INSTALLATION_KEY, "oid": OID},
                "platform": "aws",
                "sensor_seed_key": "scale-out",
                "dest_url": lc.usp_url,
            },
            "queue_url": queue,
            "region": "us-east-1",
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "endpoint_url": endpoint,
            "single_load": True,
            "wait_time_seconds": 1,
        }
    }


async def test_three_daemons_share_one_queue_without_loss_or_duplicates(
    aws_options: AwsOptions, bucket: str, queue: str, lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    objects = {f"{PREFIX}n-{i:03}.json.gz": records(3, 1000 + i) for i in range(NOTIFICATIONS)}
    async with aws.client("s3", aws_options) as s3, aws.client("sqs", aws_options) as sqs:
        for key, recs in objects.items():
            await s3.put_object(Bucket=bucket, Key=key, Body=log_file(recs))
        keys = list(objects)
        for start in range(0, len(keys), 10):
            entries = [
                {"Id": str(i), "MessageBody": messages.s3_event(bucket, [k])}
                for i, k in enumerate(keys[start : start + 10])
            ]
            await sqs.send_message_batch(QueueUrl=queue, Entries=entries)

    assert aws_options.endpoint_url
    procs = []
    for n in range(DAEMONS):
        path = tmp_path / f"consumer-{n}.yaml"
        path.write_text(yaml.safe_dump(config(queue, aws_options.endpoint_url, lc, n)))
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "cloudtrail_adapter",
                "run",
                str(path),
                "--state-dir",
                str(tmp_path / f"state-{n}"),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        )
    results = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 180)

    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]
    expected = Counter(str(r["eventID"]) for recs in objects.values() for r in recs)
    accepted = lc.store.event_ids()
    assert set(accepted) == set(expected), "records were lost"
    assert max(accepted.values()) == 1, "a fault-free run delivered a record twice"
    assert await depth(aws_options, queue) == (0, 0)
    assert len(lc.store.by_sensor()) > 1, "the work was not shared"
