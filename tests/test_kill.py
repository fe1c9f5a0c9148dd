"""kill -9 at any instant loses nothing: at least 20 kills per mode, then every eventID of
the input must have reached LimaCharlie. With de-duplication on (the default), nothing the
daemon recorded as acknowledged before a kill arrives again, and every duplicate was in flight
(accepted, its acknowledgement not yet recorded) at a kill."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.kill_harness import (
    KillPlan,
    KillReport,
    aws_options,
    in_flight_bound,
    run_plan,
)
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator

KILLS = 20


@pytest.mark.parametrize("mode", ["s3", "sqs"])
async def test_kill_9_at_random_moments_loses_nothing(
    mode: str, moto_endpoint: str, lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    plan = KillPlan(mode="s3" if mode == "s3" else "sqs", kills=KILLS, seed=11)
    report = await run_plan(plan, aws_options(moto_endpoint), lc, tmp_path)
    print(f"\n{KillReport.header()}\n{report.line()}")
    context = f"{report}\n{report.log_tail}"
    assert report.kills == KILLS and report.exits[:-1] == [-9] * KILLS, context
    assert report.exits[-1] == 0, context
    assert report.lost == 0, context
    assert report.accepted == report.seeded, context
    assert report.duplicated <= KILLS * in_flight_bound(plan), context
    assert report.resent == 0, context
    assert report.unexplained == 0, context
    assert report.unrecorded == 0, context
    assert report.in_flight <= in_flight_bound(plan), context  # acks are recorded as they come
