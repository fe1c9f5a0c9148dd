"""With LimaCharlie stalled for the whole run and 1 GB of compressed CloudTrail waiting in the
bucket, the daemon's peak RSS stays under 300 MB: memory is bounded by configuration.

The daemon runs as its own process with default settings, but for `max_inflated_size`,
raised above the text of its three large objects (1.5 GB each). Its peak is read from the
kernel's high-water mark (VmHWM) once the pipeline holds everything its bounds allow: the
USP window is full and every worker waits, for the decoded-records budget or for room in the
queue to the batcher (the pipeline's `worker_waiting` debug line counts the waiting
workers). No timer, no sampling.
"""

from __future__ import annotations

import random
import zlib
from datetime import UTC, datetime
from pathlib import Path

import orjson
import yaml

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.emulator.corpus import cloudtrail_record
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from tests.support.configs import s3_document
from tests.support.corpus import PREFIX
from tests.support.process import DaemonProcess, all_workers_waiting

LIMIT_MB = 300
PARALLEL_FETCH = 8  # the default, stated so the wait below knows how many workers there are
LARGE = 3  # objects of ~256 MB, streamed
TYPICAL = 180  # objects of ~1.4 MB, decoded whole


def gzip_member(data: bytes) -> bytes:
    return zlib.compress(data, 6, wbits=31)


def bodies() -> dict[str, bytes]:
    """~1 GB of valid multi-member gzip CloudTrail built from one realistic member, cheaply."""
    rng = random.Random(77)
    when = datetime(2026, 11, 24, tzinfo=UTC)
    records = [
        orjson.dumps(cloudtrail_record(rng, account="111122223333", region="us-east-1", when=when))
        for _ in range(1000)
    ]
    member = gzip_member(b",".join(records) + b",")
    head, tail = gzip_member(b'{"Records":['), gzip_member(b'{"eventID":"last"}]}')
    large = head + member * (256 * 1024 * 1024 // len(member)) + tail
    typical = head + member * 5 + tail
    objects = {f"{PREFIX}large-{n}.json.gz": large for n in range(LARGE)}
    return objects | {f"{PREFIX}typical-{n:03}.json.gz": typical for n in range(TYPICAL)}


async def test_peak_rss_stays_bounded_while_limacharlie_is_stalled(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    objects = bodies()
    total = sum(len(body) for body in objects.values())
    assert total >= 10**9, total
    async with aws.client("s3", aws_options) as s3:
        for key, body in objects.items():
            await s3.put_object(Bucket=bucket, Key=key, Body=body)
    del objects
    assert aws_options.endpoint_url
    path = tmp_path / "memory.yaml"
    doc = s3_document(
        aws_options.endpoint_url,
        bucket,
        lc,
        "memory",
        parallel_fetch=PARALLEL_FETCH,
        delivery={"max_inflated_size": 4 << 30},  # the large objects hold 1.5 GB of text each
    )
    path.write_text(yaml.safe_dump(doc))
    lc.usp_faults.hold_acks()  # stalled from the first message to the end

    async with DaemonProcess(path, tmp_path / "state") as daemon:
        await lc.usp.wait_for_messages(lc.usp_faults.window or 1, timeout=120)
        await all_workers_waiting(daemon, PARALLEL_FETCH)
        peak = daemon.peak_rss_mb()
        assert await daemon.stop() == 0, daemon.tail()
    assert not lc.store.events, "nothing may count as delivered while acks are held"
    print(f"\npeak RSS with LimaCharlie stalled: {peak:.0f} MB")
    assert peak < LIMIT_MB, f"peak RSS {peak:.0f} MB"
