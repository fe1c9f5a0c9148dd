"""`make soak`: the kill -9 harness's long form, more data and more kills per mode.

Starts its own moto server and LimaCharlie emulator; prints one row per mode and exits 1 if
any record was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from bench.kill_harness import KillPlan, KillReport, aws_options, run_plan
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from tests.support.stand_in import moto_server


async def soak(endpoint: str, plans: list[KillPlan], workdir: Path) -> list[KillReport]:
    reports = []
    for plan in plans:
        async with LimaCharlieEmulator() as lc:
            reports.append(await run_plan(plan, aws_options(endpoint), lc, workdir))
        if reports[-1].lost:
            print(reports[-1].log_tail, file=sys.stderr)
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(prog="soak")
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--max-records", type=int, default=200)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    plans = [
        KillPlan(
            mode,
            kills=args.kills,
            objects=args.objects,
            records_per_object=(1, args.max_records),
            seed=args.seed,
            finish_timeout=600.0,
        )
        for mode in ("s3", "sqs")
    ]
    with moto_server() as endpoint, tempfile.TemporaryDirectory(prefix="ct-soak-") as tmp:
        reports = asyncio.run(soak(endpoint, plans, Path(tmp)))
    print(KillReport.header())
    for report in reports:
        print(report.line())
    sys.exit(1 if any(r.lost for r in reports) else 0)


if __name__ == "__main__":
    main()
