"""Real CloudTrail records (tests/data/real_cloudtrail, from public projects' test data; see
its SOURCES.md and LICENSES/) in a bucket laid out as CloudTrail does: a sparse decade of
folders, one account folder that is not 12 digits (a masked record). With the plain S3
document, every record arrives once, JSON-equal to its source, well within a minute."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from tests.support.configs import s3_config
from tests.support.stand_in import put_objects
from tests.support.watch import watch_logs

DATA = Path(__file__).parent / "data" / "real_cloudtrail"
PER_FILE = 4  # records per log file: ~250 files


def real_records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for path in sorted(DATA.glob("*.json")):
        records += json.loads(path.read_text(encoding="utf-8"))["Records"]
    return records


def real_bucket(records: list[dict[str, Any]]) -> dict[str, bytes]:
    """Log files by account, region and hour of the records, as CloudTrail delivers them."""
    rng = random.Random(7)
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        when = datetime.strptime(record["eventTime"], "%Y-%m-%dT%H:%M:%SZ")
        groups[(record["recipientAccountId"], record["awsRegion"], f"{when:%Y%m%dT%H}")].append(
            record
        )
    files: dict[str, bytes] = {}
    for (account, region, hour), members in sorted(groups.items()):
        folder = f"AWSLogs/{account}/CloudTrail/{region}/{hour[:4]}/{hour[4:6]}/{hour[6:8]}/"
        for at in range(0, len(members), PER_FILE):
            unique = "".join(rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", k=16))
            name = f"{account}_CloudTrail_{region}_{hour}{at % 60:02d}Z_{unique}.json.gz"
            body = json.dumps({"Records": members[at : at + PER_FILE]}, ensure_ascii=False)
            files[folder + name] = gzip.compress(body.encode())
    return files


async def test_real_records_in_a_real_layout_arrive_once_and_intact(
    aws_options: AwsOptions, bucket: str, lc: LimaCharlieEmulator, state_dir: Path
) -> None:
    records = real_records()
    files = real_bucket(records)
    assert len(records) >= 900 and len(files) >= 200
    assert any(k.split("/")[1] == "700***" for k in files)  # off the layout
    await put_objects(aws_options, bucket, files)

    with watch_logs() as logs:
        assert (
            await asyncio.wait_for(serve([s3_config(aws_options, bucket, lc)], state_dir), 60) == 0
        )

    got: dict[str, list[Any]] = defaultdict(list)
    for event in lc.store.events:
        record = event.json()
        got[str(record["eventID"])].append(record)
    assert set(got) == {r["eventID"] for r in records}
    assert all(len(copies) == 1 for copies in got.values())
    assert all(got[r["eventID"]][0] == r for r in records)  # JSON-equal
    (done,) = logs.named("source_pass_done")
    assert done["offered"] == len(files) and done["off_layout"] >= 1
    assert done["list_calls"] < 200
