"""`make demo`: the real daemon against a seeded local S3 and the LimaCharlie emulator.

It seeds an organisation-trail bucket (several accounts, regions and days, digests among
the files), writes a config in LimaCharlie's seed format, runs `cloudtrail-adapter run` as a
child process to completion, and prints what was delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import yaml

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import AwsOptions
from cloudtrail_adapter.emulator.corpus import CorpusFile, org_trail
from cloudtrail_adapter.emulator.local_aws import ACCESS_KEY, REGION, SECRET_KEY, moto_server
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.secret import Secret

BUCKET = "acme-org-cloudtrail"
RUN_TIMEOUT = 600.0


async def seed_bucket(endpoint: str, bucket: str, files: list[CorpusFile]) -> None:
    options = AwsOptions(ACCESS_KEY, Secret(SECRET_KEY), REGION, endpoint)
    async with aws.client("s3", options) as s3:
        await s3.create_bucket(Bucket=bucket)
        for f in files:
            await s3.put_object(Bucket=bucket, Key=f.key, Body=f.body)


def demo_config(endpoint: str, lc: LimaCharlieEmulator) -> dict[str, object]:
    """LimaCharlie's seed document, plus the two extension keys that point it at loopback."""
    return {
        "s3": {
            "client_options": {
                "hostname": "cloudtrail-demo",
                "identity": {"installation_key": str(uuid.uuid4()), "oid": str(uuid.uuid4())},
                "platform": "aws",
                "sensor_seed_key": "cloudtrail-demo",
                "dest_url": lc.usp_url,
            },
            "bucket_name": BUCKET,
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "region": REGION,
            "endpoint_url": endpoint,
            "single_load": True,
        }
    }


async def run_daemon(config: Path, state_dir: Path, log_file: Path) -> tuple[int, float]:
    started = time.monotonic()
    with log_file.open("wb") as logs:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cloudtrail_adapter",
            "run",
            str(config),
            "--state-dir",
            str(state_dir),
            stdout=logs,
            stderr=logs,
        )
        try:
            code = await asyncio.wait_for(proc.wait(), RUN_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            code = -1
    return code, time.monotonic() - started


def log_entries(log_file: Path) -> list[dict[str, Any]]:
    entries = []
    for line in log_file.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            entry = orjson.loads(line)
            if isinstance(entry, dict):
                entries.append(entry)
    return entries


def records_sent(entries: list[dict[str, Any]]) -> int:
    """What the daemon itself says it sent, from its `source_finished` log lines."""
    return sum(int(e.get("records", 0)) for e in entries if e.get("event") == "source_finished")


def delivery_seconds(entries: list[dict[str, Any]], lc: LimaCharlieEmulator) -> float | None:
    """From the daemon's first look at the bucket to LimaCharlie's last acknowledgement:
    the delivery, without the process start-up."""
    started = [e["timestamp"] for e in entries if e.get("event") == "layout_discovered"]
    if not started or not lc.store.events:
        return None
    wall = datetime.fromisoformat(str(started[0]).replace("Z", "+00:00")).timestamp()
    listed_at = wall - (time.time() - time.monotonic())  # on the store's monotonic clock
    return max(e.at for e in lc.store.events) - listed_at


def report(
    files: list[CorpusFile], lc: LimaCharlieEmulator, code: int, seconds: float, log_file: Path
) -> bool:
    entries = log_entries(log_file)
    sent, delivery = records_sent(entries), delivery_seconds(entries, lc)
    logs = [f for f in files if f.kind == "log"]
    seeded = Counter(eid for f in logs for eid in f.event_ids)
    accepted = lc.store.event_ids()
    per_account: Counter[str] = Counter(
        str(e.json().get("recipientAccountId")) for e in lc.store.events
    )
    seeded_per_account: Counter[str] = Counter()
    for f in logs:
        seeded_per_account[f.key.split("/CloudTrail/")[0].rsplit("/", 1)[-1]] += len(f.event_ids)
    ok = code == 0 and accepted == seeded
    print()
    print(f"{'account':<16}{'seeded':>10}{'accepted':>10}")
    for account in sorted(seeded_per_account):
        print(f"{account:<16}{seeded_per_account[account]:>10}{per_account[account]:>10}")
    print("-" * 36)
    print(f"{'total':<16}{sum(seeded.values()):>10}{len(lc.store.events):>10}")
    print()
    print(f"files in bucket    {len(files)} ({len(logs)} logs, {len(files) - len(logs)} digests)")
    print(f"records sent       {sent} (the daemon's own count)")
    print(f"daemon exit code   {code}")
    print(f"wall time          {seconds:.1f} s, process start-up and exit included")
    if delivery:
        rate = len(lc.store.events) / delivery
        took = f"{delivery:.1f} s from the first listing to the last ack"
        print(f"delivery           {took}, {rate:,.0f} records/s")
    dupes = sum(n - 1 for n in accepted.values() if n > 1)
    missing = sum((seeded - accepted).values())
    verdict = "every seeded eventID accepted exactly once" if ok else "MISMATCH"
    print(f"result             {verdict} (missing {missing}, duplicated {dupes})")
    return ok


async def run_demo() -> int:
    files = org_trail(7, accounts=3, regions=2, days=2, files_per_day=3, records_per_file=(1, 600))
    with moto_server() as endpoint, tempfile.TemporaryDirectory(prefix="ct-demo-") as tmp:
        work = Path(tmp)
        print(f"seeding s3://{BUCKET} on {endpoint} with {len(files)} CloudTrail files ...")
        await seed_bucket(endpoint, BUCKET, files)
        async with LimaCharlieEmulator() as lc:
            config = work / "s3.yaml"
            config.write_text(yaml.safe_dump(demo_config(endpoint, lc), sort_keys=False))
            print(
                f"LimaCharlie emulator on {lc.base_url}; running: cloudtrail-adapter run {config}"
            )
            code, seconds = await run_daemon(config, work / "state", work / "daemon.log")
            ok = report(files, lc, code, seconds, work / "daemon.log")
            if not ok:
                print("\ndaemon log (last 40 lines):")
                print("\n".join((work / "daemon.log").read_text().splitlines()[-40:]))
    return 0 if ok else 1
