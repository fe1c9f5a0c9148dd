"""`make bench`: the floor of our own code path against the daemon, on one generated corpus.

Rows (records/s and uncompressed MB/s, with peak RSS of this process):
- floor: decode + compress exactly as the daemon does, one thread, no I/O;
- daemon: the file source -> pipeline -> USP sink -> the emulator on loopback, acks on.
Issue 5 adds the S3, SQS and naive rows and moves CPU work to a process pool.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from cloudtrail_adapter.config import (
    AwsOptions,
    ClientOptions,
    DeliveryOptions,
    FileSourceOptions,
    Identity,
    SourceConfig,
)
from cloudtrail_adapter.daemon import serve
from cloudtrail_adapter.decode import compress_bundle, decode_object
from cloudtrail_adapter.emulator.corpus import CorpusFile, org_trail, write_directory
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.secret import Secret
from cloudtrail_adapter.telemetry import configure_logging


@dataclass(frozen=True)
class Row:
    name: str
    records: int
    raw_bytes: int
    seconds: float

    def line(self) -> str:
        rate = self.records / self.seconds
        mbs = self.raw_bytes / self.seconds / 1e6
        return f"{self.name:<34}{rate:>14,.0f}{mbs:>10.1f}{self.seconds:>9.2f}"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def floor(files: list[CorpusFile], batch: int) -> Row:
    records = raw = 0
    started = time.perf_counter()
    for f in files:
        decoded = decode_object(f.body)
        for start in range(0, len(decoded.records), batch):
            compress_bundle(decoded.records[start : start + batch])
        records += len(decoded.records)
        raw += decoded.raw_bytes
    return Row("floor (decode+compress, no I/O)", records, raw, time.perf_counter() - started)


async def daemon_file_source(root: Path, state: Path, records: int, raw: int) -> Row:
    async with LimaCharlieEmulator() as lc:
        cfg = SourceConfig(
            index=1,
            kind="file",
            source=FileSourceOptions(path=root, single_load=True),
            aws=AwsOptions(),
            client_options=ClientOptions(
                identity=Identity(str(uuid.uuid4()), Secret(str(uuid.uuid4()))),
                hostname="bench",
                dest_url=lc.usp_url,
            ),
            webhook=None,
            delivery=DeliveryOptions(),
        )
        started = time.perf_counter()
        code = await serve([cfg], state)
        seconds = time.perf_counter() - started
        if code != 0 or len(lc.store.events) != records:
            sys.exit(f"daemon run failed: exit {code}, {len(lc.store.events)}/{records} records")
    return Row("daemon, file source -> USP emulator", records, raw, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("--files-per-day", type=int, default=4)
    parser.add_argument("--max-records", type=int, default=5000)
    args = parser.parse_args()
    configure_logging("warning")
    files = org_trail(
        42,
        accounts=3,
        regions=2,
        days=2,
        files_per_day=args.files_per_day,
        records_per_file=(1, args.max_records),
        digests=False,
    )
    base = floor(files, DeliveryOptions().batch_max_records)
    with tempfile.TemporaryDirectory(prefix="ct-bench-") as tmp:
        root = Path(tmp) / "corpus"
        write_directory(files, root)
        daemon = asyncio.run(
            daemon_file_source(root, Path(tmp) / "state", base.records, base.raw_bytes)
        )
    print(f"corpus: {len(files)} files, {base.records:,} records, {base.raw_bytes / 1e6:.1f} MB")
    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"msgspec {version('msgspec')}, isal {version('isal')}, aiohttp {version('aiohttp')}"
    )
    print(f"{'row':<34}{'records/s':>14}{'MB/s':>10}{'seconds':>9}")
    print(base.line())
    print(daemon.line())
    print(f"daemon / floor: {base.seconds / daemon.seconds:.2f}; peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
